"""Applying a style: ms per frame, MLX against the same network in PyTorch, in one run.

    python benchmarks/bench_apply.py [--torch] [--sizes 512x512,1920x1080,3840x2160] [--batches 1,8]

Random weights (speed does not depend on them). Prints one JSON line per configuration.
MLX runs the network alone (--margin 0, as `engine apply` by default), the same work as the
PyTorch peer; --margin 16 times `engine apply --margin 16` (16 reflected pixels around each
frame, cropped after).
"""

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import engine  # noqa: F401,E402,I001 - first: its BLAS loads before mlx.core
import mlx.core as mx


sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine.nets.transformer import NETWORKS, TransformerNet  # noqa: E402
from engine.stylize import Stylizer  # noqa: E402


def timed(run, sync, repeats):
    run()
    sync()
    run()
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    sync()
    return (time.perf_counter() - start) / repeats


def bench_mlx(width, height, batch, dtype, repeats, config, margin=0):
    stylizer = Stylizer(TransformerNet(config), dtype=dtype, margin=margin)
    x = mx.random.uniform(shape=(batch, height, width, 3))
    mx.eval(x)
    started = time.perf_counter()
    stylizer(x)
    warmup = time.perf_counter() - started
    started = time.perf_counter()
    stylizer(x)  # a shape's second call compiles its pass (the first runs op by op)
    compiling = time.perf_counter() - started
    seconds = timed(lambda: stylizer(x), lambda: None, repeats)
    return {"framework": f"mlx {dtype}", "ms_per_frame": seconds * 1000 / batch,
            "first_call_s": warmup, "second_call_s": compiling, "cuda_graphs": os.environ.get("MLX_USE_CUDA_GRAPHS"),
            "margin": margin}


def bench_torch(width, height, batch, repeats, config, results):
    import torch
    from torch_peers import torch_net

    # static shapes, a fresh specialization per size (PyTorch's best case): automatic dynamic
    # shapes after the first size, or the default limit of 8 recompilations, would fall back to
    # slower kernels or to eager
    torch._dynamo.config.cache_size_limit = 64
    base = torch_net(config).cuda().eval()
    x32 = torch.rand(batch, 3, height, width, device="cuda")
    for dtype in (torch.float16,):
        for channels_last in (False, True):
            for compiled in (False, True):
                net = base.to(dtype)
                x = x32.to(dtype)
                if channels_last:
                    net = net.to(memory_format=torch.channels_last)
                    x = x.contiguous(memory_format=torch.channels_last)
                run_net = torch.compile(net, dynamic=False) if compiled else net
                started = time.perf_counter()
                try:
                    with torch.inference_mode():
                        run_net(x)
                        torch.cuda.synchronize()
                        warmup = time.perf_counter() - started
                        seconds = timed(lambda: run_net(x), torch.cuda.synchronize, repeats)
                except Exception as error:  # report, keep going
                    results.append({"framework": "torch", "error": repr(error)[:200]})
                    continue
                results.append({"framework": "torch" + (".compile" if compiled else "")
                                + f" {str(dtype).split('.')[-1]}"
                                + (" channels_last" if channels_last else ""),
                                "ms_per_frame": seconds * 1000 / batch, "first_call_s": warmup})


def release_torch():
    """Hand PyTorch's cached blocks back to the device: MLX measures the next configuration in
    this process (3840x2160 at batch 8 ran out of memory beside them)."""
    import torch

    torch._dynamo.reset()
    torch.cuda.empty_cache()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="512x512,1920x1080,3840x2160")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--net", choices=("full", "fast"), default="full")
    parser.add_argument("--torch", action="store_true")
    parser.add_argument("--dtypes", default="float16")
    parser.add_argument("--dilations", default="",
                        help="dilated blocks added to the full network, e.g. 2,4 (MLX only)")
    parser.add_argument("--margin", type=int, default=0,
                        help="reflected pixels around each frame (engine apply --margin)")
    args = parser.parse_args()
    config = replace(NETWORKS[args.net], dilations=tuple(
        int(d) for d in args.dilations.split(",") if d))
    for size in args.sizes.split(","):
        width, height = map(int, size.split("x"))
        for batch in map(int, args.batches.split(",")):
            results = [bench_mlx(width, height, batch, getattr(mx, d), args.repeats, config,
                                 args.margin) for d in args.dtypes.split(",")]
            if args.torch and not config.dilations:
                mx.clear_cache()  # MLX's cached buffers left PyTorch short at 3840x2160 batch 8
                bench_torch(width, height, batch, args.repeats, config, results)
                release_torch()
            for result in results:
                print(json.dumps({"size": size, "batch": batch, "net": args.net,
                                  "dilations": list(config.dilations), **result}),
                      flush=True)
            torch_best = min((r["ms_per_frame"] for r in results
                              if r["framework"].startswith("torch") and "ms_per_frame" in r),
                             default=None)
            if torch_best:
                print(json.dumps({"size": size, "batch": batch,
                                  "mlx_over_best_torch": results[0]["ms_per_frame"] / torch_best}),
                      flush=True)


if __name__ == "__main__":
    main()

"""engine/kernels.py against an earlier version of it, in one process, alternating: each kernel's
ms per call and effective GB/s on the network's 1080p batch-8 activations, then the fused network
(fused_forward, random full network, float16) ms per frame at several sizes. For the GPU machine.

    git show c9a827c:engine/kernels.py > /tmp/kernels_old.py
    python benchmarks/ab_kernels.py /tmp/kernels_old.py

The earlier file's kernels are renamed (engine_ -> engineold_) so MLX compiles both.
"""

import argparse  # noqa: I001 - engine before mlx.core, below
import importlib.util
import json
import sys
import time
from functools import partial
from pathlib import Path

import engine  # noqa: F401 - first: its BLAS loads before mlx.core
import mlx.core as mx

from engine import fused, transformer
from engine import kernels as new
from engine.transformer import FULL, TransformerNet


def load_old(path):
    source = Path(path).read_text().replace('name="engine_" + name', 'name="engineold_" + name')
    spec = importlib.util.spec_from_loader("engine.kernels_old", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "engine"
    sys.modules["engine.kernels_old"] = module
    exec(compile(source, path, "exec"), module.__dict__)  # noqa: S102 - a file the user names
    return module


def ms(fn, *args, repeats=30):
    for _ in range(3):
        mx.eval(fn(*args))
    start = time.perf_counter()
    for _ in range(repeats):
        mx.eval(fn(*args))
    return (time.perf_counter() - start) * 1000 / repeats


def use(module):
    fused.pad_affine = module.pad_affine
    transformer.half_moments = module.half_moments


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("old", help="an earlier engine/kernels.py")
    args = parser.parse_args()
    old = load_old(args.old)
    versions = (("old", old), ("new", new), ("old2", old), ("new2", new))
    for shape in ((8, 1080, 1920, 32), (8, 540, 960, 64), (8, 270, 480, 128), (1, 128, 128, 32),
                  (3, 17, 9, 64)):
        y = (mx.random.normal(shape) * 3 + 1).astype(mx.float16)
        scale = mx.random.uniform(0.5, 2, (shape[0], shape[3]))
        shift = mx.random.normal((shape[0], shape[3]))
        moments = new.half_moments(y), new.reference_moments(y)
        padded = (new.pad_affine(y, scale, shift, 1, 2, True),
                  new.reference_pad_affine(y, scale, shift, 1, 2, True))
        row = {"shape": shape,
               "moments_err": max(float(mx.abs(a - b).max()) for a, b in zip(*moments)),
               "pad_affine_err": float(mx.abs(padded[0].astype(mx.float32)
                                              - padded[1].astype(mx.float32)).max())}
        if shape[0] == 8:
            gb = y.nbytes / 1e9
            for name, module in versions:
                t = ms(module.half_moments, y)
                row[f"moments_{name}_ms"], row[f"moments_{name}_GBps"] = round(t, 4), round(gb / t * 1e3)
                t = ms(lambda y, m=module, a=scale, b=shift: m.pad_affine(y, a, b, 1, 1, True), y)
                row[f"pad1_{name}_ms"], row[f"pad1_{name}_GBps"] = round(t, 4), round(2 * gb / t * 1e3)
        print(json.dumps(row), flush=True)
    for batch, height, width in ((8, 1080, 1920), (1, 1080, 1920), (1, 512, 512), (8, 512, 512)):
        net = TransformerNet(FULL)
        net.set_dtype(mx.float16)
        x = mx.random.uniform(shape=(batch, height, width, 3)).astype(mx.float16)
        row, outs = {"size": f"{width}x{height}", "batch": batch}, {}
        for name, module in versions + (("old3", old), ("new3", new)):
            use(module)
            run = mx.compile(partial(fused.fused_forward, net))
            outs[name[:3]] = run(x)
            row[f"{name}_ms_per_frame"] = round(ms(run, x, repeats=20 if batch == 8 else 60) / batch, 4)
        row["max_diff_new_old"] = float(mx.abs(outs["new"].astype(mx.float32)
                                               - outs["old"].astype(mx.float32)).max())
        print(json.dumps(row), flush=True)
        use(new)


if __name__ == "__main__":
    main()

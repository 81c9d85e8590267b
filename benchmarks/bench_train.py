"""Training a style: ms per step (batch 8, 256x256, VGG16 losses, Adam), MLX against PyTorch.

    python benchmarks/bench_train.py [--torch] [--steps 30] [--vgg-weights W]
        [--precisions float32,bfloat16] [--forms low,plain] [--loops sync,async]

--forms: the style network's full-resolution layers on a GPU in their low-resolution forms
(engine.nets.transformer.LOW_RES_FORMS, the default) or plain.
"""

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import engine  # noqa: F401,I001 - first: its BLAS loads before mlx.core
import mlx.core as mx
import mlx.optimizers as optim
import numpy as np


sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine.io.vgg_weights import _read_safetensors, load_vgg
from engine.nets import transformer  # noqa: E402
from engine.nets.transformer import NETWORKS, TransformerNet  # noqa: E402
from engine.nets.vgg import VGG16  # noqa: E402
from engine.optimize import style_target  # noqa: E402
from engine.training.settings import TrainSettings  # noqa: E402
from engine.training.style import make_train_step


def bench_mlx(vgg, settings, steps, batch, loop="sync"):
    """ms per step. loop "sync": each step evaluated before the next is built; "async": each
    step queued with mx.async_eval, the loss of the step before read after it (as the training
    loop runs them), so the host builds and launches step t+1 while the GPU runs step t.
    host_ms: the time to build and queue a step."""
    grams = style_target(vgg, [mx.random.uniform(shape=(1, 256, 256, 3))], np.ones(1),
                         settings.style_layers, 256, 1.0)
    net = TransformerNet(settings.config)
    optimizer = optim.Adam(learning_rate=1e-3)
    step, state = make_train_step(vgg, net, optimizer, grams, settings)
    inputs = [mx.random.uniform(shape=(batch, settings.size, settings.size, 3)) for _ in range(2)]
    mx.eval(inputs)
    started = time.perf_counter()
    for _ in range(3):
        loss, _ = step(inputs[0])
        mx.eval(loss, state)
    warmup = time.perf_counter() - started
    host = 0.0
    started = time.perf_counter()
    previous = None
    for i in range(steps):
        queued = time.perf_counter()
        loss, _ = step(inputs[i % 2])
        if loop == "sync":
            mx.eval(loss, state)
            continue
        mx.async_eval(loss, state)
        host += time.perf_counter() - queued
        if previous is not None:
            previous.item()
        previous = loss
    mx.eval(loss, state)
    elapsed = time.perf_counter() - started
    label = {"float32": "fp32", "bfloat16": "bf16 mixed"}[settings.precision]
    forms = "low-res forms" if transformer.LOW_RES_FORMS else "plain forms"
    result = {"framework": f"mlx {label} compiled, {forms}, {loop} loop",
              "ms_per_step": elapsed * 1000 / steps, "warmup_s": warmup}
    if loop == "async":
        result["host_ms"] = host * 1000 / steps
    return result


def bench_torch(weights, settings, steps, batch, results):
    import torch
    import torch.nn.functional as F
    from torch_peers import torch_net, torch_vgg16

    params, _ = _read_safetensors(weights)
    vgg = torch_vgg16({k: v.astype(mx.float32) for k, v in params.items()},
                      {settings.content_layer, *settings.style_layers})

    def gram(f):
        b, c, h, w = f.shape
        f = f.reshape(b, c, h * w)
        return f @ f.transpose(1, 2) / (c * h * w)

    with torch.no_grad():
        targets = {k: gram(v) for k, v in vgg(torch.rand(1, 3, 256, 256, device="cuda")).items()}

    for label, dtype, compiled, channels_last in (("fp32", None, False, False),
                                                  ("fp32", None, True, True),
                                                  ("bf16 autocast", torch.bfloat16, True, True)):
        net = torch_net(settings.config).cuda()
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)

        def step(x):
            with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
                y = net(x)
                fy, fx = vgg(y), vgg(x)
                c = F.mse_loss(fy[settings.content_layer], fx[settings.content_layer].detach())
                s = sum(F.mse_loss(gram(fy[k].float()), targets[k]) for k in settings.style_layers)
                tv = ((y[:, :, 1:] - y[:, :, :-1]) ** 2).mean() + (
                    (y[:, :, :, 1:] - y[:, :, :, :-1]) ** 2).mean()
                loss = c + settings.style_weight * s + settings.tv_weight * tv
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss

        run = torch.compile(step) if compiled else step
        x = torch.rand(batch, 3, settings.size, settings.size, device="cuda")
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        started = time.perf_counter()
        for _ in range(3):
            run(x)
        torch.cuda.synchronize()
        warmup = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(steps):
            run(x)
        torch.cuda.synchronize()
        results.append({"framework": f"torch {label}" + (" compiled" if compiled else "")
                        + (" channels_last" if channels_last else ""),
                        "ms_per_step": (time.perf_counter() - started) * 1000 / steps,
                        "warmup_s": warmup})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--vgg-weights", default=None)
    parser.add_argument("--torch", action="store_true")
    parser.add_argument("--precisions", default="float32",
                        help="MLX training precisions to time, e.g. float32,bfloat16")
    parser.add_argument("--forms", default="low",
                        help="low, plain or both (low,plain): transformer.LOW_RES_FORMS")
    parser.add_argument("--loops", default="async",
                        help="sync, async or both (sync,async): see bench_mlx")
    parser.add_argument("--net", choices=("full", "fast"), default="full")
    parser.add_argument("--dilations", default="",
                        help="dilated blocks added to the full network, e.g. 2,4 (MLX only)")
    args = parser.parse_args()
    preset = NETWORKS[args.net]
    dilations = tuple(int(d) for d in args.dilations.split(",") if d)
    settings = TrainSettings(size=args.size, width=preset.width, res_blocks=preset.res_blocks,
                             arch=preset.arch, dilations=dilations)
    vgg = load_vgg(path=args.vgg_weights)
    def show(result):
        print(json.dumps({"batch": args.batch, "size": args.size, "net": args.net,
                          "dilations": list(dilations), **result}),
              flush=True)

    for forms in args.forms.split(","):
        transformer.LOW_RES_FORMS = {"low": True, "plain": False}[forms]
        for precision in args.precisions.split(","):
            for loop in args.loops.split(","):
                show(bench_mlx(vgg, replace(settings, precision=precision), args.steps,
                               args.batch, loop))
    if args.torch and not dilations:
        from engine.io.vgg_weights import resolve_weights

        class Printer(list):
            def append(self, result):
                show(result)

        bench_torch(resolve_weights(VGG16, args.vgg_weights), settings, args.steps, args.batch,
                    Printer())


if __name__ == "__main__":
    main()

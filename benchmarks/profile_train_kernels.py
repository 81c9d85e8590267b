"""The GPU kernels of one compiled training step: how many, how long, which (H100).

    python benchmarks/profile_train_kernels.py [--precision bfloat16] [--batch 8] [--size 256]
        [--steps 5] [--top 45]

MLX has no kernel profiler of its own; CUPTI sees every kernel launched in the process, so
PyTorch's profiler (started first, on the same GPU) records MLX's kernels too. Prints the host's
time to build a step, the step's time, the kernels per step, the GPU time per step (the sum of
the kernels' durations: what the step would take were the host never behind) and the kernels
that take it, summed by name. Random VGG16 weights: the kernels do not depend on their values.
"""

import argparse
import time
from collections import defaultdict

import engine  # noqa: F401 - before mlx.core: its BLAS, its kernel cache folder
import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from engine.nets.transformer import TransformerNet
from engine.nets.vgg import VGG, VGG16
from engine.optimize import style_target
from engine.training.settings import TrainSettings
from engine.training.style import make_train_step


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--precision", default="bfloat16")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=45)
    args = parser.parse_args()
    torch.zeros(1, device="cuda")  # CUDA (and CUPTI) up before MLX's first kernel

    vgg = VGG(VGG16)
    mx.eval(vgg.parameters())
    settings = TrainSettings(precision=args.precision, batch=args.batch, size=args.size)
    grams = style_target(vgg, [mx.random.uniform(shape=(1, 256, 256, 3))], np.ones(1),
                         settings.style_layers, 256, 1.0)
    net = TransformerNet(settings.config)
    step, state = make_train_step(vgg, net, optim.Adam(learning_rate=1e-3), grams, settings)
    x = mx.random.uniform(shape=(args.batch, args.size, args.size, 3))
    mx.eval(x)
    for _ in range(5):  # compiled, warm
        loss, _ = step(x)
        mx.eval(loss, state)

    started = time.perf_counter()
    for _ in range(args.steps):
        loss, _ = step(x)
    built = time.perf_counter()
    mx.eval(loss, state)
    done = time.perf_counter()
    print(f"build {1000 * (built - started) / args.steps:.2f} ms/step, "
          f"eval {1000 * (done - built) / args.steps:.2f} ms/step")

    with profile(activities=[ProfilerActivity.CUDA]) as trace:
        for _ in range(args.steps):
            loss, _ = step(x)
            mx.eval(loss, state)
    kernels = [e for e in trace.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy = sum(e.device_time for e in kernels) / args.steps / 1000
    print(f"kernels per step {len(kernels) / args.steps:.0f}, GPU time per step {busy:.2f} ms")
    by_name = defaultdict(lambda: [0, 0.0])
    for e in kernels:
        by_name[e.name[:90]][0] += 1
        by_name[e.name[:90]][1] += e.device_time
    ranked = sorted(by_name.items(), key=lambda item: -item[1][1])
    for name, (count, us) in ranked[:args.top]:
        print(f"{us / args.steps / 1000:7.3f} ms {count / args.steps:6.1f}x  {name}")
    print(f"{len(by_name)} distinct kernels")


if __name__ == "__main__":
    main()

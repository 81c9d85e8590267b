"""VGG16 on the CPU: its matrix-product convolutions (the engine's CPU path, with their own input
gradient) against mx.conv2d with autodiff's gradient, in the same run, alternating.

Three tasks, each as the engine runs it: VGG16 to relu4_1 forward and back (Gram losses on
relu1_1..relu4_1) at batch 2, 192 px; one compiled training step of the CPU recipe
(`engine train-style` on a CPU: the fast layout, width 64, batch 2, 192 px crops); one L-BFGS
iteration of the reference optimizer at 256x256.

    python benchmarks/bench_vgg_cpu.py [--repeats 7] > benchmarks/results/vgg-cpu.jsonl
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import engine  # noqa: F401,I001 - first: its BLAS loads before mlx.core
import mlx.core as mx
import mlx.optimizers as optim
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import alternating, emit  # noqa: E402

from engine.io.vgg_weights import load_vgg  # noqa: E402
from engine.losses import gram  # noqa: E402
from engine.nets.config import NetConfig  # noqa: E402
from engine.nets.transformer import TransformerNet  # noqa: E402
from engine.nets.vgg import VGG  # noqa: E402
from engine.optimize import OptimizeSettings, _run_lbfgs, make_objective, style_target  # noqa: E402
from engine.training.settings import recipe_settings  # noqa: E402
from engine.training.style import make_train_step  # noqa: E402

STYLE = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")


class Conv2dVGG(VGG):
    """The same VGG through mx.conv2d (and autodiff's gradient)."""

    def __call__(self, x, taps, conv=None):
        return super().__call__(x, taps, conv=conv or (lambda layer, x: layer(x)))


def as_conv2d(vgg: VGG) -> VGG:
    other = Conv2dVGG(vgg.spec)
    other.update(vgg.parameters())
    return other


def forward_back(vgg: VGG):
    x = mx.random.uniform(shape=(2, 192, 192, 3))

    def loss(x):
        features = vgg(x, STYLE)
        return sum((gram(features[tap]) ** 2).sum() for tap in STYLE)

    grad = mx.grad(loss)
    return lambda: mx.eval(grad(x))


def train_step(vgg: VGG):
    settings = recipe_settings(cpu=True)
    mx.random.seed(0)
    net = TransformerNet(NetConfig(width=64, res_blocks=5, arch="shuffle"))
    painting = mx.random.uniform(shape=(1, 256, 256, 3))
    grams = style_target(vgg, [painting], np.ones(1), settings.style_layers, 256, 1.0)
    step, state = make_train_step(vgg, net, optim.Adam(learning_rate=1e-3), grams, settings)
    batch = mx.random.uniform(shape=(settings.batch, settings.size, settings.size, 3))

    def run():
        loss, _ = step(batch)
        mx.eval(loss, state)

    return run


def optimizer_iteration(vgg: VGG):
    settings = OptimizeSettings()
    photo = mx.random.uniform(shape=(1, 256, 256, 3))
    painting = mx.random.uniform(shape=(1, 256, 256, 3))
    grams = style_target(vgg, [painting], np.ones(1), settings.style_layers, 256, 1.0)
    objective = make_objective(vgg, photo, grams, settings)
    start = np.array(photo)
    return lambda: _run_lbfgs(objective, start, 1, settings.history, lambda *_: None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    vgg = load_vgg()
    plain = as_conv2d(vgg)
    for task, make in (("VGG16 to relu4_1 forward and back, batch 2, 192 px", forward_back),
                       ("CPU recipe training step, batch 2, 192 px", train_step),
                       ("optimizer iteration, 256x256", optimizer_iteration)):
        times = alternating({"matrix products": make(vgg), "mx.conv2d": make(plain)},
                            repeats=args.repeats)
        emit({"task": task, **{f"{name} s": t["median_s"] for name, t in times.items()},
              "speedup": round(times["mx.conv2d"]["median_s"]
                               / times["matrix products"]["median_s"], 2)})


if __name__ == "__main__":
    main()

"""The first steps of a run that goes on from a trained style (`--from`) with a fresh Adam state:
held-out loss after each of the first steps, for Adam as MLX defines it (no bias correction),
with bias correction, and with a linear warm-up instead.

    python benchmarks/adam_from_steps.py scream --steps 20 --vgg-weights W \\
        --paintings out/paintings --content ../shared/data/content --heldout DIR

--paintings is the folder of the very painting files the styles were trained on (for the shipped
styles, the copies `training_paintings.py` makes); another file is refused, as in the quality
report.

The held-out loss is the style's own training objective on four fixed 256 px crops of photos
from DIR (photos no style trained on). One JSON line per variant.
"""

import argparse
import json
from pathlib import Path

import engine  # noqa: F401 - first: its BLAS loads before mlx.core  # isort: skip
import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
from quality_report import check_painting, own_objective

from engine.io.images import find_images, load_image
from engine.io.style_files import load_style
from engine.io.vgg_weights import load_vgg
from engine.optimize import style_target
from engine.training.data import ContentSet
from engine.training.settings import TrainSettings
from engine.training.style import make_train_step, training_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("style", help="a style file stem in --styles")
    parser.add_argument("--styles", type=Path, default=Path("weights"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--paintings", type=Path, required=True,
                        help="the folder of the painting files the styles were trained on")
    parser.add_argument("--content", type=Path, default=Path("../shared/data/content"))
    parser.add_argument("--heldout", type=Path, required=True)
    parser.add_argument("--vgg-weights", type=Path)
    args = parser.parse_args()

    vgg = load_vgg(path=args.vgg_weights)
    style_file = args.styles / f"{args.style}.safetensors"
    _, info = load_style(style_file)
    t = info.training
    settings = TrainSettings(size=256, batch=2, **own_objective(t))
    check_painting(args.paintings / t["style_image"], info.style_sha256, style_file)
    painting = load_image(args.paintings / t["style_image"]).rgb
    grams = style_target(vgg, [painting], np.ones(1), settings.style_layers, t["style_size"], 1.0)
    heldout = mx.array(ContentSet(find_images(args.heldout), 256).sample(1, 0, 0, 4))
    train = ContentSet(find_images(args.content)[:200], 256)

    def heldout_loss(net) -> float:
        return float(training_loss(vgg, grams, settings, heldout, net(heldout))[0])

    rate = args.learning_rate
    variants = {
        "no bias correction (MLX's default)": lambda: optim.Adam(learning_rate=rate),
        "bias correction": lambda: optim.Adam(learning_rate=rate, bias_correction=True),
        "linear warm-up": lambda: optim.Adam(
            learning_rate=optim.linear_schedule(rate / 100, rate, args.steps)),
    }
    shown = {1, 2, 3, 5, 10, 15, 20, 30, 40, args.steps}
    for label, make in variants.items():
        net, _ = load_style(style_file)
        optimizer = make()
        step, state = make_train_step(vgg, net, optimizer, grams, settings)
        curve = {0: heldout_loss(net)}
        for i in range(1, args.steps + 1):
            loss, _ = step(mx.array(train.sample(0, 0, i, settings.batch)))
            mx.eval(loss, state)
            if i in shown:
                curve[i] = heldout_loss(net)
        print(json.dumps({"style": args.style, "variant": label, "learning_rate": rate,
                          "heldout_loss": {k: round(v, 3) for k, v in curve.items()}}),
              flush=True)


if __name__ == "__main__":
    main()

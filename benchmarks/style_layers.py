"""Where a feed-forward style falls short of the optimizer: its style distance layer by layer.

For one style and photo (center-cropped and resized to SIZE, as in `quality_report.py`), the
squared Gram distance to the painting on each of the style's training layers, for the photo, the
feed-forward output and the reference optimizer on the style's own training objective
(`quality_report.py`'s `matched`, 300 L-BFGS iterations). The layers' sum is
`quality_report.py`'s `style_own` times the layer count.

    python benchmarks/style_layers.py --style weights/starry_night.safetensors \\
        --paintings out/paintings --photo set14_pepper.jpg --out results/layers.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from quality_report import check_painting, matched_settings, own_objective, square  # engine first

from engine.io.images import load_image
from engine.io.style_files import read_info
from engine.io.vgg_weights import load_vgg
from engine.losses import style_loss
from engine.optimize import optimize, style_target
from engine.stylize import Stylizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--style", type=Path, required=True)
    parser.add_argument("--paintings", type=Path, required=True,
                        help="the folder of the painting files the styles were trained on")
    parser.add_argument("--photo", type=Path, required=True)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--vgg-weights", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    info = read_info(args.style)
    own = own_objective(info.training)
    painting_file = args.paintings / info.training["style_image"]
    check_painting(painting_file, info.style_sha256, args.style)
    vgg = load_vgg(path=args.vgg_weights)
    painting = load_image(painting_file).rgb
    photo = square(args.photo, args.size)
    layers = own["style_layers"]
    targets = style_target(vgg, [painting], np.ones(1), layers, args.size, 1.0)

    def distances(image) -> dict[str, float]:
        features = vgg(image, layers)
        return {layer: float(style_loss(features, {layer: targets[layer]})) for layer in layers}

    started = time.perf_counter()
    matched = optimize(vgg, photo, [painting], matched_settings(own, args.iterations)).image
    row = {"style": args.style.stem, "photo": args.photo.stem, "size": args.size,
           "iterations": args.iterations, "optimizer_seconds": time.perf_counter() - started,
           "photo_layers": distances(photo),
           "feed_forward_layers": distances(Stylizer.from_file(args.style)(photo)),
           "matched_layers": distances(matched)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as out:
        out.write(json.dumps(row) + "\n")
    for layer in layers:
        ff, best = row["feed_forward_layers"][layer], row["matched_layers"][layer]
        print(f"{layer}: feed-forward {ff:.3g}  matched {best:.3g}  ratio {ff / best:.2f}")


if __name__ == "__main__":
    main()

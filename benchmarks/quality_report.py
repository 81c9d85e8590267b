"""Quality report for feed-forward styles: VGG style and content distances on unseen photos.

For each style and photo (center-cropped and resized to SIZE x SIZE), three images are scored:
the unstylized photo, the feed-forward output (`engine apply`) and the reference optimizer's
output (`engine optimize`, default settings) for the same pair. Style distance: the mean over
layers of the squared Gram difference to the painting (resized to SIZE on its longest side), on
the optimizer's layers relu1_1..relu5_1 (`style`) and on the training layers (`style_train`).
Content distance: mean squared relu4_2 (`content`) and relu2_2 (`content_train`) difference.

    python benchmarks/quality_report.py --styles weights --paintings ../shared/data/styles \
        --photos set14_*.jpg --out benchmarks/results/quality.jsonl --sheets out/
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import engine  # noqa: F401,E402,I001 - first: its BLAS loads before mlx.core
import mlx.core as mx
import numpy as np
from PIL import Image

from engine.image import load_image, save_image
from engine.losses import content_loss, style_loss
from engine.optimize import OptimizeSettings, optimize, style_target
from engine.styles import read_info
from engine.stylize import Stylizer
from engine.vgg import load_vgg

OPT_STYLE = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
TRAIN_STYLE = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")


def square(path: Path, size: int) -> mx.array:
    image = Image.open(path).convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size),
                                                                    Image.Resampling.LANCZOS)
    return mx.array(np.asarray(image, dtype=np.float32)[None] / 255.0)


def scores(vgg, image, photo, grams_opt, grams_train) -> dict[str, float]:
    layers = tuple(dict.fromkeys(OPT_STYLE + TRAIN_STYLE + ("relu4_2",)))
    features, reference = vgg(image, layers), vgg(photo, ("relu4_2", "relu2_2"))
    return {
        "style": float(style_loss(features, grams_opt)) / len(OPT_STYLE),
        "style_train": float(style_loss(features, grams_train)) / len(TRAIN_STYLE),
        "content": float(content_loss(features["relu4_2"], reference["relu4_2"])),
        "content_train": float(content_loss(features["relu2_2"], reference["relu2_2"])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--styles", type=Path, default=Path("weights"))
    parser.add_argument("--paintings", type=Path, default=Path("../shared/data/styles"))
    parser.add_argument("--photos", type=Path, nargs="+", required=True)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--only", nargs="*", help="style file stems to report on")
    parser.add_argument("--vgg-weights", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sheets", type=Path, help="folder for photo|feed-forward|optimizer PNGs")
    args = parser.parse_args()

    vgg = load_vgg(path=args.vgg_weights)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    photos = {p.stem: square(p, args.size) for p in args.photos}
    for style_file in sorted(args.styles.glob("*.safetensors")):
        if args.only and style_file.stem not in args.only:
            continue
        info = read_info(style_file)
        painting = load_image(args.paintings / info.training["style_image"]).rgb
        grams_opt = style_target(vgg, [painting], np.ones(1), OPT_STYLE, args.size, 1.0)
        grams_train = style_target(vgg, [painting], np.ones(1), TRAIN_STYLE, args.size, 1.0)
        stylizer = Stylizer.from_file(style_file)
        for name, photo in photos.items():
            started = time.perf_counter()
            feed_forward = stylizer(photo)
            mx.eval(feed_forward)
            ff_seconds = time.perf_counter() - started
            started = time.perf_counter()
            reference = optimize(vgg, photo, [painting],
                                 OptimizeSettings(iterations=args.iterations)).image
            opt_seconds = time.perf_counter() - started
            row = {"style": style_file.stem, "photo": name, "size": args.size,
                   "iterations": args.iterations, "device": str(mx.default_device()),
                   "ff_seconds": ff_seconds, "optimizer_seconds": opt_seconds}
            for label, image in (("photo", photo), ("feed_forward", feed_forward),
                                 ("optimizer", reference)):
                for key, value in scores(vgg, image, photo, grams_opt, grams_train).items():
                    row[f"{key}_{label}"] = value
            row["style_ratio"] = row["style_feed_forward"] / row["style_optimizer"]
            row["style_train_ratio"] = (row["style_train_feed_forward"]
                                        / row["style_train_optimizer"])
            with args.out.open("a") as stream:
                stream.write(json.dumps(row) + "\n")
            print(f"{row['style']:>12} {name:>16}  style ff/opt {row['style_ratio']:.2f} "
                  f"(train layers {row['style_train_ratio']:.2f})  photo/opt "
                  f"{row['style_photo'] / row['style_optimizer']:.1f}  content ff "
                  f"{row['content_feed_forward']:.3g} opt {row['content_optimizer']:.3g}",
                  flush=True)
            if args.sheets:
                args.sheets.mkdir(parents=True, exist_ok=True)
                save_image(args.sheets / f"{style_file.stem}-{name}.jpg",
                           mx.concatenate([photo, feed_forward, reference], axis=2))


if __name__ == "__main__":
    main()

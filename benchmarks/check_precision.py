"""How far half-precision application drifts from float32, per style, on a real photo.

    python benchmarks/check_precision.py --photo P.jpg [--size 1920x1080] [STYLE.safetensors ...]

Prints, per style and dtype, the mean and largest absolute difference (0..1 scale) of
Stylizer's output from the plain float32 network, and of the tiled path in float16.
Meant for a GPU (on the CPU float32 is the default and half precision is slow).
"""

import argparse
import json
from pathlib import Path

import engine  # noqa: F401 - first: its BLAS loads before mlx.core
import mlx.core as mx
import numpy as np
from PIL import Image

from engine.stylize import Stylizer


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("styles", nargs="*", type=Path)
    parser.add_argument("--photo", type=Path, required=True)
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--tile", type=int, default=768, help="tile size for the tiled check")
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    styles = args.styles or sorted(Path("weights").glob("*.safetensors"))
    photo = Image.open(args.photo).convert("RGB").resize((width, height))
    x = mx.array(np.asarray(photo, dtype=np.float32)[None] / 255.0)
    for path in styles:
        plain = np.array(mx.clip(Stylizer.from_file(path, dtype=mx.float32).net(x), 0.0, 1.0))
        runs = [(str(d), Stylizer.from_file(path, dtype=d)) for d in
                (mx.float32, mx.float16, mx.bfloat16)]
        runs.append(("float16 tiles", Stylizer.from_file(path, dtype=mx.float16,
                                                         max_tile=args.tile)))
        for label, stylizer in runs:
            out = np.array(stylizer(x))
            error = np.abs(out - plain)
            print(json.dumps({"style": path.stem, "run": label, "finite": bool(np.isfinite(out).all()),
                              "mean_abs": float(error.mean()), "max_abs": float(error.max())}),
                  flush=True)


if __name__ == "__main__":
    main()

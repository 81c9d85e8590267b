"""Write the style targets into style files trained before styles kept them (the shipped ones).

A style file now carries the Gram matrices of its painting on its training layers
(`targets.<layer>`), as `train-style` computed them, so that `engine apply --refine` can go on
optimizing on the style's own objective without the painting. This adds them to older files:
the painting must be the very file the style was trained on (its sha256 is checked, as
`quality_report.py` does); the network's weights and the metadata are kept as they are.

    python benchmarks/training_paintings.py ../shared/data/styles out/paintings
    python benchmarks/add_style_targets.py --paintings out/paintings weights/*.safetensors \
        weights/fast/*.safetensors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import engine  # noqa: F401 - first: its BLAS loads before mlx.core  # isort: skip
import mlx.core as mx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from quality_report import check_painting

from engine.io.images import load_image
from engine.io.style_files import TARGETS, read_info, save_atomic
from engine.io.vgg_weights import load_vgg
from engine.optimize import style_target
from engine.training.settings import TrainSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("styles", type=Path, nargs="+")
    parser.add_argument("--paintings", type=Path, required=True)
    parser.add_argument("--vgg-weights", type=Path)
    args = parser.parse_args()
    vgg = load_vgg(path=args.vgg_weights)
    defaults = TrainSettings()
    for path in args.styles:
        info = read_info(path)
        painting = args.paintings / info.training["style_image"]
        check_painting(painting, info.style_sha256, path)
        layers = tuple(info.training.get("style_layers", defaults.style_layers))
        size = int(info.training.get("style_size", defaults.style_size))
        grams = style_target(vgg, [load_image(painting).rgb], np.ones(1), layers, size, 1.0)
        arrays, metadata = mx.load(str(path), return_metadata=True)
        arrays = {k: v for k, v in arrays.items() if not k.startswith(TARGETS)}
        arrays.update({TARGETS + k: v.astype(mx.float16) for k, v in grams.items()})
        save_atomic(path, arrays, metadata)
        print(f"{path}: targets on {', '.join(layers)} (painting at {size} px)")


if __name__ == "__main__":
    main()

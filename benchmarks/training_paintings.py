"""The painting files the shipped styles were trained on, made from the originals.

The shipped styles were trained on copies of `../shared/data/styles` at most 1024 px on a side
(Pillow's thumbnail with Lanczos, JPEG quality 92; smaller to carry to the GPU machine). A style's
metadata holds the sha256 of the painting file it was trained on, and `quality_report.py` scores
against that file only: the same painting re-encoded moves the style distance a lot (the fast
starry_night on baboon: 3.09 against the training copy, 5.36 against the original).

    python benchmarks/training_paintings.py ../shared/data/styles out/paintings
    python benchmarks/quality_report.py --paintings out/paintings ...
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from PIL import Image

from engine.io.style_files import read_info

LONGEST = 1024
QUALITY = 92


def training_copy(source: Path, target: Path) -> None:
    """`source` at most LONGEST px on a side, as a JPEG (Pillow, the settings above)."""
    image = Image.open(source).convert("RGB")
    image.thumbnail((LONGEST, LONGEST), Image.LANCZOS)
    partial = target.with_name(target.name + ".partial")
    image.save(partial, "JPEG", quality=QUALITY)
    partial.replace(target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("originals", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--styles", type=Path, nargs="*",
                        default=[Path("weights"), Path("weights/fast")],
                        help="style folders whose paintings to check the copies against")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    made = {}
    for source in sorted(args.originals.glob("*.jpg")):
        target = args.out / source.name
        training_copy(source, target)
        made[hashlib.sha256(target.read_bytes()).hexdigest()] = target.name
    for folder in args.styles:
        for style in sorted(folder.glob("*.safetensors")):
            info = read_info(style)
            found = made.get(info.style_sha256)
            print(f"{style}: {'trained on ' + found if found else 'its painting is not among these'}")


if __name__ == "__main__":
    main()

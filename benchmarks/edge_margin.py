"""What the reflected margin around an image does to the band the networks draw at its edges.

A photo is stylized whole (no margin); then the photo with 48 px cut off each side is stylized
with each --margins value. Near its edges the second pass cannot know what the first saw; how
far it lands from the first, by distance from the edge (outer 4 px, 4-16 px, 32 px and more in),
is the error that the network's own edge band adds to that. One JSON line per style, network
and margin: the mean over the photos, and on how many photos the outer band came out closer
than with no margin.

    python benchmarks/edge_margin.py --photos set14/*.jpg --styles starry,scream,wave \
        --out benchmarks/results/edge-margin-cpu.jsonl
"""

import argparse
import json
from pathlib import Path

import engine  # noqa: F401 - first: its BLAS loads before mlx.core  # isort: skip
import mlx.core as mx
import numpy as np

from engine.io import examples
from engine.io.images import load_image
from engine.registry import style_path
from engine.stylize import Stylizer

INSET = 48
BANDS = ((0, 4), (4, 16), (32, 10**6))


def band_errors(out: np.ndarray, reference: np.ndarray) -> list[float]:
    """Mean absolute difference in each band of distance from the nearest edge."""
    height, width = out.shape[:2]
    rows, cols = np.mgrid[0:height, 0:width]
    distance = np.minimum(np.minimum(rows, height - 1 - rows), np.minimum(cols, width - 1 - cols))
    error = np.abs(out - reference).mean(-1)
    return [float(error[(distance >= lo) & (distance < hi)].mean()) for lo, hi in BANDS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, nargs="*", default=[],
                        help="photos (default: the ones in the dependencies' wheels too)")
    parser.add_argument("--styles", default="starry,scream,wave")
    parser.add_argument("--nets", default="full,fast")
    parser.add_argument("--margins", default="0,8,16,32")
    parser.add_argument("--largest", type=int, default=640, help="skip photos larger than this")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    photos = []
    for path in [*args.photos, *examples.photos()]:
        image = load_image(path).rgb
        if max(image.shape[1:3]) <= args.largest:
            photos.append((path.name, image))
    margins = [int(m) for m in args.margins.split(",")]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for style in args.styles.split(","):
        for net in args.nets.split(","):
            path = style_path(style, net)
            stylizers = {m: Stylizer.from_file(path, margin=m) for m in margins}
            errors = {m: [] for m in margins}
            for _, image in photos:
                whole = np.array(stylizers[0](image))[0, INSET:-INSET, INSET:-INSET]
                inner = image[:, INSET:-INSET, INSET:-INSET]
                for m, stylizer in stylizers.items():
                    errors[m].append(band_errors(np.array(stylizer(inner))[0], whole))
            for m in margins:
                mean = np.mean(errors[m], axis=0)
                row = {"style": style, "net": net, "margin": m, "photos": len(photos),
                       "device": str(mx.default_device()),
                       **{f"error_{lo}_{min(hi, 9999)}px": float(e)
                          for (lo, hi), e in zip(BANDS, mean)},
                       "outer_closer_than_margin_0": sum(
                           a[0] < b[0] for a, b in zip(errors[m], errors[0]))}
                with args.out.open("a") as stream:
                    stream.write(json.dumps(row) + "\n")
                print(f"{style:>8} {net:>4} margin {m:>2}: outer 4 px {mean[0]:.4f}, 4-16 px "
                      f"{mean[1]:.4f}, 32 px in {mean[2]:.4f}; outer closer on "
                      f"{row['outer_closer_than_margin_0']}/{len(photos)}", flush=True)


if __name__ == "__main__":
    main()

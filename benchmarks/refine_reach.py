"""How far `--refine N` goes from the any-painting network's output, against the reference
optimizer, on a held-out painting and a photo no training saw (256x256, as
universal_quality.py scores them: style distance on relu1_1..relu5_1 with the painting at 256 px,
content distance on relu4_2).

Rows: the network's output; `apply --refine N` as it ships (the network's own objective, the
painting's Gram matrices at its code size); N L-BFGS iterations of the reference optimizer's own
objective (`engine optimize`'s defaults) started from the network's output; and the optimizer
itself from the photo, for each N.

    python benchmarks/refine_reach.py --painting rsimg_36full.jpg --photo chelsea.png \
        --iterations 10,30,50 --optimizer 300 > benchmarks/results/refine-reach.jsonl
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import engine  # noqa: F401,I001 - first: its BLAS loads before mlx.core
import mlx.core as mx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import emit  # noqa: E402

import universal_quality as quality  # noqa: E402

from engine.io import examples  # noqa: E402
from engine.io.vgg_weights import load_vgg  # noqa: E402
from engine.optimize import OptimizeSettings, _run_lbfgs, make_objective  # noqa: E402
from engine.style_source import load_painting, stylizer_for  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--painting", default="rsimg_36full.jpg")
    parser.add_argument("--photo", default="chelsea.png")
    parser.add_argument("--iterations", default="10,30,50")
    parser.add_argument("--optimizer", default="10,30,100,300",
                        help="the optimizer's iteration counts, from the photo")
    args = parser.parse_args()

    vgg = load_vgg()
    painting_path = quality.DATA / args.painting
    grams = quality.painting_grams(vgg, load_painting(painting_path))
    photo = quality.square(examples.data_dir() / args.photo)
    base = {"painting": args.painting, "photo": args.photo, "size": quality.SIZE}

    def row(method: str, iterations: int, image: mx.array) -> None:
        emit({**base, "method": method, "iterations": iterations,
              **quality.scores(vgg, image, photo, grams)})

    network, _ = stylizer_for(str(painting_path))
    output = network(photo)
    row("network", 0, output)
    settings = OptimizeSettings()
    objective = make_objective(vgg, photo, grams, settings)
    for count in (int(n) for n in args.iterations.split(",")):
        shipped, _ = stylizer_for(str(painting_path), refine=count)
        row("apply --refine (the network's objective)", count, shipped(photo))
        image, _, _ = _run_lbfgs(objective, np.array(output), count, settings.history,
                                 lambda *_: None)
        row("the optimizer's objective from the network's output", count, mx.array(image))
    for count in (int(n) for n in args.optimizer.split(",")):
        image, _, _ = _run_lbfgs(objective, np.array(photo), count, settings.history,
                                 lambda *_: None)
        row("the optimizer from the photo", count, mx.array(image))


if __name__ == "__main__":
    main()

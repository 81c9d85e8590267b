"""How many L-BFGS iterations one feed-forward pass is worth, per style and held-out photo.

Johnson et al. (2016, Figure 5) measure their networks this way: the loss of the network's
output next to the loss of the optimization-based method iteration by iteration, on images
the network never saw; theirs came out comparable to 50-100 iterations of L-BFGS. Here, for
each style and photo (center-cropped to SIZE x SIZE, as in `quality_report.py`), the style's
own training objective (content layer, style layers and weights from its metadata: the
`matched` optimizer of the quality report) is evaluated on the feed-forward output, then
`engine optimize`'s L-BFGS runs on that objective from the photo, and the report gives the
first iteration at which the optimizer's objective is at or below the network's
(`iterations_objective`; 0: the photo itself already was) and the same for the style term
alone (`iterations_style`). A run stops at the iteration where both are reached, or at
--iterations (then the figure is null: more than that).

    python benchmarks/training_paintings.py ../shared/data/styles out/paintings
    python benchmarks/lbfgs_equivalent.py --styles weights --paintings out/paintings \
        --photos set14_*.jpg --out benchmarks/results/lbfgs-equivalent.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import engine  # noqa: F401 - first: its BLAS loads before mlx.core  # isort: skip
import mlx.core as mx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))  # also when loaded from elsewhere (the tests)
from quality_report import add_style_arguments, matched_settings, square, trained_styles

from engine.io.vgg_weights import load_vgg
from engine.optimize import Step, make_objective, optimize, style_target
from engine.stylize import Stylizer

TOLERANCE = 1e-5  # relative: the same image scored by two compiled copies of the objective


class _Reached(Exception):
    pass


def first_at_or_below(values: list[float], bound: float) -> int | None:
    """The first index whose value is at or below `bound` (within TOLERANCE), or None."""
    for index, value in enumerate(values):
        if value <= bound * (1 + TOLERANCE):
            return index
    return None


def equivalent_iterations(vgg, photo: mx.array, painting: mx.array, image: mx.array, own: dict,
                          iterations: int, style_scale: float = 1.0) -> dict:
    """Where L-BFGS on the style's objective, started from `photo`, first reaches `image`'s
    objective and style term; with the optimizer's curve up to where it stopped."""
    settings = matched_settings(own, iterations, style_scale)
    longest = max(photo.shape[1], photo.shape[2])
    grams = style_target(vgg, [painting], np.ones(1), settings.style_layers, longest,
                         settings.style_scale)
    objective = make_objective(vgg, photo, grams, settings)

    def evaluate(x: mx.array) -> tuple[float, float]:
        (loss, (_, style, _)), _ = objective(x)
        return float(loss), float(style)

    target_objective, target_style = evaluate(image)
    start = evaluate(photo)
    curve = {"objective": [start[0]], "style": [start[1]]}

    def on_step(step: Step) -> None:
        curve["objective"].append(step.loss)
        curve["style"].append(step.terms["style"])
        if (first_at_or_below(curve["objective"], target_objective) is not None
                and first_at_or_below(curve["style"], target_style) is not None):
            raise _Reached

    try:
        optimize(vgg, photo, [painting], settings, on_step=on_step)
    except _Reached:
        pass
    return {"objective_feed_forward": target_objective, "style_feed_forward": target_style,
            "iterations_objective": first_at_or_below(curve["objective"], target_objective),
            "iterations_style": first_at_or_below(curve["style"], target_style),
            "optimizer_ran": len(curve["objective"]) - 1,
            "curve_objective": curve["objective"], "curve_style": curve["style"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_style_arguments(parser)  # --iterations: the most L-BFGS iterations to run
    args = parser.parse_args()

    vgg = load_vgg(path=args.vgg_weights)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    photos = {p.stem: square(p, args.size) for p in args.photos}
    scale = (args.style_size or args.size) / args.size
    for style_file, info, own, painting in trained_styles(args):
        stylizer = Stylizer.from_file(style_file)
        for name, photo in photos.items():
            feed_forward = stylizer(photo)
            mx.eval(feed_forward)
            found = equivalent_iterations(vgg, photo, painting, feed_forward, own,
                                          args.iterations, scale)
            row = {"style": style_file.stem, "photo": name, "size": args.size,
                   "style_size": args.style_size or args.size, "steps": info.steps,
                   "device": str(mx.default_device()),
                   "objective_settings": {**own, "style_layers": list(own["style_layers"])},
                   "margin": stylizer.margin, "max_iterations": args.iterations, **found}
            with args.out.open("a") as stream:
                stream.write(json.dumps(row) + "\n")

            def said(count):
                return f">{args.iterations}" if count is None else str(count)

            print(f"{row['style']:>14} {name:>14}  L-BFGS iterations to reach it: objective "
                  f"{said(found['iterations_objective']):>4}  style "
                  f"{said(found['iterations_style']):>4}", flush=True)


if __name__ == "__main__":
    main()

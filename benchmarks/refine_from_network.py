"""How many L-BFGS iterations, started from a style's feed-forward output, bring it within 1.5x
of the optimizer (issue 5's goal), where 300 started from the photo are the reference.

Issue 5 asks each shipped style to reach a style distance within 1.5x of the reference
optimizer's (`quality_report.py`'s `matched` optimizer: the style's own objective, 300 L-BFGS
iterations from the photo). One forward pass does not: the networks are worth 7-46 iterations of
that optimizer (`lbfgs_equivalent.py`). This measures the other way there, per-image refinement
seeded by the network: the same L-BFGS on the same objective, started from the feed-forward
output instead of the photo. Per iteration: the style distance on the style's own layers
(`style_own`, as the quality report scores it) over the matched optimizer's, taken from an
earlier quality report (`--reuse-optimizer`), and the first iteration at or under 1.5x. The
content distance at the end is reported next to the matched optimizer's, so that a ratio bought
by losing the photo shows.

    python benchmarks/refine_from_network.py --styles weights --only starry_night \
        --paintings out/paintings --photos set14_pepper.jpg --iterations 100 \
        --reuse-optimizer benchmarks/results/quality-matched-h100.jsonl --out results.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import engine  # noqa: F401 - first: its BLAS loads before mlx.core  # isort: skip
import mlx.core as mx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from quality_report import (
    OPT_STYLE,
    add_style_arguments,
    matched_settings,
    reuse_key,
    scores,
    square,
    trained_styles,
)

from engine.io.vgg_weights import load_vgg
from engine.optimize import _run_lbfgs, make_objective, style_target
from engine.stylize import Stylizer

GOAL = 1.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_style_arguments(parser)
    parser.add_argument("--reuse-optimizer", type=Path, required=True,
                        help="a quality report with the matched optimizer's scores")
    args = parser.parse_args()
    earlier = {}
    for line in args.reuse_optimizer.read_text().splitlines():
        row = json.loads(line)
        earlier[reuse_key(row)] = row
    vgg = load_vgg(path=args.vgg_weights)
    size = args.size
    style_size = args.style_size or size
    for style_file, info, own, painting in trained_styles(args):
        grams_opt = style_target(vgg, [painting], np.ones(1), OPT_STYLE, style_size, 1.0)
        grams_own = style_target(vgg, [painting], np.ones(1), own["style_layers"], style_size,
                                 1.0)
        stylizer = Stylizer.from_file(style_file)
        for photo_path in args.photos:
            photo = square(photo_path, size)
            key = {"style": style_file.stem, "photo": photo_path.stem, "size": size,
                   "style_size": style_size, "iterations": 300,
                   "objective_settings": {**own, "style_layers": list(own["style_layers"])}}
            matched = earlier.get(reuse_key(key))
            if matched is None:
                raise SystemExit(f"{args.reuse_optimizer} has no matched optimizer row for "
                                 f"{style_file.stem} / {photo_path.stem} at 300 iterations")
            feed_forward = stylizer(photo)
            settings = matched_settings(own, args.iterations, style_size / size)
            grams = style_target(vgg, [painting], np.ones(1), settings.style_layers, size,
                                 settings.style_scale)
            objective = make_objective(vgg, photo, grams, settings)
            # the optimizer's style term is its style weight (the style's own x the layer
            # count: matched_settings) x the mean over layers, which is the report's style_own
            per_unit = own["style_weight"] * len(own["style_layers"])
            curve = []
            started = time.perf_counter()
            image, _, done = _run_lbfgs(
                objective, np.array(feed_forward), args.iterations, settings.history,
                lambda i, value, terms, curve=curve, unit=per_unit: curve.append(terms[1] / unit))
            seconds = time.perf_counter() - started
            first = scores(vgg, feed_forward, photo, grams_opt, grams_own, own)
            last = scores(vgg, mx.array(image), photo, grams_opt, grams_own, own)
            ratios = [first["style_own"] / matched["style_own_matched"]] + [
                value / matched["style_own_matched"] for value in curve]
            reached = next((i for i, r in enumerate(ratios) if r <= GOAL), None)
            row = {**key, "refine_iterations": done, "device": str(mx.default_device()),
                   "seconds": round(seconds, 1), "steps": info.steps,
                   "style_own_ratio_curve": [round(r, 4) for r in ratios],
                   "first_iteration_within_goal": reached,
                   "style_own_ratio_end": last["style_own"] / matched["style_own_matched"],
                   # the curve's units checked: its lowest point against the best image's score
                   "curve_check": (min(curve) / last["style_own"]) if curve else None,
                   "content_own_end": last["content_own"],
                   "content_own_feed_forward": first["content_own"],
                   "content_own_matched": matched["content_own_matched"],
                   "objective_end": last["objective"],
                   "objective_matched": matched["objective_matched"],
                   "optimizer_from": f"{args.reuse_optimizer.name} ({matched['device']})"}
            with args.out.open("a") as stream:
                stream.write(json.dumps(row) + "\n")
            print(f"{style_file.stem:>12} {photo_path.stem:>14}  style/matched "
                  f"{ratios[0]:.2f} -> {row['style_own_ratio_end']:.2f} after {done}; within "
                  f"{GOAL}x at iteration {reached}; content {first['content_own']:.3g} -> "
                  f"{last['content_own']:.3g} (matched {matched['content_own_matched']:.3g}); "
                  f"{seconds:.0f} s", flush=True)


if __name__ == "__main__":
    main()

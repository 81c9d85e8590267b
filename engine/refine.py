"""Refining a feed-forward output: a few optimizer iterations on the style's own objective.

One forward pass of a style network is worth 7-46 iterations of the reference optimizer on
photos it never saw (benchmarks/README.md, `lbfgs_equivalent.py`): it trades style distance
for speed. `Refiner` starts `engine optimize`'s L-BFGS from the network's output instead of
from the photo, on the loss the network was trained on (its content layer, style layers and
weights, and the painting's Gram matrices that the style file carries): a few iterations
close most of the remaining gap to the optimizer (`refine_from_network.py`).
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np

from .errors import UsageError
from .nets.vgg import VGG, VGG16
from .optimize import OptimizeSettings, _run_lbfgs, make_objective

MAX_SIDE = 2048  # VGG's activations and gradients at the full size: ~8 GB of float32 at 2048


def own_objective(training: dict) -> dict:
    """A style's training loss settings from its metadata (train-style's defaults where the
    metadata is silent)."""
    from .training.settings import TrainSettings

    defaults = TrainSettings()
    own = {key: training.get(key, getattr(defaults, key)) for key in
           ("content_layer", "style_layers", "content_weight", "style_weight", "tv_weight")}
    return {**own, "style_layers": tuple(own["style_layers"]),
            **{key: float(own[key]) for key in ("content_weight", "style_weight", "tv_weight")}}


def matched_settings(own: dict, iterations: int, style_scale: float = 1.0) -> OptimizeSettings:
    """The optimizer on the training objective. Training sums the style term over its layers,
    the optimizer averages it: the style weight is scaled by the layer count to match."""
    return OptimizeSettings(iterations=iterations, content_layers=(own["content_layer"],),
                            style_layers=own["style_layers"],
                            content_weight=own["content_weight"],
                            style_weight=own["style_weight"] * len(own["style_layers"]),
                            tv_weight=own["tv_weight"], style_scale=style_scale)


class Refiner:
    """`iterations` of L-BFGS per image on a style's training objective, from its output."""

    def __init__(self, vgg: VGG, targets: dict[str, mx.array], training: dict, iterations: int):
        if iterations < 1:
            raise UsageError("--refine takes a number of iterations, at least 1")
        if not targets:
            raise UsageError("this style file holds no style targets (it was trained before "
                             "styles kept them); retrain it to use --refine")
        unknown = sorted(set(targets) - set(VGG16.taps))  # (train-style's choices)
        if unknown:
            raise UsageError(f"this style file holds targets for {unknown[0]!r}, not a VGG layer "
                             "the engine knows; retrain it to use --refine")
        # on the layers the targets are on (train-style saves its own style layers' targets)
        own = {**own_objective(training), "style_layers": tuple(targets)}
        self.settings = matched_settings(own, iterations)
        self.vgg, self.targets, self.iterations = vgg, targets, iterations

    def check(self, photos: mx.array) -> None:
        height, width = photos.shape[1:3]
        least = self.vgg.min_size([*self.settings.content_layers, *self.settings.style_layers])
        if min(height, width) < least:
            raise UsageError(f"--refine needs images at least {least} px on each side (the "
                             f"depth of its VGG layers), not {width}x{height}; leave out "
                             "--refine for this image")
        if max(height, width) > MAX_SIDE:
            raise UsageError(f"--refine works on images up to {MAX_SIDE} px on their longest "
                             f"side, not {width}x{height}; add --max-size {MAX_SIDE}")

    def __call__(self, stylized: mx.array, photos: mx.array) -> mx.array:
        """(B, H, W, 3) network outputs and their photos -> the refined outputs."""
        self.check(photos)
        refined = []
        for index in range(photos.shape[0]):
            objective = make_objective(self.vgg, photos[index:index + 1], self.targets,
                                       self.settings)
            image, _, _ = _run_lbfgs(objective, np.array(stylized[index:index + 1]),
                                     self.iterations, self.settings.history, lambda *_: None)
            refined.append(mx.array(image))
        return mx.concatenate(refined)


def refiner_for(style: str, path: Path, iterations: int, vgg_weights: Path | None = None
                ) -> Refiner:
    """apply --refine for a registered style: the targets from its file, or, for a shipped
    style's fast twin, from its full network's file when both match the same painting targets."""
    from .io.style_files import load_targets, read_info
    from .io.vgg_weights import load_vgg
    from .registry import style_path

    info = read_info(path)
    targets = load_targets(path)
    if not targets:
        full = style_path(style, "full")
        twin = read_info(full)
        same = ("style_layers", "style_size", "style_image")
        if full != path and twin.style_sha256 == info.style_sha256 and all(
                twin.training.get(key) == info.training.get(key) for key in same):
            targets = load_targets(full)
    return Refiner(load_vgg(path=vgg_weights), targets, info.training, iterations)


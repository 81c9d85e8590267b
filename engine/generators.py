"""What a generator is: a name and a deterministic function from a seed to images."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import mlx.core as mx

from .errors import UsageError

Make = Callable[[int, int, int], mx.array]
Interpolate = Callable[[int, int, int, int], mx.array]


@dataclass
class Generator:
    """images = make(count, seed, size) -> (count, size, size, 3) float32 in [0, 1].

    `interpolate(seed_a, seed_b, count, size)`, when given, walks from seed_a's first image to
    seed_b's in `count` steps.
    """

    name: str
    make: Make
    description: str = ""
    default_size: int = 256
    interpolate: Optional[Interpolate] = None
    from_user: bool = False  # a file of the user's own folder, not a plugin's (registry.Catalog)
    overrides: bool = False

    def generate(self, count: int, seed: int, size: int | None = None) -> mx.array:
        images = self.make(count, seed, size or self.default_size)
        return mx.clip(images.astype(mx.float32), 0.0, 1.0)

    def between(self, seed_a: int, seed_b: int, count: int, size: int | None = None) -> mx.array:
        if self.interpolate is None:
            raise UsageError(f"the generator {self.name!r} cannot interpolate between seeds")
        images = self.interpolate(seed_a, seed_b, count, size or self.default_size)
        return mx.clip(images.astype(mx.float32), 0.0, 1.0)


def image_key(seed: int, index: int, stream: int = 0) -> mx.array:
    """A PRNG key for image `index` of `seed`: the same whatever the number of images asked for."""
    mixed = (seed * 0x9E3779B1 + index * 0x85EBCA77 + stream * 0xC2B2AE3D) % (2 ** 63)
    return mx.random.key(mixed)


def grid(images: mx.array) -> mx.array:
    """(N, H, W, 3) -> one (1, rows*H, cols*W, 3) image, white where the grid is not full."""
    count, height, width, _ = images.shape
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    padded = mx.concatenate([images, mx.ones((rows * cols - count, height, width, 3))])
    tiled = padded.reshape(rows, cols, height, width, 3).transpose(0, 2, 1, 3, 4)
    return tiled.reshape(1, rows * height, cols * width, 3)

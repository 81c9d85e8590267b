"""What a generator is: a name and a deterministic function from a seed to images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import mlx.core as mx


@dataclass
class Generator:
    """images = make(count, seed, size) -> (count, size, size, 3) float32 in [0, 1]."""

    name: str
    make: Callable[[int, int, int], mx.array]
    description: str = ""
    default_size: int = 256

    def generate(self, count: int, seed: int, size: int | None = None) -> mx.array:
        images = self.make(count, seed, size or self.default_size)
        return mx.clip(images.astype(mx.float32), 0.0, 1.0)

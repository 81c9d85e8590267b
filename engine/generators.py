"""What a generator is: a name and a deterministic function from a seed to images."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

if TYPE_CHECKING:
    import mlx.core as mx

from .errors import EngineError, UsageError

Make = Callable[[int, int, int], "mx.array"]
Interpolate = Callable[[int, int, int, int], "mx.array"]


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
        size = check_request(count, size or self.default_size)
        return self._checked(self.make(count, seed, size), count, size)

    def between(self, seed_a: int, seed_b: int, count: int, size: int | None = None) -> mx.array:
        if self.interpolate is None:
            raise UsageError(f"the generator {self.name!r} cannot interpolate between seeds")
        size = check_request(count, size or self.default_size)
        return self._checked(self.interpolate(seed_a, seed_b, count, size), count, size)

    def _checked(self, images, count: int, size: int) -> mx.array:
        """A generator's output as the engine saves it: (count, size, size, 3) float32 in
        [0, 1]; anything else (another code's output) is an error naming what came back."""
        import mlx.core as mx

        if not isinstance(images, mx.array) or images.shape != (count, size, size, 3):
            shape = getattr(images, "shape", type(images).__name__)
            raise GeneratorError(f"generator {self.name!r} returned {shape}, not {count} images "
                                 f"of {size}x{size} RGB ({count}, {size}, {size}, 3)")
        if not (mx.issubdtype(images.dtype, mx.floating) or images.dtype == mx.uint8):
            raise GeneratorError(f"generator {self.name!r} returned {images.dtype} pixels")
        images = images.astype(mx.float32) / (255.0 if images.dtype == mx.uint8 else 1.0)
        if not mx.all(mx.isfinite(images)).item():
            raise GeneratorError(f"generator {self.name!r} returned pixels that are not finite")
        return mx.clip(images, 0.0, 1.0)


MAX_IMAGES = 1024
MAX_PIXELS = 256 * 2**20  # pixels of one request, all images together (1 GB of float32 RGB)


def check_request(count: int, size: int) -> int:
    """A request's count and size within what fits in memory; the size."""
    if not 1 <= count <= MAX_IMAGES:
        raise UsageError(f"-n {count} is out of range; ask for 1 to {MAX_IMAGES} images")
    if not 8 <= size <= 4096:
        raise UsageError(f"--size {size} is out of range; use 8 to 4096 px")
    if count * size * size > MAX_PIXELS:
        raise UsageError(f"{count} images of {size}x{size} are over {MAX_PIXELS // 2**20} "
                         "megapixels at once; ask for fewer or smaller images")
    return size


class GeneratorError(EngineError):
    """A generator (a plugin's code or a user's file) did not give what it promised."""


def image_key(seed: int, index: int, stream: int = 0) -> mx.array:
    """A PRNG key for image `index` of `seed`: the same whatever the number of images asked for."""
    import mlx.core as mx

    mixed = (seed * 0x9E3779B1 + index * 0x85EBCA77 + stream * 0xC2B2AE3D) % (2 ** 63)
    return mx.random.key(mixed)


def grid(images: mx.array) -> mx.array:
    """(N, H, W, 3) -> one (1, rows*H, cols*W, 3) image, white where the grid is not full."""
    import mlx.core as mx

    count, height, width, _ = images.shape
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    padded = mx.concatenate([images, mx.ones((rows * cols - count, height, width, 3))])
    tiled = padded.reshape(rows, cols, height, width, 3).transpose(0, 2, 1, 3, 4)
    return tiled.reshape(1, rows * height, cols * width, 3)


def guarded(entry) -> Generator:
    """A registered generator (a registry Entry) whose failures in a plugin's code become one
    line naming the plugin (the engine's own errors pass as they are)."""
    from .errors import PluginError

    maker = entry.item

    def call(method):
        def run(*args, **kwargs):
            try:
                return method(*args, **kwargs)
            except EngineError:
                raise
            except Exception as error:
                raise PluginError(f"generator {maker.name!r} of plugin {entry.plugin!r} failed: "
                                  f"{error!r:.300}; report it to the plugin's author") from None
        return run

    return _Guarded(call(maker.generate), call(maker.between))


@dataclass
class _Guarded:
    generate: Callable[..., mx.array]
    between: Callable[..., mx.array]


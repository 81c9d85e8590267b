"""Training data: content photos served as jittered crops for style training (one shard per
process), and image folders as square arrays for generator training."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ImageError, UsageError
from ..io.images import find_images, load_image
from . import distributed

MAX_IMAGES = 200_000


class ImageSet:
    """Every image of a folder as a square uint8 array of one size; transparency over white."""

    def __init__(self, folder: Path, size: int):
        if not Path(folder).is_dir():
            raise UsageError(f"{folder}: not a folder of training images")
        paths = find_images(folder)
        if len(paths) > MAX_IMAGES:
            raise UsageError(f"{folder} holds {len(paths)} images; at most {MAX_IMAGES} fit")
        arrays, skipped = [], 0
        for path in paths:
            try:
                with Image.open(path) as image:
                    image = image.convert("RGBA")
                    side = min(image.size)
                    left, top = (image.width - side) // 2, (image.height - side) // 2
                    image = image.crop((left, top, left + side, top + side))
                    image = image.resize((size, size), Image.Resampling.LANCZOS)
                    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
                    arrays.append(np.asarray(Image.alpha_composite(white, image).convert("RGB")))
            except (OSError, ValueError, Image.DecompressionBombError):
                skipped += 1
        if len(arrays) < 2:
            raise ImageError(f"{folder}: found {len(arrays)} readable image(s) ({skipped} "
                             "unreadable); a generator needs a folder of at least 2 images")
        self.images = np.stack(arrays)
        self.skipped = skipped

    def __len__(self) -> int:
        return len(self.images)

    def epoch(self, rng: np.random.Generator, batch: int):
        """Full batches in [-1, 1], shuffled, half of the images flipped left-right."""
        order = rng.permutation(len(self.images))
        for start in range(0, len(order) - batch + 1, batch):
            chosen = self.images[order[start:start + batch]].astype(np.float32) / 127.5 - 1
            flip = rng.random(batch) < 0.5
            chosen[flip] = chosen[flip, :, ::-1]
            yield chosen


MIN_CONTENT_SIDE = 16  # smaller photos (icons, strips) are skipped, with a note


class ContentSet:
    """Content photos held in memory as uint8, served as random jittered square crops."""

    def __init__(self, paths: Sequence[Path], size: int):
        self.size = size
        self.images: list[np.ndarray] = []
        skipped = []
        for path in paths:
            try:
                picture = load_image(path, max_size=max(2 * size, 512))
            except ImageError as error:
                skipped.append(str(error))
                continue
            if min(picture.size) < MIN_CONTENT_SIDE:
                skipped.append(f"{path}: {picture.size[0]}x{picture.size[1]} is too small to "
                               f"crop (under {MIN_CONTENT_SIDE} px a side)")
                continue
            self.images.append((np.array(picture.rgb[0]) * 255).astype(np.uint8))
        if not self.images:
            raise ImageError(f"no readable content images ({'; '.join(skipped[:3])})")
        self.skipped = skipped

    def crop(self, rng: np.random.Generator) -> np.ndarray:
        image = self.images[rng.integers(len(self.images))]
        height, width = image.shape[:2]
        short = min(height, width)
        side = int(short * rng.uniform(0.5, 1.0)) if short > self.size // 2 else short
        side = min(short, max(MIN_CONTENT_SIDE, side))
        top = rng.integers(0, height - side + 1)
        left = rng.integers(0, width - side + 1)
        patch = Image.fromarray(image[top:top + side, left:left + side])
        patch = patch.resize((self.size, self.size), Image.Resampling.BILINEAR)
        pixels = np.asarray(patch, dtype=np.float32) / 255.0
        return pixels[:, ::-1] if rng.random() < 0.5 else pixels

    def sample(self, seed: int, shard: int, step: int, count: int) -> np.ndarray:
        """The `count` crops of `step` for data shard `shard`: the same on every run."""
        rng = np.random.default_rng([seed, shard, step])
        return np.stack([self.crop(rng) for _ in range(count)])


class ShardedContent:
    """The content sets of the data shards one process holds: shard s has photos[s::shards].

    Under mlx.launch a process holds only its own shard (shards = processes); a single process
    may hold all of them, which makes its batches those of the whole group of processes.
    """

    def __init__(self, paths: Sequence[Path], size: int, shards: int = 1,
                 held: Sequence[int] | None = None):
        self.held = list(range(shards)) if held is None else list(held)
        self.sets = {}
        for s in self.held:
            part = distributed.shard(paths, s, shards)
            if not part:
                raise UsageError(f"{len(paths)} content photo(s) cannot be split into {shards} "
                                 "shards; give at least one photo per process")
            self.sets[s] = ContentSet(part, size)

    @property
    def first_image(self) -> np.ndarray:
        return self.sets[self.held[0]].images[0]

    def batches(self, seed: int, per_shard: int, start: int, stop: int):
        """Yield the batches of steps start..stop-1, in order (prefetched)."""

        def make(step: int) -> np.ndarray:
            return np.concatenate([self.sets[s].sample(seed, s, step, per_shard)
                                   for s in self.held])

        return prefetched(make, start, stop)


def prefetched(make, start: int, stop: int):
    """Yield make(step) for steps start..stop-1, in order, prepared ahead on background threads:
    a batch of eight 256 px crops takes ~11 ms of one core on the H100's host, as long as a
    whole training step there, so one thread alone would hold the GPU back (PIL's resizing and
    NumPy's conversions release the GIL, so threads run in parallel)."""
    workers = max(1, min(4, (os.cpu_count() or 1) - 1))
    pool = ThreadPoolExecutor(workers, thread_name_prefix="crops")
    ahead: deque = deque()
    try:
        for step in range(start, stop):
            ahead.append(pool.submit(make, step))
            if len(ahead) > workers + 1:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()
    finally:  # an interrupted run: the batches not yet made are not made
        pool.shutdown(wait=False, cancel_futures=True)


class PaintingSet(ContentSet):
    """Paintings served as crops like photos (scale jitter, flips), with colour jitter: each
    channel's gain and the saturation vary a little, so that a thousand paintings teach more
    than a thousand palettes."""

    def crop(self, rng: np.random.Generator) -> np.ndarray:
        pixels = super().crop(rng)
        grey = pixels.mean(axis=-1, keepdims=True)
        pixels = grey + (pixels - grey) * rng.uniform(0.8, 1.2)
        return np.clip(pixels * rng.uniform(0.9, 1.1, size=3), 0.0, 1.0).astype(np.float32)


class PairedData:
    """A step's photos and paintings as one array: `batch` photo crops, then as many paintings."""

    def __init__(self, photos: ContentSet, paintings: PaintingSet):
        self.photos, self.paintings = photos, paintings

    @property
    def first_image(self) -> np.ndarray:
        return self.photos.images[0]

    def batches(self, seed: int, per_shard: int, start: int, stop: int):
        def make(step: int) -> np.ndarray:
            return np.concatenate([self.photos.sample(seed, 0, step, per_shard),
                                   self.paintings.sample(seed, 1, step, per_shard)])

        return prefetched(make, start, stop)

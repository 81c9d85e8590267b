"""What the server does, apart from HTTP: registered styles loaded once and kept, their compiled
passes warm, and every forward pass batched on the one MLX thread (serve/batching.py).

A request names styles by their registered names only (a blend of them too): never a path on
the server. A painting becomes a style through `add_painting` (the any-painting network), and is
then a registered name like any other.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UsageError
from .batching import Batcher, QueueFull

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class StyleOptions:
    """What decides a style network's output, and so which requests may share a batch."""

    style: str
    strength: float = 1.0
    preserve_color: bool = False
    style_size: float = 1.0

    def checked(self) -> StyleOptions:
        from ..stylize import MAX_STROKE, MIN_STROKE

        if not (math.isfinite(self.strength) and 0.0 <= self.strength <= 1.0):
            raise UsageError(f"strength {self.strength} must be a number from 0 to 1")
        if not (math.isfinite(self.style_size) and MIN_STROKE <= self.style_size <= MAX_STROKE):
            raise UsageError(f"style_size {self.style_size} must be a number from {MIN_STROKE} "
                             f"to {MAX_STROKE}")
        return StyleOptions(self.style.strip(), round(self.strength, 3), bool(self.preserve_color),
                            round(self.style_size, 3))


@dataclass
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    net: str = "auto"
    token: str | None = None
    cors: tuple[str, ...] = ()  # origins allowed to call the API from their pages
    max_upload: int = 32 * 2**20  # bytes of one image upload
    max_video_upload: int = 512 * 2**20
    max_pixels: int = 24_000_000  # of one image (a 6000x4000 photo)
    max_batch: int = 8
    batch_wait: float = 0.002  # seconds a request waits for others to share its pass
    max_queue: int = 64
    max_jobs: int = 16  # video and training jobs kept (running, waiting or with a result)
    running_jobs: int = 1  # jobs running at once
    max_train_minutes: float = 60.0
    content: Path | None = None  # training photos for train jobs (default: the shipped ones)
    vgg_weights: Path | None = None
    device: str | None = None  # "cpu": MLX's CPU even where there is a GPU
    job_dir: Path | None = None  # default: a private temporary folder
    shared_jobs: bool = False  # job_dir is the job folder of several server processes


class StyleService:
    """Styles by name, stylizers kept per options, frames stylized in batches."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self._stylizers: OrderedDict[StyleOptions, object] = OrderedDict()  # worker thread only
        self._catalog_lock = threading.Lock()
        self._catalog = None
        self.started = time.time()
        self.batcher = Batcher(self._run, settings.max_batch, settings.batch_wait,
                               settings.max_queue, setup=self._setup_device)

    # ----------------------------------------------------------------- styles

    @property
    def catalog(self):
        with self._catalog_lock:
            if self._catalog is None:
                from ..registry import styles

                self._catalog = styles()
            return self._catalog

    def refresh(self) -> None:
        """Look the styles up again (a style was trained or added); loaded ones stay loaded."""
        with self._catalog_lock:
            self._catalog = None

    def style_rows(self) -> list[dict]:
        """Every usable registered style, as the API lists it."""
        catalog = self.catalog
        rows = []
        for entry in catalog.entries.values():
            if entry.problem or catalog.owner(entry.name) is not entry:
                continue
            info = getattr(entry, "info", None)
            training = (info.training if info else {}) or {}
            painting = getattr(entry.item, "painting", None)
            rows.append({
                "name": entry.name, "aliases": list(entry.aliases), "plugin": entry.plugin,
                "description": getattr(entry.item, "description", "") or "",
                "user": bool(getattr(entry.item, "from_user", False)),
                "from_painting": bool(training.get("painting_network")),
                "painting_name": training.get("style_image"),
                "preview": f"/v1/styles/{entry.name}/preview" if info and info.preview else None,
                "painting": f"/v1/styles/{entry.name}/painting"
                if painting is not None and Path(painting).is_file() else None})
        return sorted(rows, key=lambda row: (row["user"], row["name"]))

    def style_file(self, name: str, which: str) -> Path:
        """A registered style's preview or painting image (KeyError: it has none)."""
        entry = self.catalog.get(name)
        if which == "preview":
            info = getattr(entry, "info", None)
            path = info.preview if info else None
        else:
            path = getattr(entry.item, "painting", None)
        if path is None or not Path(path).is_file():
            raise KeyError(name)
        return Path(path)

    def check(self, options: StyleOptions) -> StyleOptions:
        """The options in range and every style they name registered (UsageError otherwise).
        A path, a painting file or a weights file is refused: requests name styles only."""
        from ..style_source import parse_blend

        options = options.checked()
        for name, _ in parse_blend(options.style):
            if not NAME.match(name):
                raise UsageError(f"style {name!r}: give a registered style's name (see GET "
                                 "/v1/styles); upload a painting with POST /v1/styles")
            self.catalog.get(name)  # UsageError: unknown, with the names there are
        return options

    def check_new_name(self, name: str) -> None:
        """A new style's name: usable as a file name, and free (before an upload is kept)."""
        if not NAME.match(name):
            raise UsageError(f"{name!r} is not a usable style name; use 1-64 letters, digits, "
                             "- and _")
        if self.catalog.owner(name) is not None:
            raise UsageError(f"a style named {name!r} exists; choose another name")

    def add_painting(self, data: bytes, name: str, max_pixels: int) -> str:
        """A painting (an image file's bytes) registered as the style `name` (the any-painting
        network's network for it, written to the user's style folder)."""
        import tempfile

        from ..io.images import decode_image

        self.check_new_name(name)
        decode_image(data, "the painting", max_pixels)  # checked before anything is written
        with tempfile.TemporaryDirectory(prefix="engine-painting-") as folder:
            painting = Path(folder) / f"{name}.png"
            painting.write_bytes(data)
            self.batcher.call(_add_painting, painting, name).result()
        self.refresh()
        return name

    # ----------------------------------------------------------------- stylizing

    def stylize(self, frame: np.ndarray, options: StyleOptions) -> Future:
        """uint8 (H, W, 3) -> a Future of the stylized uint8 frame. QueueFull when the queue
        is full; the options must have passed `check`."""
        return self.batcher.submit((options, frame.shape), np.ascontiguousarray(frame))

    def stylize_now(self, frames: np.ndarray, options: StyleOptions) -> np.ndarray:
        """A batch of frames (a video's), each through the queue, waiting while it is full."""
        futures = []
        for frame in frames:
            while True:
                try:
                    futures.append(self.stylize(frame, options))
                    break
                except QueueFull:
                    time.sleep(0.02)
        return np.stack([future.result() for future in futures])

    def warm(self, names: list[str] | None = None) -> Future:
        """Load styles on the worker ahead of their first request."""
        names = names if names is not None else [row["name"] for row in self.style_rows()]

        def load() -> int:
            for name in names:
                try:
                    self._stylizer(StyleOptions(name))
                except Exception:  # a style that fails to load says so on its first request
                    pass
            return len(names)

        return self.batcher.call(load)

    def close(self) -> None:
        self.batcher.close()

    # ----------------------------------------------------------------- on the worker thread

    def _setup_device(self) -> None:
        import mlx.core as mx

        if self.settings.device == "cpu":
            mx.set_default_device(mx.cpu)
        if self.settings.shared_jobs:  # one of several server processes on one GPU: MLX keeps
            mx.set_cache_limit(2**31)  # little freed memory for itself

    def _stylizer(self, options: StyleOptions):
        stylizer = self._stylizers.get(options)
        if stylizer is None:
            from ..style_source import stylizer_for

            stylizer, _ = stylizer_for(options.style, self.settings.net, catalog=self.catalog,
                                       strength=options.strength,
                                       preserve_color=options.preserve_color,
                                       stroke=options.style_size)
            self._stylizers[options] = stylizer
            while len(self._stylizers) > 32:  # option sets seen least recently go
                self._stylizers.popitem(last=False)
        self._stylizers.move_to_end(options)
        return stylizer

    def _run(self, key, frames: np.ndarray):
        """The batch's pass started (serve/batching.py). On a GPU a batch is padded to a power
        of two (copies of its last frame): each image size then has at most four batch shapes
        to compile, not one per count of requests."""
        from ..backend import on_cpu

        options, _ = key
        count = len(frames)
        padded = count if on_cpu() else min(1 << (count - 1).bit_length(),
                                            max(count, self.batcher.largest(frames[0])))
        if padded > count:
            frames = np.concatenate([frames, np.repeat(frames[-1:], padded - count, axis=0)])
        stylizer = self._stylizer(options)
        if not hasattr(stylizer, "uint8_started"):  # (a stylizer that runs at once)
            return stylizer.uint8(frames)[:count]
        done = stylizer.uint8_started(frames)
        return lambda: done()[:count]


def _add_painting(painting: Path, name: str) -> Path:
    from ..style_source import add_painting_style

    return add_painting_style(painting, name)

"""Applying a trained style: a compiled forward pass, batches, any size, tiles for huge images."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import mlx.core as mx
import numpy as np

from .backend import on_cpu, uses_cuda_kernels
from .errors import UsageError
from .io.style_files import StyleInfo, load_style
from .nets.cpu_forward import cpu_forward
from .nets.fused import fused_forward
from .nets.fused import prepare as prepare_fused
from .nets.ops import crop, margins, pad4, reflect_margin, run_framed
from .nets.transformer import NormStats, TransformerNet
from .optimize import preserve_color as keep_colors
from .refine import Refiner


def default_dtype() -> mx.Dtype:
    """float16 on a GPU (on the H100 faster than bfloat16, and 8x closer to float32 on the
    shipped styles); float32 on the CPU."""
    return mx.float32 if on_cpu() else mx.float16


# A fresh process compiles the CUDA kernels with NVRTC (MLX keeps no disk cache of them: ~13 s
# for the full network's pass on an H100, in every process); MLX's own kernels are cached on
# disk. The kernels save ~10 ms a 1080p frame, so they pay for themselves past ~1000 frames:
# a run with fewer images than this takes MLX's own ops in float32.
KERNEL_BREAK_EVEN = 256


def kernels_pay_off(frames: int | None) -> bool:
    """Whether a run of `frames` images (None: a stream with no end, a server) should compile
    the CUDA kernels."""
    return frames is None or frames >= KERNEL_BREAK_EVEN


def default_max_tile() -> int:
    """Longest side applied in one pass: a 4K frame fits an 80 GB GPU whole (the tiled path
    was 26x slower there), a CPU's memory better takes 2048."""
    return 2048 if on_cpu() else 4096


class Stylizer:
    """One style network, reusable across calls: a compiled forward pass per input shape.

    Input and output are (B, H, W, 3) float32 in [0, 1] of any H and W.

    A shape's first call runs op by op and its second compiles: one photo does not wait for a
    compilation it would never use again. On a fresh H100 (empty kernel cache) the first
    512x512 pass took 55 s compiled against 14 s op by op; from the second call on, the
    compiled pass is 1.1-2x faster (benchmarks/README.md).
    """

    def __init__(self, net: TransformerNet, info: StyleInfo | None = None,
                 dtype: mx.Dtype | None = None, strength: float = 1.0,
                 preserve_color: bool = False, max_tile: int | None = None, overlap: int = 64,
                 stats_size: int | None = None, margin: int | None = None,
                 refiner: Refiner | None = None, stroke: float = 1.0,
                 kernels: bool | None = None):
        if not 0.0 <= strength <= 1.0:  # (NaN too)
            raise UsageError(f"--strength {strength} must be a number from 0 to 1")
        if not MIN_STROKE <= stroke <= MAX_STROKE:
            raise UsageError(f"--style-size {stroke} must be a number from {MIN_STROKE} to "
                             f"{MAX_STROKE} (1: the strokes as trained; 2: twice as large)")
        self.stroke = stroke
        self.net, self.info = net, info
        self.least = net.config.least_side  # pad4's smallest side for this network
        if margin is None:  # the margin the style was trained with
            margin = int((info.training if info else {}).get("margin", 0))
        if margin < 0:
            raise UsageError(f"margin {margin} is negative; give 0 or more pixels")
        self.margin = margin
        # on CUDA: the kernels (float16), or MLX's own ops in float32 (their half-precision
        # reductions lose the norms' sums); `kernels` None: whether the backend has them
        self.kernels = uses_cuda_kernels() and kernels is not False
        cuda_without = uses_cuda_kernels() and not self.kernels
        self.dtype = dtype or (mx.float32 if cuda_without else default_dtype())
        if self.dtype != mx.float32:
            net.set_dtype(self.dtype)
        if self.kernels and net.config.arch == "johnson":
            prepare_fused(net)
        self.strength, self.preserve_color = strength, preserve_color
        self.refiner = refiner  # optimizer iterations after the network, before strength and colour
        self.max_tile, self.overlap = max_tile or default_max_tile(), overlap
        if self.max_tile < 4 * overlap:  # smaller tiles would be mostly overlap: thousands
            raise UsageError(f"--tile {self.max_tile} is too small: tiles overlap by "
                             f"{overlap} px on each side; use --tile {4 * overlap} or more")
        self.stats_size = stats_size or self.max_tile  # longest side of the statistics pass
        # mx.compile keeps one trace per input shape: the network alone (tiles, colour
        # preservation) and the whole pass, conversions from and to uint8 included
        self._forward = self._compiled_later(self._run)
        self._whole = self._compiled_later(self._apply_whole)
        self._whole_uint8 = self._compiled_later(
            lambda frames: _to_uint8(self._apply_whole(frames.astype(mx.float32) / 255.0)))

    @staticmethod
    def _compiled_later(function):
        """`function` op by op on an input shape's first call, compiled from its second."""
        compiled, seen = mx.compile(function), set()

        def run(x: mx.array) -> mx.array:
            key = (x.shape, x.dtype)
            if key in seen:
                return compiled(x)
            seen.add(key)
            return function(x)

        return run

    @classmethod
    def from_file(cls, path: Path, **options) -> Stylizer:
        net, info = load_style(path)
        return cls(net, info, **options)

    def _net(self, x: mx.array, stats: NormStats | None = None) -> mx.array:
        """The network's forward pass: on CUDA the full network's fused one, on the CPU the fast
        network's padded-layout one, else (Apple silicon's generic backend too) the plain one."""
        arch = self.net.config.arch
        if self.kernels and arch == "johnson":
            return fused_forward(self.net, x, stats)
        if on_cpu() and arch == "shuffle":
            return cpu_forward(self.net, x, stats)
        return self.net(x, stats)  # the generic path (Apple silicon), and the other pairs

    def _run(self, x: mx.array) -> mx.array:
        return self._net(x.astype(self.dtype)).astype(mx.float32)

    def _finish(self, stylized: mx.array, original: mx.array) -> mx.array:
        stylized = mx.clip(stylized, 0.0, 1.0)
        if self.preserve_color:
            stylized = keep_colors(stylized, original)
        if self.strength < 1.0:
            stylized = self.strength * stylized + (1.0 - self.strength) * original
        return stylized

    def _apply_whole(self, images: mx.array) -> mx.array:
        return self._finish(run_framed(self._run, images, self.least, self.margin), images)

    def _compiled_whole(self, images: mx.array) -> bool:
        """One compiled pass: not through tiles, and no colour preservation (its resize and
        CPU matrix inverse stay outside mx.compile)."""
        return max(images.shape[1:3]) <= self.max_tile and not self.preserve_color

    def __call__(self, images: mx.array) -> mx.array:
        if self.stroke == 1.0:
            return self._call(images)
        # strokes k times as large: the network on the image at 1/k of its size, the result
        # brought back to full size, then strength and colour against the full-size photo
        height, width = images.shape[1:3]
        small = _resize_all(images, max(16, round(width / self.stroke)),
                            max(16, round(height / self.stroke)))
        finish, self.strength, self.preserve_color = (self.strength, self.preserve_color), 1.0, False
        try:
            out = self._call(small)
        finally:
            self.strength, self.preserve_color = finish
        out = self._finish(_resize_all(out, width, height), images)
        mx.eval(out)
        return out

    def _call(self, images: mx.array) -> mx.array:
        height, width = images.shape[1:3]
        if self.refiner is not None:
            self.refiner.check(images)  # before the network's pass: a size it refuses
            out = run_framed(self._forward, images, self.least, self.margin)
            out = self._finish(self.refiner(mx.clip(out, 0.0, 1.0), images), images)
        elif self._compiled_whole(images):
            out = self._whole(images)
        else:
            if max(height, width) > self.max_tile:
                top, left = margins(height, width, self.margin)
                framed = reflect_margin(images, top, left)
                out = crop(mx.concatenate([self._tiled(framed[i:i + 1])
                                           for i in range(images.shape[0])]),
                           height, width, top, left)
            else:
                out = run_framed(self._forward, images, self.least, self.margin)
            out = self._finish(out, images)
        mx.eval(out)
        return out

    def uint8(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (B, H, W, 3) frames in, stylized uint8 frames out; converted on the device."""
        return self.uint8_started(frames)()

    def uint8_started(self, frames: np.ndarray) -> Callable[[], np.ndarray]:
        """`uint8`, its pass started: the answer waits for it and gives the frames. The device
        computes while the caller goes on (on a GPU: copying out an earlier batch)."""
        frames = mx.array(frames)
        if self._compiled_whole(frames) and self.stroke == 1.0:
            out = self._whole_uint8(frames)
        else:
            out = _to_uint8(self(frames.astype(mx.float32) / 255.0))
        if on_cpu():  # (nothing to overlap: the host computes)
            done = np.array(out)
            return lambda: done
        mx.async_eval(out)
        return lambda: np.array(out)

    def frames(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """numpy (B, H, W, 3) float32 batches in, stylized numpy batches out."""
        for batch in batches:
            yield np.array(self(mx.array(batch, dtype=mx.float32)))

    # ----------------------------------------------------------------- tiles

    def _tiled(self, image: mx.array, shared_stats: bool = True) -> mx.array:
        """Overlapping tiles with feathered seams; every tile uses the instance-norm statistics
        of the whole image (taken from a pass over a downscaled copy)."""
        from .io.images import resize

        height, width = image.shape[1:3]
        scale = min(1.0, self.stats_size / max(height, width))
        small = resize(image, max(4, round(width * scale)), max(4, round(height * scale)))
        recorder = NormStats()
        self._net(pad4(small, self.least).astype(self.dtype), recorder)
        mx.eval(recorder.recorded)
        tile, overlap = self.max_tile, self.overlap
        step = tile - 2 * overlap
        total = mx.zeros((height, width, 3))
        weights = mx.zeros((height, width, 1))
        for top in _starts(height, tile, step):
            for left in _starts(width, tile, step):
                bottom, right = min(top + tile, height), min(left + tile, width)
                patch = image[:, top:bottom, left:right]
                stats = NormStats(recorder.recorded) if shared_stats else None
                out = self._net(pad4(patch, self.least).astype(self.dtype), stats)
                out = crop(out.astype(mx.float32), bottom - top, right - left)[0]
                ramp = _feather(bottom - top, right - left, overlap, top > 0, left > 0,
                                bottom < height, right < width)
                total[top:bottom, left:right] += out * ramp
                weights[top:bottom, left:right] += ramp
                mx.eval(total, weights)
        return (total / mx.maximum(weights, 1e-6))[None]


MIN_STROKE, MAX_STROKE = 0.25, 8.0


def _resize_all(images: mx.array, width: int, height: int) -> mx.array:
    """Each image of (B, H, W, 3) resized (Lanczos)."""
    from .io.images import resize

    return mx.concatenate([resize(images[i:i + 1], width, height)
                           for i in range(images.shape[0])])


def _to_uint8(images: mx.array) -> mx.array:
    return (images * 255.0 + 0.5).astype(mx.uint8)


def _starts(length: int, tile: int, step: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def _feather(height: int, width: int, overlap: int, top: bool, left: bool, bottom: bool,
             right: bool) -> mx.array:
    """Weights rising linearly across the overlaps that have a neighbour."""
    def ramp(n: int, rise: bool, fall: bool) -> np.ndarray:
        w = np.ones(n, dtype=np.float32)
        k = min(overlap, n // 2)
        if k:
            edge = (np.arange(k, dtype=np.float32) + 0.5) / k
            if rise:
                w[:k] = edge
            if fall:
                w[n - k:] = edge[::-1]
        return w
    return mx.array(np.outer(ramp(height, top, bottom), ramp(width, left, right))[..., None])

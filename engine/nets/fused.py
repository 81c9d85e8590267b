"""Applying a style network on a GPU with the memory-bound steps fused (inference only).

Between two convolutions the network normalizes, applies ReLU, adds the residual, upsamples and
reflection-pads: each a full pass over the activations in plain MLX ops. Here one kernel
(kernels.half_sums) sums each convolution's output per channel and one more (kernels.pad_affine)
does all the rest in one pass, from one convolution's output to the next one's padded input; the
convolutions that a norm follows skip their bias (the norm removes it). Two kernels per norm, which
matters most for small images, where launches rather than bytes take the time. The upsampling
convolutions run at the lower resolution as sub-pixel convolutions, so no upsampled activation is
written at all. No gradients: training keeps TransformerNet.__call__.
"""

from __future__ import annotations

import mlx.core as mx

from .kernels import half_sums, pad_affine, sums_from_moments
from .ops import depth_to_space
from .transformer import (
    OUTPUT_SCALE,
    NormStats,
    TransformerNet,
    conv_blocked,
    image_stats,
    reflect_pad,
    subpixel_weight,
)


def _conv(layer, padded: mx.array) -> mx.array:
    """A convolution that an instance norm follows, without its bias: the norm takes any
    per-channel constant out again, so adding it would be a full pass over the output for
    nothing (tests: the same network)."""
    if layer.conv.weight.shape[1] == 9:
        return _end_conv(layer, padded, bias=False)
    return layer.padded_conv(padded, bias=False)


def _sums(layer, y: mx.array, stats: NormStats | None, phases: bool = False) -> mx.array:
    """(B, C, 2) float32: the sums over y's pixels that its instance norm uses (y from _conv,
    without the layer's bias; with `phases`, a sub-pixel convolution's (B, H/2, W/2, 4C)).
    Recorded or replayed statistics (NormStats) are those of the output with its bias, as
    TransformerNet.__call__ records them, so both paths share them."""
    if stats is None:
        sums = half_sums(y)
        if phases:  # the four sub-pixels' sums of each channel, added
            batch, channels = sums.shape[0], sums.shape[1] // 4
            sums = sums.reshape(batch, 4, channels, 2).sum(axis=1)
        return sums
    if phases:
        y = depth_to_space(y, 2)
    bias = layer.conv.bias.astype(mx.float32).reshape(1, 1, 1, -1)

    def with_bias(y):
        mean, var = image_stats(y)
        return mean + bias, var

    mean, var = stats.moments(y, compute=with_bias)
    return sums_from_moments(mean - bias, var, y.shape[1] * y.shape[2])


_SUBPIXEL: dict[int, tuple[mx.array, mx.array]] = {}  # id(weight) -> (weight, subpixel weight)


def prepare(net: TransformerNet) -> None:
    """Work out the upsampling convolutions' sub-pixel weights once, outside any compiled
    function (fused_forward otherwise derives them in every call)."""
    for layer in net.up:
        weight = layer.conv.weight
        _SUBPIXEL[id(weight)] = (weight, subpixel_weight(weight))
        mx.eval(_SUBPIXEL[id(weight)][1])


def _conv_after_upsample(layer, padded: mx.array) -> mx.array:
    """The convolution that follows 2x upsampling, on the low-resolution input edge-padded by
    one (ConvLayer.after_upsample), without its bias: (B, H, W, 4 * cout), each output sub-pixel
    a channel group (pad_affine's `phases`)."""
    weight = layer.conv.weight
    cached = _SUBPIXEL.get(id(weight))
    subpixel = cached[1] if cached and cached[0] is weight else subpixel_weight(weight)
    return mx.conv2d(padded, subpixel)


def fused_forward(net: TransformerNet, x: mx.array, stats: NormStats | None = None) -> mx.array:
    """TransformerNet.__call__ (Johnson network) for inference, one fused pass between
    convolutions; the same function of the same weights. The upsampling convolutions run at the
    lower resolution as sub-pixel convolutions (nearest upsampling then reflection by one pixel
    is edge padding at the lower resolution), so no upsampled activation is ever written."""

    def normalized(layer, norm, y, pad, phases=False, **options):
        return pad_affine(y, _sums(layer, y, stats, phases), norm.weight, norm.bias, pad,
                          phases=phases, **options)

    first = net.down[0]
    y = _conv(first, reflect_pad(x, first.pad))
    for previous, layer, norm in zip(net.down, net.down[1:], net.down_norms):
        y = _conv(layer, normalized(previous, norm, y, layer.pad, relu=True))
    blocks = net.blocks
    xp = normalized(net.down[-1], net.down_norms[-1], y, blocks[0].conv1.pad if blocks else 1,
                    relu=True, edge=not blocks)
    for k, block in enumerate(blocks):
        y = _conv(block.conv1, xp)
        h = normalized(block.conv1, block.norm1, y, block.conv2.pad, relu=True)
        y = _conv(block.conv2, h)
        last = k == len(blocks) - 1
        xp = normalized(block.conv2, block.norm2, y, 1 if last else blocks[k + 1].conv1.pad,
                        edge=last, residual=xp, residual_pad=block.conv1.pad)
    y = _conv_after_upsample(net.up[0], xp)
    h = normalized(net.up[0], net.up_norms[0], y, 1, phases=True, edge=True, relu=True)
    y = _conv_after_upsample(net.up[1], h)
    h = normalized(net.up[1], net.up_norms[1], y, net.out.pad, phases=True, relu=True)
    return _end_conv(net.out, h) * OUTPUT_SCALE


# From about a megapixel per call, the 9x9 input and output layers run on 4x4 space-to-depth
# blocks (H100, float16, 1080p batch 8: input layer 6.0 -> 2.6 ms, output layer 3.4 -> 2.9 ms);
# below it the plain forms are as fast or faster.
BLOCKED_FROM = 1 << 20


def _end_conv(layer, padded: mx.array, bias: bool = True) -> mx.array:
    """The 9x9 input or output layer of an input already padded."""
    margin = 2 * layer.pad
    if padded.shape[0] * (padded.shape[1] - margin) * (padded.shape[2] - margin) < BLOCKED_FROM:
        return layer.padded_conv(padded, bias)
    y = conv_blocked(padded, layer.conv.weight)
    return y + layer.conv.bias if bias else y

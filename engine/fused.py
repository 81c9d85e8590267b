"""Applying a style network on a GPU with the memory-bound steps fused (inference only).

Between two convolutions the network normalizes, applies ReLU, adds the residual, upsamples and
reflection-pads: each a full pass over the activations in plain MLX ops. Here one kernel
(kernels.pad_affine) does all of them in one pass, from one convolution's output to the next
one's padded input. No gradients: training keeps TransformerNet.__call__.
"""

from __future__ import annotations

import mlx.core as mx

from .kernels import pad_affine
from .transformer import (
    OUTPUT_SCALE,
    NormStats,
    TransformerNet,
    conv_blocked,
    image_stats,
    reflect_pad,
)


def _affine(norm, y: mx.array, stats: NormStats | None) -> tuple[mx.array, mx.array]:
    """The instance norm's per-(image, channel) scale and shift, (B, C) float32."""
    mean, var = image_stats(y) if stats is None else stats.moments(y)
    batch, channels = y.shape[0], y.shape[-1]
    return norm.affine(mean.astype(mx.float32).reshape(batch, channels),
                       var.astype(mx.float32).reshape(batch, channels))


def fused_forward(net: TransformerNet, x: mx.array, stats: NormStats | None = None) -> mx.array:
    """TransformerNet.__call__ (Johnson network) for inference, one fused pass between
    convolutions; the same function of the same weights."""
    y = _end_conv(net.down[0], reflect_pad(x, net.down[0].pad))
    for layer, norm in zip(net.down[1:], net.down_norms):
        y = layer.padded_conv(pad_affine(y, *_affine(norm, y, stats), layer.pad, relu=True))
    blocks = net.blocks
    xp = pad_affine(y, *_affine(net.down_norms[-1], y, stats), blocks[0].conv1.pad if blocks
                    else net.up[0].pad, up=1 if blocks else 2, relu=True)
    for k, block in enumerate(blocks):
        y = block.conv1.padded_conv(xp)
        h = pad_affine(y, *_affine(block.norm1, y, stats), block.conv2.pad, relu=True)
        y = block.conv2.padded_conv(h)
        last = k == len(blocks) - 1
        xp = pad_affine(y, *_affine(block.norm2, y, stats),
                        net.up[0].pad if last else blocks[k + 1].conv1.pad, up=2 if last else 1,
                        residual=xp, residual_pad=block.conv1.pad)
    y = net.up[0].padded_conv(xp)
    h = pad_affine(y, *_affine(net.up_norms[0], y, stats), net.up[1].pad, up=2, relu=True)
    y = net.up[1].padded_conv(h)
    h = pad_affine(y, *_affine(net.up_norms[1], y, stats), net.out.pad, relu=True)
    return _end_conv(net.out, h) * OUTPUT_SCALE


# From about a megapixel per call, the 9x9 input and output layers run on 4x4 space-to-depth
# blocks (H100, float16, 1080p batch 8: input layer 6.0 -> 2.6 ms, output layer 3.4 -> 2.9 ms);
# below it the plain forms are as fast or faster.
BLOCKED_FROM = 1 << 20


def _end_conv(layer, padded: mx.array) -> mx.array:
    """The 9x9 input or output layer of an input already padded."""
    margin = 2 * layer.pad
    if padded.shape[0] * (padded.shape[1] - margin) * (padded.shape[2] - margin) >= BLOCKED_FROM:
        return conv_blocked(padded, layer.conv.weight) + layer.conv.bias
    return layer.padded_conv(padded)

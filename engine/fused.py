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
    conv_out_rows,
    image_stats,
    reflect_pad,
)


def _affine(norm, y: mx.array, stats: NormStats | None) -> tuple[mx.array, mx.array]:
    """The instance norm's per-(image, channel) scale and shift, (B, C) float32."""
    mean, var = image_stats(y) if stats is None else stats.moments(y)
    batch, channels = y.shape[0], y.shape[-1]
    mean = mean.astype(mx.float32).reshape(batch, channels)
    var = var.astype(mx.float32).reshape(batch, channels)
    scale = mx.rsqrt(var + norm.eps) * norm.weight.astype(mx.float32)
    return scale, norm.bias.astype(mx.float32) - mean * scale


def fused_forward(net: TransformerNet, x: mx.array, stats: NormStats | None = None) -> mx.array:
    """TransformerNet.__call__ (Johnson network) for inference, one fused pass between
    convolutions; the same function of the same weights."""
    layer = net.down[0]
    y = layer.conv(reflect_pad(x, layer.pad))
    norms = list(net.down_norms)
    for following in net.down[1:]:
        h = pad_affine(y, *_affine(norms.pop(0), y, stats), following.pad, relu=True)
        y = following.conv(h)
    blocks = net.blocks
    xp = pad_affine(y, *_affine(norms.pop(0), y, stats), blocks[0].conv1.pad if blocks
                    else net.up[0].pad, up=1 if blocks else 2, relu=True)
    for k, block in enumerate(blocks):
        y = block.conv1.conv(xp)
        h = pad_affine(y, *_affine(block.norm1, y, stats), block.conv2.pad, relu=True)
        y = block.conv2.conv(h)
        last = k == len(blocks) - 1
        xp = pad_affine(y, *_affine(block.norm2, y, stats),
                        net.up[0].pad if last else blocks[k + 1].conv1.pad, up=2 if last else 1,
                        residual=xp, residual_pad=block.conv1.pad)
    y = net.up[0].conv(xp)
    h = pad_affine(y, *_affine(net.up_norms[0], y, stats), net.up[1].pad, up=2, relu=True)
    y = net.up[1].conv(h)
    h = pad_affine(y, *_affine(net.up_norms[1], y, stats), net.out.pad, relu=True)
    weight = net.out.conv.weight
    out = conv_out_rows(h, weight) if weight.shape[0] < 8 else mx.conv2d(h, weight)
    return (out + net.out.conv.bias) * OUTPUT_SCALE

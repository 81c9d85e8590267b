"""Applying the fast ("shuffle") network on a CPU with activations kept padded (inference only).

On the CPU the matrix products of the 3x3 convolutions run near the cores' peak (MKL); what is
left is memory traffic in MLX's single-threaded copies and elementwise passes. TransformerNet's
CPU path pads each layer's input with two concatenations and cuts each convolution's output
back to shape with a third copy. Here every activation lives in one flat padded layout:

    row 0             a slack row (read only by border outputs)
    rows 1 .. N       the reflection-padded image, (H + 2) x (W + 2) pixels, row-major
    row N + 1         a spare row (read only by border outputs)

A 3x3 convolution of that layout is nine matrix products over contiguous slices of it (tap
(dy, dx) starts dy * (W + 2) + dx rows in), whose output is already rows 1 .. H of the next
padded image, border columns included. One fused elementwise pass (normalization, ReLU,
residual) gives the next layout's rows 1..H, two small ones their reflected border columns, and
one concatenation adds the reflected top and bottom rows. The convolution bias before an
instance norm is dropped (the norm removes it). Same function of the same weights as
TransformerNet.__call__.
"""

from __future__ import annotations

import mlx.core as mx

from .ops import depth_to_space
from .transformer import OUTPUT_SCALE, InstanceNorm, NormStats, TransformerNet, weighted_moments


class Layout:
    """One image's activation (H, W, C) in the flat padded layout above: `buf` is (N + 2, C)."""

    def __init__(self, buf: mx.array, height: int, width: int):
        self.buf, self.height, self.width = buf, height, width

    @classmethod
    def pad(cls, x: mx.array) -> Layout:
        """From a (1, H, W, C) array (or a strided view of one), in two copies: the columns'
        reflection, then the rows' and the edge rows as one concatenation."""
        return cls._rows(mx.concatenate([x[:, :, 1:2], x, x[:, :, -2:-1]], axis=2))

    @classmethod
    def pad_s2d(cls, x: mx.array) -> Layout:
        """Layout.pad(space_to_depth(x, 2)), the transpose done by the columns' copy."""
        _, height, width, channels = x.shape
        blocks = x.reshape(1, height // 2, 2, width // 2, 2, channels).transpose(0, 1, 3, 2, 4, 5)
        cols = mx.concatenate([blocks[:, :, 1:2], blocks, blocks[:, :, -2:-1]], axis=2)
        return cls._rows(cols.reshape(1, height // 2, width // 2 + 2, 4 * channels))

    @classmethod
    def _rows(cls, cols: mx.array) -> Layout:
        """The layout of a (1, H, W + 2, C) image whose columns are padded already."""
        _, height, wp, channels = cols.shape
        flat = cols.reshape(-1, channels)
        edge = mx.zeros((1, channels), dtype=cols.dtype)
        top, bottom = flat[wp:2 * wp], flat[(height - 2) * wp:(height - 1) * wp]
        return cls(mx.concatenate([edge, top, flat, bottom, edge]), height, wp - 2)

    def interior(self) -> mx.array:
        """Back to (1, H, W, C)."""
        wp = self.width + 2
        image = self.buf[1:1 + (self.height + 2) * wp].reshape(self.height + 2, wp, -1)
        return image[None, 1:-1, 1:-1]


def conv3x3(layout: Layout, weight: mx.array, bias: mx.array | None = None) -> mx.array:
    """The 'valid' 3x3 convolution of the padded image: rows 1..H of the next layout,
    (H * (W + 2), Cout), its border columns not yet reflected. Without `bias` by default: an
    instance norm follows, which removes it."""
    wp = layout.width + 2
    rows = layout.height * wp
    taps = weight.transpose(1, 2, 3, 0)
    out = None
    for dy in range(3):
        for dx in range(3):
            piece = layout.buf[dy * wp + dx:dy * wp + dx + rows]
            if out is None:
                out = piece @ taps[dy, dx] if bias is None else mx.addmm(bias, piece, taps[dy, dx])
            else:
                out = mx.addmm(out, piece, taps[dy, dx])
    return out


def _valid_row(height: int, width: int, dtype: mx.Dtype) -> mx.array:
    """(1, H * (W + 2)) weights 1 / (H * W) on interior columns, 0 on the border columns."""
    column = mx.arange(width + 2)
    inside = ((column >= 1) & (column <= width)).astype(dtype) / (height * width)
    return mx.broadcast_to(inside, (height, width + 2)).reshape(1, -1)


def moments(z: mx.array, height: int, width: int) -> tuple[mx.array, mx.array]:
    """Mean and variance over the interior of conv3x3's output, each (1, 1, 1, C), as
    matrix products with a masked row of 1 / (H * W) (transformer.weighted_moments)."""
    mean, var = weighted_moments(z, _valid_row(height, width, z.dtype))
    shape = (1, 1, 1, z.shape[-1])
    return mean.reshape(shape), var.reshape(shape)


def finish(z: mx.array, height: int, width: int, scale: mx.array, shift: mx.array,
           relu: bool, residual: Layout | None = None) -> Layout:
    """z * scale + shift (then ReLU, then + residual) as the next padded layout.

    Row y of z (W + 2 pixels) is padded row y + 1: its two border columns get the values of
    columns 2 and W - 1 (computed apart, then written in place: the full-size result is not
    read by anything else, so MLX reuses its buffer), and Layout._rows adds the top and bottom
    rows and the layout's two edge rows in one concatenation.
    """
    wp, channels = width + 2, z.shape[1]
    scale, shift = scale.reshape(1, 1, -1), shift.reshape(1, 1, -1)
    z = z.reshape(height, wp, channels)
    # the residual's padded rows 1..H, lined up with z
    res = None if residual is None else (
        residual.buf[1 + wp:1 + wp + height * wp].reshape(height, wp, channels))

    def apply(values: mx.array, columns: slice) -> mx.array:
        out = values * scale + shift
        if relu:
            out = mx.maximum(out, 0)
        return out if res is None else out + res[:, columns]

    out = apply(z, slice(None))
    left, right = apply(z[:, 2:3], slice(0, 1)), apply(z[:, width - 1:width], slice(-1, None))
    out[:, :1] = left
    out[:, -1:] = right
    return Layout._rows(out[None])


def _conv_norm(conv, norm: InstanceNorm, layout: Layout, stats: NormStats | None
               ) -> tuple[mx.array, mx.array, mx.array]:
    """The convolution without its bias, and the scale and shift that normalize it.

    The moments recorded or replayed are those of the convolution with its bias (as
    TransformerNet's), so shared statistics mean the same on either path."""
    z = conv3x3(layout, conv.conv.weight)
    bias = conv.conv.bias.reshape(1, 1, 1, -1)

    def biased(z: mx.array) -> tuple[mx.array, mx.array]:
        mean, var = moments(z, layout.height, layout.width)
        return mean + bias, var

    mean, var = biased(z) if stats is None else stats.moments(z, biased)
    return z, *norm.affine(mean - bias, var)


def _layer(conv, norm: InstanceNorm, layout: Layout, stats: NormStats | None,
           relu: bool = True, residual: Layout | None = None) -> Layout:
    z, scale, shift = _conv_norm(conv, norm, layout, stats)
    return finish(z, layout.height, layout.width, scale, shift, relu, residual)


def _activate(conv, norm: InstanceNorm, layout: Layout, stats: NormStats | None) -> mx.array:
    """relu(norm(conv(layout))) as (1, H, W, C), a view into the (H, W + 2) product rows."""
    z, scale, shift = _conv_norm(conv, norm, layout, stats)
    out = mx.maximum(z * scale.reshape(1, -1) + shift.reshape(1, -1), 0)
    return out.reshape(1, layout.height, layout.width + 2, -1)[:, :, 1:-1]


def cpu_forward(net: TransformerNet, x: mx.array, stats: NormStats | None = None) -> mx.array:
    """TransformerNet.__call__ of the shuffle network for inference on the CPU."""
    if x.shape[0] > 1:
        if stats is not None:
            raise ValueError("shared statistics need one image at a time")
        return mx.concatenate([cpu_forward(net, x[i:i + 1]) for i in range(x.shape[0])])
    h = Layout.pad_s2d(x)
    h = Layout.pad_s2d(_activate(net.down[0], net.down_norms[0], h, stats))
    h = _layer(net.down[1], net.down_norms[1], h, stats)
    for block in net.blocks:
        y = _layer(block.conv1, block.norm1, h, stats)
        h = _layer(block.conv2, block.norm2, y, stats, relu=False, residual=h)
    h = Layout.pad(depth_to_space(_activate(net.up[0], net.up_norms[0], h, stats), 2))
    # the output scale folded into the last layer's weights
    z = conv3x3(h, net.out.conv.weight * OUTPUT_SCALE, net.out.conv.bias * OUTPUT_SCALE)
    out = z.reshape(1, h.height, h.width + 2, -1)[:, :, 1:-1]
    return depth_to_space(out, 2)

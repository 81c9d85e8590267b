"""The image-transformation networks: Johnson et al. (2016) with instance normalization, and a
fast variant for CPUs.

`johnson`: reflection padding everywhere, a 9x9 convolution, two stride-2 downsamplings, residual
blocks, and nearest-neighbour upsampling followed by a convolution (no transposed convolutions, so
no checkerboard artifacts).

`shuffle` (the CPU network): the same residual trunk at a quarter of the resolution, but reached by
space-to-depth (2x2 pixel blocks become channels, twice) instead of full-resolution convolutions,
and left by depth-to-space (sub-pixel convolutions, as in ESPCN). Every convolution runs at 1/4 or
1/16 of the pixels: no layer holds a full-resolution activation, which on a CPU costs more in
memory traffic than the multiply-adds themselves. The last convolution works at half resolution
over 3x3 neighbours, so neighbouring output blocks blend instead of showing seams.

On the CPU, stride-1 convolutions run as shifted matrix products over the flattened padded image
(`conv2d_cpu`) instead of `mx.conv2d`, whose im2col copy dominates there.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..backend import on_cpu
from .config import ARCHS, FAST, FULL, NETWORK_NAMES, NETWORKS, NetConfig  # noqa: F401
from .kernels import fold_pad, half_moments, product_sums
from .ops import depth_to_space, reflect_slices, space_to_depth, upsample2x

# The last convolution works in 0..255 pixel units, as in Johnson's network: an Adam step then
# moves output pixels by a fraction of a percent instead of by their whole range, which in [0, 1]
# units made training noisy and left the network unable to learn fine texture.
OUTPUT_SCALE = 1.0 / 255.0


# On a GPU, the Johnson network's full-resolution layers run in low-resolution forms, the same
# function of the same weights: the 9x9 layers on 4x4 space-to-depth blocks, each upsampling
# convolution as four sub-pixel convolutions at the input's resolution (ConvLayer.blocked,
# ConvLayer.after_upsample). MLX's convolution gradients are slow at full resolution with few
# channels (3-4x cuDNN's through PyTorch) and fast at low resolution with many.
LOW_RES_FORMS = True




class InstanceNorm(nn.Module):
    """Per-image, per-channel normalization over H and W, with a learned scale and shift.

    `stats` may supply the (mean, variance) to use instead of this input's own: tiles of one large
    image then share the statistics of the whole image and the style does not shift across tiles.
    On a GPU it runs as one function with its own gradient (training, in float32 or bfloat16).
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight = mx.ones((channels,))
        self.bias = mx.zeros((channels,))
        self.eps = eps

    def __call__(self, x: mx.array, stats: tuple[mx.array, mx.array] | None = None) -> mx.array:
        if stats is None and not on_cpu():
            return _instance_norm_fn(self.eps)(x, self.weight, self.bias)
        # One scale and shift per (image, channel), reshaped before use: the reshape keeps
        # mx.compile from fusing rsqrt into the full-size kernel, where the CPU would evaluate it
        # once per pixel (10x slower there); on a GPU either way costs the same.
        scale, shift = self.affine(*(image_stats(x) if stats is None else stats))
        batch, channels = x.shape[0], x.shape[-1]
        scale = scale.reshape(batch, channels).reshape(batch, 1, 1, channels).astype(x.dtype)
        shift = shift.reshape(batch, channels).reshape(batch, 1, 1, channels).astype(x.dtype)
        return x * scale + shift

    def affine(self, mean: mx.array, var: mx.array) -> tuple[mx.array, mx.array]:
        """The scale and shift that normalize with these moments (any matching shapes)."""
        return _affine(mean, var, self.weight, self.bias, self.eps)


def _affine(mean: mx.array, var: mx.array, weight: mx.array, bias: mx.array,
            eps: float) -> tuple[mx.array, mx.array]:
    scale = mx.rsqrt(var + eps) * weight
    return scale, bias - mean * scale


def _moments(x: mx.array) -> tuple[mx.array, mx.array]:
    return mx.mean(x, axis=(1, 2), keepdims=True), mx.var(x, axis=(1, 2), keepdims=True)


def _float32_moments(x: mx.array) -> tuple[mx.array, mx.array]:
    """Mean and variance over H and W in float32, whatever x's precision (GPU): in half
    precision by half_moments' float32 sums (MLX's own reductions lose them)."""
    return _moments(x) if x.dtype == mx.float32 else half_moments(x)


def _instance_norm_fn(eps: float):
    """Instance norm with its own gradient (training on a GPU); returns the function's output
    alone (its statistics stay inside)."""
    norm = _instance_norm_with_stats(eps)
    return lambda x, weight, bias: norm(x, weight, bias)[0]


@lru_cache
def _instance_norm_with_stats(eps: float):
    """(x, weight, bias) -> (instance norm of x, its mean, its variance), with its own gradient:
    the textbook dx = s * (g - mean(g) - x_hat * mean(g * x_hat)), where autodiff of mean, var
    and the scale-and-shift takes more reductions and passes. The statistics are outputs so that
    the gradient reuses them; the gradient's two sums come from one pass over the cotangent and
    x (kernels.product_sums: sum(g) and sum(g * x), in float32 whatever the precision; MLX's
    reductions over a half-precision array lose them), and mean(g * x_hat) from those."""

    @mx.custom_function
    def norm(x, weight, bias):
        mean, var = _float32_moments(x)
        scale, shift = _affine(mean, var, weight, bias, eps)
        return x * scale.astype(x.dtype) + shift.astype(x.dtype), mean, var

    @norm.vjp
    def norm_vjp(primals, cotangents, outputs):
        x, weight, bias = primals
        _, mean, var = outputs
        batch, height, width, channels = x.shape
        inv = mx.rsqrt(var + eps)
        sums = product_sums(cotangents[0], x)  # (B, C, 2): sum g, sum g * x
        g_sum = sums[..., 0].reshape(batch, 1, 1, channels)
        gx_sum = (sums[..., 1].reshape(batch, 1, 1, channels) - mean * g_sum) * inv
        count = height * width
        x_hat = (x.astype(mx.float32) - mean) * inv
        dx = (inv * weight.astype(mx.float32)) * (cotangents[0].astype(mx.float32)
                                                  - (g_sum + x_hat * gx_sum) / count)
        return (dx.astype(x.dtype), gx_sum.sum(axis=(0, 1, 2)).astype(weight.dtype),
                g_sum.sum(axis=(0, 1, 2)).astype(bias.dtype))

    return norm


def reflect_pad(x: mx.array, p: int, spare_row: bool = False) -> mx.array:
    """Reflection padding of H and W by p (as mx.pad's "reflect", 4x faster on the CPU).

    `spare_row` appends one zero row below, for conv2d_cpu: it lets the last taps read past the
    image's end, so the output needs no copy to be cut back to shape.
    """
    if p == 0:
        return x
    if spare_row:  # conv2d_cpu's input (the CPU keeps autodiff's gradient: not measured there)
        return reflect_slices(x, p, spare_row)
    return _reflect_pad_fn(p)(x)


@lru_cache
def _reflect_pad_fn(p: int):
    """Reflection padding by p with its own gradient. Left to autodiff, the gradient of each of
    the six slices is a zero array of the whole input's size with the slice written in; this one
    reads the padded gradient once."""

    @mx.custom_function
    def pad(x):
        return reflect_slices(x, p)

    @pad.vjp
    def pad_vjp(primals, cotangent, output):
        return (fold_pad(cotangent, p),)

    return pad


def conv2d_cpu(padded: mx.array, weight: mx.array, spare_row: bool = False,
               dilation: int = 1) -> mx.array:
    """A stride-1 'valid' convolution as k*k matrix products over the flattened padded image.

    Output pixel (y, x) sums padded[y + d*dy, x + d*dx] @ w[dy, dx] (d the dilation); on the
    flattened (B*Hp*Wp, C) array, that is row q + d*(dy*Wp + dx) for q = y*Wp + x, so each tap
    reads one contiguous slice (no im2col copy) and accumulates with addmm. Rows past the right
    edge are computed and dropped. With `spare_row` (the input from reflect_pad(...,
    spare_row=True)), a single image's output is a view of the products, with no copy.
    """
    cout, k, _, cin = weight.shape
    batch, hp, wp, _ = padded.shape
    span = dilation * (k - 1)  # the kernel's extent past its first tap
    height, width = hp - span - spare_row, wp - span
    flat = padded.reshape(-1, cin)
    view = spare_row and batch == 1  # then every tap's slice of height*wp rows fits in `flat`
    rows = height * wp if view else batch * hp * wp - span * (wp + 1)
    taps = weight.transpose(1, 2, 3, 0)
    out = None
    for dy in range(k):
        for dx in range(k):
            start = dilation * (dy * wp + dx)
            piece = flat[start:start + rows]
            out = piece @ taps[dy, dx] if out is None else mx.addmm(out, piece, taps[dy, dx])
    if view:
        return out.reshape(1, height, wp, cout)[:, :, :width]
    out = mx.pad(out, [(0, batch * hp * wp - rows), (0, 0)])
    return out.reshape(batch, hp, wp, cout)[:, :height, :width]


def conv_out_rows(padded: mx.array, weight: mx.array) -> mx.array:
    """A k x k 'valid' convolution with few output channels as a k x 1 one with k * cout outputs
    (one per output channel and column offset), summed over the k column shifts.

    The 9x9 output layer (32 -> 3 channels) runs 2x faster this way on a GPU: three output
    channels leave the tensor cores idle, 27 keep them busy.
    """
    cout, k, _, cin = weight.shape
    z = mx.conv2d(padded, weight.transpose(2, 0, 1, 3).reshape(k * cout, k, 1, cin))
    return _shift_sum_fn(k, cout)(z)


def _shift_sum(z: mx.array, k: int, cout: int) -> mx.array:
    width = z.shape[2] - k + 1
    out = z[:, :, :width, :cout]
    for dx in range(1, k):
        out = out + z[:, :, dx:dx + width, dx * cout:(dx + 1) * cout]
    return out


@lru_cache
def _shift_sum_fn(k: int, cout: int):
    """(B, H, W + k - 1, k * cout) -> (B, H, W, cout): the sum over dx of channel group dx
    shifted left by dx columns. Its gradient is one concatenation of k shifted copies (autodiff
    would write each of the k slices into a zero array of z's whole size)."""

    @mx.custom_function
    def shift_sum(z):
        return _shift_sum(z, k, cout)

    @shift_sum.vjp
    def shift_sum_vjp(primals, cotangent, output):
        return (mx.concatenate([mx.pad(cotangent, [(0, 0), (0, 0), (dx, k - 1 - dx), (0, 0)])
                                for dx in range(k)], axis=-1),)

    return shift_sum


def image_stats(x: mx.array) -> tuple[mx.array, mx.array]:
    """Mean and (biased) variance over H and W of (B, H, W, C), each (B, 1, 1, C).

    On the CPU the sums are matrix products with a row of 1/N: MLX's strided reductions over H and
    W are 6x slower there when C is small (16 channels at half resolution).
    """
    if not on_cpu():
        return _float32_moments(x)
    batch, height, width, channels = x.shape
    flat = x.reshape(batch, height * width, channels)
    average = mx.full((batch, 1, height * width), 1.0 / (height * width), dtype=x.dtype)
    mean, var = weighted_moments(flat, average)
    shape = (batch, 1, 1, channels)
    return mean.reshape(shape), var.reshape(shape)


def weighted_moments(rows: mx.array, average: mx.array) -> tuple[mx.array, mx.array]:
    """Mean and variance of the rows of (..., N, C) as matrix products with a (..., 1, N) row
    of weights summing to 1 (zeros leave rows out): (..., 1, C) each."""
    mean = average @ rows
    return mean, average @ mx.square(rows - mean)


class ConvLayer(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.pad, self.dilation = dilation * (kernel // 2), dilation
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, dilation=dilation)

    def __call__(self, x: mx.array, bias: bool = True) -> mx.array:
        """The convolution with reflection padding; without its bias when `bias` is false (an
        instance norm with its own statistics follows, which would take it out again)."""
        p = self.pad
        if not on_cpu():  # slices rather than mx.pad's "reflect" mode, 2x faster on the GPU too
            return self.padded_conv(reflect_pad(x, p), bias)
        if self.conv.stride == (1, 1) and p > 0:
            y = conv2d_cpu(reflect_pad(x, p, spare_row=True), self.conv.weight, spare_row=True,
                           dilation=self.dilation)
        else:
            y = mx.conv2d(reflect_pad(x, p), self.conv.weight, stride=self.conv.stride,
                          dilation=self.conv.dilation)
        return y + self.conv.bias if bias else y

    def padded_conv(self, padded: mx.array, bias: bool = True) -> mx.array:
        """The convolution of an input already padded, on a GPU (the CPU pads within); without
        its bias when `bias` is false (an instance norm follows, which would remove it)."""
        weight = self.conv.weight
        if weight.shape[1] > 3 and weight.shape[0] < 8 and self.conv.stride == (1, 1):
            y = conv_out_rows(padded, weight)
        else:
            y = mx.conv2d(padded, weight, stride=self.conv.stride, dilation=self.conv.dilation)
        return y + self.conv.bias if bias else y

    def blocked(self, x: mx.array, bias: bool = True) -> mx.array:
        """self(x, bias) (stride 1, undilated) on 4x4 space-to-depth blocks (conv_blocked)."""
        y = conv_blocked(reflect_pad(x, self.pad), self.conv.weight)
        return y + self.conv.bias if bias else y

    def after_upsample(self, x: mx.array, bias: bool = True) -> mx.array:
        """self(upsample2x(x), bias) (3x3, stride 1, undilated) at x's resolution: one
        convolution with four outputs per channel (subpixel_weight), then depth-to-space."""
        y = depth_to_space(mx.conv2d(edge_pad1(x), subpixel_weight(self.conv.weight)), 2)
        return y + self.conv.bias if bias else y


class NormStats:
    """Either records each InstanceNorm's (mean, var) in order, or replays recorded ones."""

    def __init__(self, recorded: list | None = None):
        self.recorded = [] if recorded is None else recorded
        self._replay: Iterator | None = iter(recorded) if recorded is not None else None

    def __call__(self, norm: InstanceNorm, x: mx.array) -> mx.array:
        return norm(x, self.moments(x))

    def moments(self, x: mx.array, compute=image_stats) -> tuple[mx.array, mx.array]:
        """The next norm's (mean, var): replayed, or compute(x), recorded."""
        if self._replay is not None:
            return next(self._replay)
        stats = compute(x)
        self.recorded.append(stats)
        return stats


def _norm(norm: InstanceNorm, x: mx.array, stats: NormStats | None) -> mx.array:
    return norm(x) if stats is None else stats(norm, x)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, dilation: int = 1):
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, 3, dilation=dilation)
        self.norm1 = InstanceNorm(channels)
        self.conv2 = ConvLayer(channels, channels, 3, dilation=dilation)
        self.norm2 = InstanceNorm(channels)
        if dilation > 1:
            # a dilated block starts as the identity (its last norm's scale 0): added to a trained
            # network (train-style --from), it leaves the network's output as it was
            self.norm2.weight = mx.zeros_like(self.norm2.weight)

    def __call__(self, x: mx.array, stats: NormStats | None = None) -> mx.array:
        biased = stats is not None  # see TransformerNet.__call__
        y = nn.relu(_norm(self.norm1, self.conv1(x, biased), stats))
        return x + _norm(self.norm2, self.conv2(y, biased), stats)


def blocked_weight(weight: mx.array, r: int) -> mx.array:
    """A (cout, k, k, cin) 'valid' convolution's weights for the same convolution over r x r
    space-to-depth blocks: (r*r*cout, n, n, r*r*cin), n = (r + k - 2) // r + 1 blocks.

    Output sub-pixel o of a block reads input sub-pixel s of the block `b` further on when
    r*b + s - o is a tap of the kernel (0..k-1), with that tap's weight; zero otherwise.
    """
    cout, k, _, cin = weight.shape
    n = (r + k - 2) // r + 1
    o, b, s = np.arange(r), np.arange(n), np.arange(r)
    tap = r * b[None, :, None] + s[None, None, :] - o[:, None, None]  # (o, b, s)
    valid = (tap >= 0) & (tap < k)
    tap = np.clip(tap, 0, k - 1)
    index = tap[:, None, :, None, :, None] * k + tap[None, :, None, :, None, :]  # (oy ox by bx sy sx)
    mask = valid[:, None, :, None, :, None] & valid[None, :, None, :, None, :]
    taps = weight.transpose(1, 2, 0, 3).reshape(k * k, cout, cin)
    blocked = taps[mx.array(index.reshape(-1))].reshape(r, r, n, n, r, r, cout, cin)
    blocked = blocked * mx.array(mask[..., None, None], dtype=weight.dtype)
    return blocked.transpose(0, 1, 6, 2, 3, 4, 5, 7).reshape(r * r * cout, n, n, r * r * cin)


def conv_blocked(padded: mx.array, weight: mx.array, r: int = 4) -> mx.array:
    """mx.conv2d(padded, weight) ('valid', stride 1) computed on r x r space-to-depth blocks:
    more multiply-adds, but channel counts the tensor cores fill (48 in, 512 out for the 9x9
    3 -> 32 input layer). Padded sides minus k - 1 must be multiples of r."""
    return depth_to_space(mx.conv2d(space_to_depth(padded, r), blocked_weight(weight, r)), r)


def _subpixel_taps() -> np.ndarray:
    """(2, 3, 3) 0/1: [p, a, d] = 1 when tap d of a 3x3 convolution over a 2x nearest-upsampled,
    reflection-padded image, at an output row of parity p, reads low-resolution row offset a - 1
    of the edge-padded low-resolution image."""
    taps = np.zeros((2, 3, 3), np.float32)
    for p in range(2):
        for d in range(3):
            taps[p, (p + d - 1) // 2 + 1, d] = 1
    return taps


def subpixel_weight(weight: mx.array) -> mx.array:
    """A 3x3 convolution's weights (cout, 3, 3, cin), applied after 2x nearest upsampling and
    reflection padding by 1, as the weights (4*cout, 3, 3, cin) of a convolution over the
    low-resolution image edge-padded by 1: one group of cout outputs per output sub-pixel
    (depth_to_space order). Reflecting the upsampled image by one pixel repeats its edge pixel,
    which is the low-resolution edge pixel: hence edge padding."""
    cout, _, _, cin = weight.shape
    taps = mx.array(_subpixel_taps(), dtype=weight.dtype)
    w = mx.einsum("yad,xbe,cdei->yxcabi", taps, taps, weight)
    return w.reshape(4 * cout, 3, 3, cin)


def _edge_slices(x: mx.array) -> mx.array:
    x = mx.concatenate([x[:, :1], x, x[:, -1:]], axis=1)
    return mx.concatenate([x[:, :, :1], x, x[:, :, -1:]], axis=2)


@mx.custom_function
def edge_pad1(x: mx.array) -> mx.array:
    """(B, H, W, C) -> (B, H + 2, W + 2, C), each edge pixel repeated once. Its gradient is one
    pass (kernels.fold_pad); autodiff of the slices would write each into a zero array."""
    return _edge_slices(x)


@edge_pad1.vjp
def _edge_pad1_vjp(primals, cotangent, output):
    return (fold_pad(cotangent, 1, edge=True),)


class TransformerNet(nn.Module):
    """(B, H, W, 3) RGB in [0, 1] -> (B, H, W, 3) stylized RGB (unclipped); H, W multiples of 4."""

    def __init__(self, config: NetConfig = FULL):
        super().__init__()
        self.config = config
        w = config.width
        if config.arch == "shuffle":
            half = 16  # channels at half resolution
            self.down = [ConvLayer(12, half, 3), ConvLayer(4 * half, w, 3)]
            self.down_norms = [InstanceNorm(half), InstanceNorm(w)]
            self.blocks = [ResidualBlock(w) for _ in range(config.res_blocks)]
            self.up = [ConvLayer(w, 4 * half, 3)]
            self.up_norms = [InstanceNorm(4 * half)]
            self.out = ConvLayer(half, 12, 3)
            return
        self.down = [ConvLayer(3, w, 9), ConvLayer(w, 2 * w, 3, 2), ConvLayer(2 * w, 4 * w, 3, 2)]
        self.down_norms = [InstanceNorm(w), InstanceNorm(2 * w), InstanceNorm(4 * w)]
        self.blocks = [ResidualBlock(4 * w) for _ in range(config.res_blocks)]
        self.blocks += [ResidualBlock(4 * w, d) for d in config.dilations]
        self.up = [ConvLayer(4 * w, 2 * w, 3), ConvLayer(2 * w, w, 3)]
        self.up_norms = [InstanceNorm(2 * w), InstanceNorm(w)]
        self.out = ConvLayer(w, 3, 9)

    def __call__(self, x: mx.array, stats: NormStats | None = None) -> mx.array:
        if self.config.arch == "shuffle":
            return self._shuffle(x, stats)
        low = LOW_RES_FORMS and not on_cpu()
        # Every convolution but the last feeds an instance norm, which takes any per-channel
        # constant out again: with the norms' own statistics the biases are skipped (a pass over
        # each activation, and in training over its gradient, for a zero gradient). Shared
        # statistics (tiles) describe the biased outputs, so with them the biases stay.
        biased = stats is not None
        for conv, norm in zip(self.down, self.down_norms):
            y = conv.blocked(x, biased) if low and conv is self.down[0] else conv(x, biased)
            x = nn.relu(_norm(norm, y, stats))
        for block in self.blocks:
            x = block(x, stats)
        for conv, norm in zip(self.up, self.up_norms):
            y = conv.after_upsample(x, biased) if low else conv(upsample2x(x), biased)
            x = nn.relu(_norm(norm, y, stats))
        return (self.out.blocked(x) if low else self.out(x)) * OUTPUT_SCALE

    def _shuffle(self, x: mx.array, stats: NormStats | None) -> mx.array:
        # full -> 1/2 (2x2 blocks, 12 channels) -> 1/4 -> trunk -> 1/2 -> full; the last
        # convolution runs at half resolution over 3x3 neighbours, so 2x2 output blocks blend
        biased = stats is not None  # as in __call__
        for conv, norm in zip(self.down, self.down_norms):
            x = nn.relu(_norm(norm, conv(space_to_depth(x, 2), biased), stats))
        for block in self.blocks:
            x = block(x, stats)
        x = nn.relu(_norm(self.up_norms[0], self.up[0](x, biased), stats))
        x = self.out(depth_to_space(x, 2))
        return depth_to_space(x, 2) * OUTPUT_SCALE

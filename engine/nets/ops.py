"""Array operations the networks, their GPU and CPU passes and the stylizer share: reflection
padding and the gradients of padding (folds), space-to-depth and back, nearest upsampling, and
the framing of an image for a network (margins, padding to a multiple of 4, crops)."""

from __future__ import annotations

import mlx.core as mx


def reflect_slices(x: mx.array, p: int, spare_row: bool = False) -> mx.array:
    rows = [x[:, p:0:-1], x, x[:, -2:-p - 2:-1]]
    if spare_row:
        rows.append(mx.zeros((x.shape[0], 1, *x.shape[2:]), dtype=x.dtype))
    x = mx.concatenate(rows, axis=1)
    return mx.concatenate([x[:, :, p:0:-1], x, x[:, :, -2:-p - 2:-1]], axis=2)


def fold_reflection(g: mx.array, axis: int, p: int) -> mx.array:
    """The gradient of reflection padding along one axis: the padded gradient's middle, plus
    its two margins mirrored back onto the rows they copy (original rows 1..p and n-1-p..n-2)."""
    n = g.shape[axis] - 2 * p

    def cut(start, stop, step=1):
        return g[(slice(None),) * axis + (slice(start, stop, step),)]

    def place(part, before, after):
        widths = [(0, 0)] * g.ndim
        widths[axis] = (before, after)
        return mx.pad(part, widths)

    left = cut(p - 1, None, -1)  # padded rows p-1..0 copy original rows 1..p
    right = cut(n + 2 * p - 1, n + p - 1, -1)  # rows n+2p-1..n+p copy rows n-1-p..n-2
    return cut(p, p + n) + place(left, 1, n - 1 - p) + place(right, n - 1 - p, 1)


def fold_edges(g: mx.array, axis: int, p: int) -> mx.array:
    """The gradient of edge padding by p along one axis: the padded gradient's middle, with
    its first p + 1 rows summed into the first row and its last p + 1 into the last."""
    n = g.shape[axis] - 2 * p

    def cut(start, stop):
        return g[(slice(None),) * axis + (slice(start, stop),)]

    if n == 1:
        return g.sum(axis=axis, keepdims=True)
    first = cut(0, p + 1).sum(axis=axis, keepdims=True)
    last = cut(n - 1 + p, n + 2 * p).sum(axis=axis, keepdims=True)
    return mx.concatenate([first, cut(p + 1, p + n - 1), last], axis=axis)


def space_to_depth(x: mx.array, r: int) -> mx.array:
    """(B, H, W, C) -> (B, H/r, W/r, r*r*C): each r x r block of pixels becomes one position."""
    batch, height, width, channels = x.shape
    x = x.reshape(batch, height // r, r, width // r, r, channels).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, height // r, width // r, r * r * channels)


def depth_to_space(x: mx.array, r: int) -> mx.array:
    """The inverse of space_to_depth."""
    batch, height, width, channels = x.shape
    c = channels // (r * r)
    x = x.reshape(batch, height, width, r, r, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, height * r, width * r, c)


def upsample2x(x: mx.array) -> mx.array:
    """Nearest-neighbour upsampling of (B, H, W, C) by 2."""
    batch, height, width, channels = x.shape
    x = mx.broadcast_to(x[:, :, None, :, None, :], (batch, height, 2, width, 2, channels))
    return x.reshape(batch, height * 2, width * 2, channels)


# Reflected pixels added on every side before the network and cropped after (apply --margin).
# The networks draw a band of their own at an image's edges (a dashed line, a lighter stripe):
# the outer 4 px of a cropped photo's pass land 2-4x as far from a pass with the real
# surroundings as pixels 32 px in, and a 16 px margin moves most of that band out of the picture
# (21-50% closer on all 14 shipped networks; benchmarks/edge_margin.py). A style applies with the
# margin it was trained with (train-style --margin), the shipped ones none: they were trained
# without one, and their band holds part of what they learned to match of the painting's Gram
# statistics (with 16 px, the shipped starry's style distance on pepper rose 68%).
def margins(height: int, width: int, margin: int) -> tuple[int, int]:
    """The margin on the top and bottom, left and right: at most what reflection can give."""
    return min(margin, height - 1), min(margin, width - 1)


def reflect_margin(x: mx.array, top: int, left: int) -> mx.array:
    """`top` reflected rows above and below, `left` reflected columns on either side."""
    if top or left:
        x = mx.pad(x, [(0, 0), (top, top), (left, left), (0, 0)], mode="reflect")
    return x


def pad4(x: mx.array, least: int = 8, top: int = 0, left: int = 0) -> mx.array:
    """Reflect-pad: `top` / `left` margins on both sides of H / W (`margins`), then H and W up to
    multiples of 4 (the network halves them twice) and to at least `least` (the network's
    NetConfig.least_side: its reflection padding at a quarter of the size needs pixels to
    reflect)."""
    x = reflect_margin(x, top, left)
    height, width = x.shape[1:3]
    pad_h = max(least, height + (-height) % 4) - height
    pad_w = max(least, width + (-width) % 4) - width
    if pad_h or pad_w:
        mode = "reflect" if min(height, width) > max(pad_h, pad_w) else "edge"
        x = mx.pad(x, [(0, 0), (0, pad_h), (0, pad_w), (0, 0)], mode=mode)
    return x


def crop(x: mx.array, height: int, width: int, top: int = 0, left: int = 0) -> mx.array:
    return x[:, top:top + height, left:left + width]


def run_framed(run, images: mx.array, least: int = 8, margin: int = 0) -> mx.array:
    """`run` (a network's pass) on `images` with `margin` reflected pixels around them and
    padded as pad4 pads, cropped back to the images' size."""
    height, width = images.shape[1:3]
    top, left = margins(height, width, margin)
    return crop(run(pad4(images, least, top, left)), height, width, top, left)

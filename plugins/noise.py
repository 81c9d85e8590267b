"""The noise generators' images: fractal plasma clouds and a marbled texture (MLX; imported
when an image is made, not when the plugin is registered)."""

import math

import mlx.core as mx

from engine.generators import image_key


def _upsample(grid: mx.array, size: int) -> mx.array:
    """Bilinear upsampling of (N, g, g, C) grids to (N, size, size, C)."""
    cells = grid.shape[1]
    position = mx.linspace(0, cells - 1, size)
    low = mx.floor(position).astype(mx.int32)
    high = mx.minimum(low + 1, cells - 1)
    t = (position - low)[None, :, None, None]
    rows = grid[:, low] * (1 - t) + grid[:, high] * t  # (N, size, g, C)
    t = (position - low)[None, None, :, None]
    return rows[:, :, low] * (1 - t) + rows[:, :, high] * t


def _grids(seed: int, count: int, channels: int, octaves: int) -> list[mx.array]:
    """Octaves of random grids; image i of a seed is the same whatever the count."""
    grids = []
    for octave in range(octaves):
        cells = 2 ** (octave + 2)
        grids.append(mx.stack([
            mx.random.normal((cells, cells, channels),
                             key=image_key(seed, i, octave))
            for i in range(count)]))
    return grids


def fractal_noise(count: int, seed: int, size: int, channels: int = 3, octaves: int = 6,
                  persistence: float = 0.55, towards: tuple[int, mx.array] | None = None
                  ) -> mx.array:
    """Sum of octaves of smooth random grids; each image normalized to [0, 1].

    `towards=(seed_b, t)` blends image 0 of `seed` into image 0 of seed_b along t (count,),
    on a great circle so the noise keeps its strength halfway.
    """
    if towards is None:
        grids = _grids(seed, count, channels, octaves)
    else:
        seed_b, t = towards
        a, b = _grids(seed, 1, channels, octaves), _grids(seed_b, 1, channels, octaves)
        wa = mx.cos(t * math.pi / 2)[:, None, None, None]
        wb = mx.sin(t * math.pi / 2)[:, None, None, None]
        grids = [wa * ga + wb * gb for ga, gb in zip(a, b)]
    total = mx.zeros((count, size, size, channels))
    amplitude = 1.0
    for grid in grids:
        if grid.shape[1] > size:
            break
        total = total + amplitude * _upsample(grid, size)
        amplitude *= persistence
    low = total.min(axis=(1, 2, 3), keepdims=True)
    high = total.max(axis=(1, 2, 3), keepdims=True)
    return (total - low) / (high - low + 1e-6)


def _plasma_paint(field: mx.array) -> mx.array:
    phase = mx.array([0.0, 2.1, 4.2])
    return 0.5 + 0.5 * mx.sin(2 * math.pi * 1.5 * field + phase)


def plasma(count: int, seed: int, size: int) -> mx.array:
    """Plasma clouds: fractal noise through a cyclic colour palette."""
    return _plasma_paint(fractal_noise(count, seed, size, channels=1))


def plasma_between(seed_a: int, seed_b: int, count: int, size: int) -> mx.array:
    t = mx.linspace(0, 1, count)
    return _plasma_paint(fractal_noise(count, seed_a, size, 1, towards=(seed_b, t)))


def _colours(seed: int, count: int) -> mx.array:
    return mx.stack([mx.random.uniform(shape=(2, 3), key=image_key(seed, i, 100))
                     for i in range(count)])


def _marble_paint(warp: mx.array, colours: mx.array) -> mx.array:
    size = warp.shape[2]
    x = mx.linspace(0, 1, size)[None, None, :, None]
    veins = 0.5 + 0.5 * mx.sin(2 * math.pi * (6 * x + 4 * warp))
    return colours[:, None, None, 0] * veins + colours[:, None, None, 1] * (1 - veins)


def marble(count: int, seed: int, size: int) -> mx.array:
    """A marbled texture: stripes bent by fractal noise, in colours drawn from the seed."""
    return _marble_paint(fractal_noise(count, seed, size, channels=1), _colours(seed, count))


def marble_between(seed_a: int, seed_b: int, count: int, size: int) -> mx.array:
    t = mx.linspace(0, 1, count)
    colours = (1 - t)[:, None, None] * _colours(seed_a, 1) + t[:, None, None] * _colours(seed_b, 1)
    return _marble_paint(fractal_noise(count, seed_a, size, 1, towards=(seed_b, t)), colours)

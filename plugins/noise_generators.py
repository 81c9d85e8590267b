"""Generators that need no training: fractal plasma clouds and a colour-field texture."""

import math

import mlx.core as mx

from engine.generators import Generator
from engine.hookspecs import hookimpl


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


def fractal_noise(count: int, seed: int, size: int, channels: int = 3,
                  octaves: int = 6, persistence: float = 0.55) -> mx.array:
    """Sum of octaves of smooth random grids; each image normalized to [0, 1]."""
    key = mx.random.key(seed)
    total = mx.zeros((count, size, size, channels))
    amplitude = 1.0
    for octave, subkey in enumerate(mx.random.split(key, octaves)):
        cells = min(size, 2 ** (octave + 2))
        grid = mx.random.normal((count, cells, cells, channels), key=subkey)
        total = total + amplitude * _upsample(grid, size)
        amplitude *= persistence
    low = total.min(axis=(1, 2, 3), keepdims=True)
    high = total.max(axis=(1, 2, 3), keepdims=True)
    return (total - low) / (high - low + 1e-6)


def plasma(count: int, seed: int, size: int) -> mx.array:
    """Plasma clouds: fractal noise through a cyclic colour palette."""
    field = fractal_noise(count, seed, size, channels=1)
    phase = mx.array([0.0, 2.1, 4.2])
    return 0.5 + 0.5 * mx.sin(2 * math.pi * 1.5 * field + phase)


def marble(count: int, seed: int, size: int) -> mx.array:
    """A marbled texture: stripes bent by fractal noise, in colours drawn from the seed."""
    warp = fractal_noise(count, seed, size, channels=1)
    x = mx.linspace(0, 1, size)[None, None, :, None]
    veins = 0.5 + 0.5 * mx.sin(2 * math.pi * (6 * x + 4 * warp))
    colours = mx.random.uniform(shape=(count, 2, 3), key=mx.random.key(seed + 1))
    return colours[:, None, None, 0] * veins + colours[:, None, None, 1] * (1 - veins)


@hookimpl
def register_generators(register):
    register(Generator("plasma", plasma, "fractal plasma clouds (no training)"))
    register(Generator("marble", marble, "marbled stripes bent by fractal noise (no training)"))

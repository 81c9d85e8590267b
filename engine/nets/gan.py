"""A DCGAN (Radford et al. 2016): the generator and discriminator networks and their latents.

Generator: latent -> 4x4 -> (nearest upsample, 3x3 conv, batch norm, ReLU) per doubling -> tanh.
Discriminator: 4x4 stride-2 convolutions with batch norm (none on the first) and leaky ReLU.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import mlx.core as mx
import mlx.nn as nn

from ..errors import UsageError
from ..generators import image_key
from ..io.weightfile import parse_json

MAX_SIZE = 1024  # the largest generator image: 1024 px is already ~1 GB of activations a batch


@dataclass(frozen=True)
class GanConfig:
    """Image size (a power of two, at least 8), latent length and the narrowest layer's width."""

    size: int = 64
    latent: int = 128
    width: int = 64

    @property
    def doublings(self) -> int:
        return int(math.log2(self.size)) - 2

    def check(self) -> None:
        if self.size < 8 or self.size > MAX_SIZE or self.size & (self.size - 1):
            raise UsageError(f"--size {self.size}: use a power of two from 8 to {MAX_SIZE} "
                             "(64, 128)")
        if self.latent < 1 or self.width < 1:
            raise UsageError("the latent length and the width must be positive")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> GanConfig:
        """The configuration a file declares; ValueError outside what fits in memory."""
        values = parse_json(text, "the generator configuration")
        if not isinstance(values, dict):
            raise ValueError("the generator configuration is not a JSON object")
        for key, high in (("size", MAX_SIZE), ("latent", 4096), ("width", 1024)):
            value = values.get(key)
            if type(value) is not int or not 1 <= value <= high:
                raise ValueError(f"{key} {value!r} is not a whole number in 1..{high}")
        config = cls(values["size"], values["latent"], values["width"])
        try:
            config.check()
        except UsageError as error:
            raise ValueError(str(error)) from None
        return config


class GeneratorNet(nn.Module):
    def __init__(self, config: GanConfig):
        super().__init__()
        self.config = config
        channels = [config.width * 2 ** (config.doublings - i) for i in range(config.doublings + 1)]
        self.project = nn.Linear(config.latent, 4 * 4 * channels[0])
        self.project_norm = nn.BatchNorm(channels[0])
        self.convs = [nn.Conv2d(a, b, 3, padding=1) for a, b in zip(channels, channels[1:])]
        self.norms = [nn.BatchNorm(b) for b in channels[1:]]
        self.out = nn.Conv2d(channels[-1], 3, 3, padding=1)

    def __call__(self, z: mx.array) -> mx.array:
        """(N, latent) -> (N, size, size, 3) in [-1, 1]."""
        x = self.project(z).reshape(z.shape[0], 4, 4, -1)
        x = nn.relu(self.project_norm(x))
        for conv, norm in zip(self.convs, self.norms):
            n, h, w, c = x.shape
            x = mx.broadcast_to(x[:, :, None, :, None], (n, h, 2, w, 2, c))
            x = nn.relu(norm(conv(x.reshape(n, 2 * h, 2 * w, c))))
        return mx.tanh(self.out(x))


class Discriminator(nn.Module):
    def __init__(self, config: GanConfig):
        super().__init__()
        channels = [3] + [config.width * 2 ** i for i in range(config.doublings)]
        self.convs = [nn.Conv2d(a, b, 4, stride=2, padding=1)
                      for a, b in zip(channels, channels[1:])]
        self.norms = [nn.BatchNorm(b) for b in channels[2:]]
        self.out = nn.Linear(4 * 4 * channels[-1], 1)

    def __call__(self, x: mx.array) -> mx.array:
        """(N, size, size, 3) in [-1, 1] -> (N,) logits."""
        x = nn.leaky_relu(self.convs[0](x), 0.2)
        for conv, norm in zip(self.convs[1:], self.norms):
            x = nn.leaky_relu(norm(conv(x)), 0.2)
        return self.out(x.reshape(x.shape[0], -1))[:, 0]


def latents(seed: int, count: int, latent: int, first: int = 0) -> mx.array:
    """Image i of a seed always gets the same latent, whatever the count."""
    return mx.stack([mx.random.normal((latent,), key=image_key(seed, first + i))
                     for i in range(count)]) if count else mx.zeros((0, latent))


def slerp(a: mx.array, b: mx.array, t: mx.array) -> mx.array:
    """Spherical interpolation between latents a and b (latent,) at fractions t (N,)."""
    cos = mx.sum(a * b) / (mx.linalg.norm(a) * mx.linalg.norm(b))
    omega = mx.arccos(mx.clip(cos, -0.9999, 0.9999))
    t = t[:, None]
    return (mx.sin((1 - t) * omega) * a + mx.sin(t * omega) * b) / mx.sin(omega)

"""Trained generator files (safetensors with their configuration in metadata), and the registry
Generator a file becomes."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

from .. import __version__
from ..errors import WeightsError
from ..generators import Generator
from ..nets.gan import GanConfig, GeneratorNet, latents, slerp
from .style_files import OVERRIDES, engine_home, save_atomic
from .weightfile import expect_shapes, load_arrays, read_header

FORMAT = "engine-generator"


def generator_dir() -> Path:
    """Where `engine train-generator` saves generators and where the registry finds them."""
    return engine_home() / "generators"


def save_generator(path: Path, generator: GeneratorNet, training: dict, epochs: int,
                   overrides: bool = False) -> None:
    metadata = {"format": FORMAT, "config": generator.config.to_json(),
                "training": json.dumps(training), "epochs": str(epochs),
                "engine_version": __version__, **({OVERRIDES: "true"} if overrides else {})}
    # batch-norm running statistics are part of the state a sample needs
    arrays = {k: v.astype(mx.float16) for k, v in tree_flatten(generator.parameters())}
    save_atomic(path, arrays, metadata)


def load_generator(path) -> tuple[GeneratorNet, dict]:
    """A trained generator network (in eval mode) and its metadata; WeightsError if unusable."""
    header = read_header(path, FORMAT, "generator")
    try:
        config = GanConfig.from_json(header.metadata.get("config", "null"))
    except ValueError as error:
        raise WeightsError(f"{path}: unusable generator ({error}); replace the file with a "
                           "good copy") from None
    net = GeneratorNet(config)
    expect_shapes(header, {k: v.shape for k, v in tree_flatten(net.parameters())}, "generator")
    arrays = load_arrays(header, "generator")
    net.update(tree_unflatten([(k, v.astype(mx.float32)) for k, v in arrays.items()]))
    mx.eval(net.parameters())
    net.eval()
    return net, header.metadata


def as_generator(name: str, path, description: str = "", from_user: bool = False
                 ) -> Generator:
    """A registry Generator backed by a trained generator file (loaded on first use)."""
    loaded: list[GeneratorNet] = []
    config, overrides = None, False
    try:
        metadata = read_header(path, FORMAT, "generator").metadata
        overrides = metadata.get(OVERRIDES) == "true"
        config = GanConfig.from_json(metadata.get("config", "null"))
    except (WeightsError, ValueError):
        pass  # load_generator reports the problem when the generator is used

    def network() -> GeneratorNet:
        if not loaded:
            loaded.append(load_generator(path)[0])
        return loaded[0]

    def decode(z: mx.array, size: int) -> mx.array:
        images = (network()(z) + 1) / 2
        if size != images.shape[1]:
            from .images import resize
            images = mx.concatenate([resize(images[i:i + 1], size, size)
                                     for i in range(images.shape[0])])
        return images

    def make(count: int, seed: int, size: int) -> mx.array:
        return decode(latents(seed, count, network().config.latent), size)

    def interpolate(seed_a: int, seed_b: int, count: int, size: int) -> mx.array:
        latent = network().config.latent
        t = mx.linspace(0, 1, count)
        return decode(slerp(latents(seed_a, 1, latent)[0], latents(seed_b, 1, latent)[0], t), size)

    return Generator(name, make, description or "GAN trained with engine train-generator",
                     default_size=config.size if config else 64, interpolate=interpolate,
                     from_user=from_user, overrides=overrides)

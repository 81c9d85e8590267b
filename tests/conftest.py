import os
import signal
from pathlib import Path
from unittest import mock

import engine  # noqa: F401 - first, so that its BLAS is loaded before mlx.core
import mlx.core as mx
import numpy as np
import pytest
from PIL import Image

from engine.io.vgg_weights import save_vgg
from engine.nets.vgg import VGG, tiny_spec

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
USER_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")

# A suite started in the background (`pytest &` in a script) inherits SIGINT ignored, and so
# would every engine process it starts, which then never sees Ctrl-C. With a handler here the
# children start with the default disposition, and the signal tests check the engine.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    """Each test gets its own cache and style folder; real VGG weights stay shared (see below)."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("ENGINE_HOME", str(home / "engine"))
    monkeypatch.delenv("ENGINE_VGG_WEIGHTS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    yield home


@pytest.fixture(scope="session")
def tiny_vgg() -> VGG:
    mx.random.seed(1)
    model = VGG(tiny_spec())
    mx.eval(model.parameters())
    return model


@pytest.fixture(scope="session")
def tiny_vgg_file(tiny_vgg, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vgg") / "tiny-vgg.safetensors"
    save_vgg(tiny_vgg, path, source="random, for tests")
    return path


@pytest.fixture(scope="session")
def real_vgg_weights() -> Path:
    """The real VGG16 weights, fetched once into the user's own cache (CI fetches them once)."""
    from engine.io.vgg_weights import cache_dir, resolve_weights
    from engine.nets.vgg import VGG16

    with mock.patch.dict(os.environ, {"XDG_CACHE_HOME": str(USER_CACHE)}):
        try:
            return resolve_weights(VGG16)
        except Exception as error:  # offline with no cache: fail loudly, never pretend
            pytest.fail(f"real VGG16 weights unavailable (cache {cache_dir()}): {error}")


def write_image(path: Path, size=(20, 14), mode="RGB", seed=0) -> Path:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1, "LA": 2}[mode]
    pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode=mode).save(path)
    return path


@pytest.fixture
def photo(tmp_path) -> Path:
    return write_image(tmp_path / "photo.png", (24, 18), seed=1)


@pytest.fixture
def painting(tmp_path) -> Path:
    return write_image(tmp_path / "painting.png", (20, 20), seed=2)


@pytest.fixture(scope="session")
def tiny_style_file(tmp_path_factory) -> Path:
    from engine.io.style_files import save_style
    from engine.nets.transformer import NetConfig, TransformerNet

    path = tmp_path_factory.mktemp("style") / "tiny.safetensors"
    save_style(path, TransformerNet(NetConfig(4, 1)), {"size": 32}, 1, "0" * 64)
    return path


def varied_net(config, seed: int = 0):
    """A TransformerNet whose norms' scales and shifts and convolutions' biases are away from
    1 and 0 (fresh ones would hide a wiring slip between two forward paths)."""
    from engine.nets.transformer import TransformerNet

    mx.random.seed(seed)
    net = TransformerNet(config)
    blocks = net.blocks
    for norm in [*net.down_norms, *net.up_norms, *(n for b in blocks for n in (b.norm1, b.norm2))]:
        norm.weight = mx.random.uniform(0.5, 1.5, norm.weight.shape)
        norm.bias = mx.random.normal(norm.bias.shape) * 0.3
    for layer in [*net.down, *net.up, net.out, *(c for b in blocks for c in (b.conv1, b.conv2))]:
        layer.conv.bias = mx.random.normal(layer.conv.bias.shape)
    mx.eval(net.parameters())
    return net

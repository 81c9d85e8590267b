"""Trained style files: a TransformerNet's weights in safetensors, its configuration in metadata."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from .. import __version__
from ..errors import UsageError, WeightsError
from ..nets.transformer import NetConfig, TransformerNet
from .atomic import atomic_write, describe
from .weightfile import Header, expect_shapes, int_field, json_field, load_arrays, read_header

FORMAT = "engine-style"


def engine_home() -> Path:
    """The user's engine folder: $ENGINE_HOME, else $XDG_DATA_HOME/engine (~/.local/share)."""
    if os.environ.get("ENGINE_HOME"):
        return Path(os.environ["ENGINE_HOME"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "engine"


def style_dir() -> Path:
    """Where `engine train-style` saves styles and where the registry finds them."""
    return engine_home() / "styles"


@dataclass
class StyleInfo:
    """What a style file says about itself (read from metadata, without loading the weights)."""

    path: Path
    config: NetConfig
    training: dict = field(default_factory=dict)
    steps: int = 0
    style_sha256: str = ""
    engine_version: str = ""
    parameters: int = 0  # the network's weights, counted from the file's header

    @property
    def preview(self) -> Path | None:
        candidate = self.path.with_suffix(".png")
        return candidate if candidate.is_file() else None

# safetensors' names for numpy's dtypes (kind and size); bfloat16, which numpy lacks, is carried
# as its 16-bit patterns and named BF16
_TAGS = {"f2": "F16", "f4": "F32", "f8": "F64", "i1": "I8", "i2": "I16", "i4": "I32",
         "i8": "I64", "u1": "U8", "u2": "U16", "u4": "U32", "u8": "U64", "b1": "BOOL"}


HostArrays = dict[str, tuple[str, np.ndarray]]


def host_arrays(arrays: dict[str, mx.array]) -> HostArrays:
    """The arrays copied into host memory as (safetensors dtype, numpy array): a snapshot that
    `write_atomic` can write on another thread while the GPU goes on."""
    host = {}
    for key, value in arrays.items():
        if value.dtype == mx.bfloat16:
            host[key] = ("BF16", np.array(value.view(mx.uint16)))
        else:
            array = np.array(value, order="C")  # (ascontiguousarray would make scalars 1-d)
            host[key] = (_TAGS[array.dtype.str[1:]], array)
    return host


def _write_safetensors(stream, host: HostArrays, metadata: dict[str, str]) -> None:
    header, offset = {"__metadata__": metadata}, 0
    for key, (tag, array) in host.items():
        header[key] = {"dtype": tag, "shape": list(array.shape),
                       "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    stream.write(len(encoded).to_bytes(8, "little") + encoded)
    for _, array in host.values():
        stream.write(array.reshape(-1).view(np.uint8))  # its bytes, not copied


def write_atomic(path: Path, host: HostArrays, metadata: dict[str, str]) -> None:
    """Write safetensors to a temporary file beside `path`, then rename it over `path`. Touches
    no MLX array, so it may run on a background thread."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WeightsError(f"{path}: could not write ({describe(error)})") from None
    with atomic_write(path, WeightsError) as stream:
        _write_safetensors(stream, host, metadata)


def save_atomic(path: Path, arrays: dict[str, mx.array], metadata: dict[str, str]) -> None:
    """Write safetensors to a temporary file beside `path`, then rename it over `path`."""
    write_atomic(path, host_arrays(arrays), metadata)


# A style file may also hold the Gram matrices of the painting that it was trained to match
# (`targets.<layer>`, float16: 2e-4 relative error), so that `engine apply --refine` can optimize
# an output further on the style's own objective without the painting file.
TARGETS = "targets."


def style_arrays(net: TransformerNet, targets: dict[str, mx.array] | None = None
                 ) -> dict[str, mx.array]:
    """A style file's arrays: the network's parameters in float16, and the style targets."""
    arrays = {k: v.astype(mx.float16) for k, v in tree_flatten(net.parameters())}
    arrays.update({TARGETS + k: v.astype(mx.float16) for k, v in (targets or {}).items()})
    return arrays


def style_metadata(net: TransformerNet, training: dict, steps: int,
                   style_sha256: str, overrides: bool = False) -> dict[str, str]:
    return {"format": FORMAT, "config": net.config.to_json(), "training": json.dumps(training),
            "steps": str(steps), "style_sha256": style_sha256, "engine_version": __version__,
            **({OVERRIDES: "true"} if overrides else {})}


def save_style(path: Path, net: TransformerNet, training: dict, steps: int,
               style_sha256: str, targets: dict[str, mx.array] | None = None) -> None:
    save_atomic(path, style_arrays(net, targets),
                style_metadata(net, training, steps, style_sha256))


OVERRIDES = "overrides"  # metadata key: "true" when the file was made to replace another plugin's


def overrides_other(path: Path) -> bool:
    """Whether a user's file was made to override another plugin's style or generator of its
    name (`--overwrite` on a taken name); False for an unreadable file (the registry reports
    what is wrong with it)."""
    try:
        return read_header(path).metadata.get(OVERRIDES) == "true"
    except WeightsError:
        return False


def check_name(name: str, kind: str) -> None:
    """A style or generator name must be usable as a file name inside the user's folder."""
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise UsageError(f"{name!r} is not a usable {kind} name; use letters, digits, - and _")


def read_metadata(path, fmt: str, kind: str) -> dict[str, str]:
    """The metadata of an engine safetensors file of format `fmt`, read from the header alone
    (the weights are not loaded); WeightsError says what is wrong."""
    return read_header(path, fmt, kind).metadata


# Types of the training settings a style's metadata may hold that the engine reads back
TRAINING_TYPES = {"margin": int, "size": int, "style_size": int, "steps": int, "batch": int,
                  "content_weight": (int, float), "style_weight": (int, float),
                  "tv_weight": (int, float), "content_layer": str, "style_layers": list,
                  "style_image": str, "earlier": list}


def _check_training(training: dict) -> None:
    for key, kind in TRAINING_TYPES.items():
        value = training.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise ValueError(f"training setting {key!r} is {value!r}, of the wrong type")
    margin = training.get("margin") or 0
    if not 0 <= margin <= 1024 or margin % 2:
        raise ValueError(f"margin {margin} is not an even number of pixels in 0..1024")
    if not all(isinstance(layer, str) for layer in training.get("style_layers") or ()):
        raise ValueError("style_layers is not a list of layer names")


def _read(path: Path) -> tuple[Header, StyleInfo]:
    if not Path(path).is_file():
        raise WeightsError(f"{path}: style weights file not found")
    header = read_header(path, FORMAT, "style")
    try:
        config = NetConfig.from_json(header.metadata.get("config", "null"))
        training = json_field(header, "training", dict, {})
        _check_training(training)
        steps = int_field(header, "steps", 0)
    except ValueError as error:
        raise WeightsError(f"{path}: unreadable style metadata ({error}); replace the file "
                           "with a good copy") from None
    weights = sum(math.prod(shape) for name, (_, shape) in header.tensors.items()
                  if not name.startswith(TARGETS))
    info = StyleInfo(Path(path), config, training, steps, header.metadata.get("style_sha256", ""),
                     header.metadata.get("engine_version", ""), weights)
    return header, info


def read_info(path: Path) -> StyleInfo:
    """Check a style file's header and metadata; WeightsError says what is wrong."""
    return _read(path)[1]


def load_style(path: Path) -> tuple[TransformerNet, StyleInfo]:
    """The network of a style file, its tensors checked against its configuration before any
    weight is read."""
    header, info = _read(path)
    net = TransformerNet(info.config)
    expected = {k: v.shape for k, v in tree_flatten(net.parameters())}
    expect_shapes(header, expected, "network", ignore_prefix=TARGETS)
    weights = load_arrays(header, "style")
    net.load_weights([(k, v.astype(mx.float32)) for k, v in weights.items()
                      if not k.startswith(TARGETS)], strict=True)
    mx.eval(net.parameters())
    return net, info


def load_targets(path: Path) -> dict[str, mx.array]:
    """The style targets a style file holds ({} if it has none), float32, by VGG layer."""
    header, _ = _read(path)
    for key, (_, shape) in header.tensors.items():
        if key.startswith(TARGETS) and (len(shape) not in (2, 3) or shape[-1] != shape[-2]):
            raise WeightsError(f"{path}: style target {key!r} is not a square Gram matrix")
    arrays = load_arrays(header, "style")
    return {k[len(TARGETS):]: v.astype(mx.float32) for k, v in arrays.items()
            if k.startswith(TARGETS)}

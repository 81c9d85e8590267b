"""One validated reader for the engine's safetensors files (styles, generators, checkpoints).

Everything a file declares is checked before anything is allocated for it: the header's length
against the file's size, its JSON (depth-limited), the metadata's types, and every tensor's
dtype, shape and byte range against the file. A file that fails any check raises WeightsError
with one line saying what is wrong; the weights are then read only as the shapes that the
caller expects.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import WeightsError

MAX_HEADER = 100_000_000  # bytes of JSON; the engine's largest file has a few kB


MAX_DEPTH = 64  # nesting of the header's JSON (an engine file has 3)


ITEM_SIZES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8, "I8": 1, "I16": 2, "I32": 4, "I64": 8,
              "U8": 1, "U16": 2, "U32": 4, "U64": 8, "BOOL": 1}


@dataclass
class Header:
    """A safetensors file's metadata (str -> str) and tensors (name -> (dtype, shape))."""

    path: Path
    metadata: dict[str, str]
    tensors: dict[str, tuple[str, tuple[int, ...]]]


def _depth(text: str) -> int:
    """The deepest nesting of brackets in a JSON text, strings skipped (before json.loads,
    whose recursion a crafted header could exhaust)."""
    deepest = depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def parse_json(text: str, what: str):
    """json.loads for text from a file: ValueError (with `what`) for bad or deeply nested JSON."""
    if _depth(text) > MAX_DEPTH:
        raise ValueError(f"{what} is nested more than {MAX_DEPTH} levels deep")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError, UnicodeDecodeError) as error:
        raise ValueError(f"{what} is not valid JSON ({error})") from None


def read_header(path: str | os.PathLike, fmt: str | None = None, kind: str = "weights") -> Header:
    """The checked header of a safetensors file; `fmt`, if given, must be its metadata's
    'format'. WeightsError names the file and the problem."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise WeightsError(f"{path}: is a folder, not a {kind} file")
        with open(path, "rb") as stream:
            prefix = stream.read(8)
            if len(prefix) < 8:
                raise ValueError("the file is too short to be safetensors")
            length = int.from_bytes(prefix, "little")
            if not 2 <= length <= min(MAX_HEADER, size - 8):
                raise ValueError(f"its header length ({length} bytes) does not fit the file "
                                 f"({size} bytes)")
            text = stream.read(length).decode("utf-8")
        header = parse_json(text, "the header")
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise ValueError("its metadata is not a map of strings")
        tensors = _check_tensors(header, size - 8 - length)
    except FileNotFoundError:
        raise WeightsError(f"{path}: {kind} file not found") from None
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise WeightsError(f"{path}: not a readable safetensors file ({error}); "
                           "replace it with a good copy") from None
    if fmt is not None and metadata.get("format") != fmt:
        raise WeightsError(f"{path}: not an engine {kind} file (no '{fmt}' metadata)")
    return Header(path, metadata, tensors)


def _check_tensors(header: dict, data_size: int) -> dict[str, tuple[str, tuple[int, ...]]]:
    tensors = {}
    for name, entry in header.items():
        if not isinstance(entry, dict):
            raise ValueError(f"tensor {name!r} is not described by an object")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in ITEM_SIZES:
            raise ValueError(f"tensor {name!r} has an unknown dtype {dtype!r}")
        if not isinstance(shape, list) or len(shape) > 8 or not all(
                type(n) is int and 0 <= n < 2**40 for n in shape):
            raise ValueError(f"tensor {name!r} has a bad shape {shape!r}")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(
                type(n) is int for n in offsets):
            raise ValueError(f"tensor {name!r} has bad data offsets")
        begin, end = offsets
        if not 0 <= begin <= end <= data_size:
            raise ValueError(f"tensor {name!r} lies outside the file (truncated?)")
        if end - begin != math.prod(shape) * ITEM_SIZES[dtype]:
            raise ValueError(f"tensor {name!r}: its shape {shape} does not match its "
                             f"{end - begin} bytes")
        tensors[name] = (dtype, tuple(shape))
    return tensors


def expect_shapes(header: Header, expected: dict[str, tuple[int, ...]], kind: str,
                  ignore_prefix: str | tuple[str, ...] | None = None) -> None:
    """The file holds exactly the tensors `expected` (name -> shape), apart from those under
    `ignore_prefix`; WeightsError otherwise (checked before any weight is read)."""
    held = {k: shape for k, (_, shape) in header.tensors.items()
            if not (ignore_prefix and k.startswith(ignore_prefix))}
    missing = sorted(set(expected) - set(held))
    extra = sorted(set(held) - set(expected))
    wrong = sorted(k for k in set(held) & set(expected) if tuple(held[k]) != tuple(expected[k]))
    if missing or extra or wrong:
        detail = (f"missing {missing[0]!r}" if missing else f"unexpected {extra[0]!r}" if extra
                  else f"{wrong[0]!r} is {list(held[wrong[0]])}, not {list(expected[wrong[0]])}")
        raise WeightsError(f"{header.path}: weights do not match the {kind} its metadata "
                           f"describes ({detail}); replace the file with a good copy")


def load_arrays(header: Header, kind: str = "weights") -> dict:
    """The arrays of a checked file (MLX arrays, as stored)."""
    import mlx.core as mx

    try:
        return mx.load(str(header.path))
    except (ValueError, RuntimeError, OSError) as error:
        raise WeightsError(f"{header.path}: unreadable {kind} file ({error}); replace it with "
                           "a good copy") from None


def json_field(header: Header, key: str, kind: type, default=None):
    """A metadata field holding JSON of the type `kind` (dict, list, ...); `default` when the
    field is absent; ValueError when it is of another type."""
    text = header.metadata.get(key)
    if text is None:
        if default is None:
            raise ValueError(f"its metadata lacks {key!r}")
        return default
    value = parse_json(text, f"metadata {key!r}")
    if not isinstance(value, kind):
        raise ValueError(f"metadata {key!r} is not a JSON {kind.__name__}")
    return value


def int_field(header: Header, key: str, default: int | None = None, low: int = 0,
              high: int = 2**62) -> int:
    """A metadata field holding a whole number in low..high."""
    text = header.metadata.get(key)
    if text is None:
        if default is None:
            raise ValueError(f"its metadata lacks {key!r}")
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"metadata {key!r} is not a whole number ({text[:40]!r})") from None
    if not low <= value <= high:
        raise ValueError(f"metadata {key!r} is {value}, outside {low}..{high}")
    return value

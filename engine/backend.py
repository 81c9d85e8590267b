"""The one backend switch: what kind of device the engine computes on, resolved from MLX's
default device each time it is asked (a program may change the device). Every choice of a
path, a precision or a default size goes through `backend()`.

- `cpu`: MLX's CPU backend. The fast network runs in its padded layout (nets/cpu_forward.py),
  convolutions as shifted matrix products (nets/transformer.py), in float32.
- `cuda`: an NVIDIA GPU. The CUDA kernels (nets/kernels.py) and the fused pass of the full
  network (nets/fused.py), in float16.
- `generic`: any other accelerator, Apple silicon's Metal among them: the networks' plain MLX
  ops under mx.compile, no CUDA kernels (their MLX stand-ins), in float16.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import mlx.core as mx

from . import kernel_cache

BACKENDS = ("cpu", "cuda", "generic")
_forced: list[str] = []  # (tests: `forced("generic")` runs a Mac's path on this CPU)


def backend() -> str:
    if _forced:
        return _forced[-1]
    if mx.default_device() == mx.cpu:
        return "cpu"
    if not mx.cuda.is_available():
        return "generic"
    kernel_cache.seed_once()  # the shipped kernels, before anything compiles
    return "cuda"


def on_cpu() -> bool:
    """The CPU's paths: the padded-layout pass, matrix-product convolutions, float32."""
    return backend() == "cpu"


def uses_cuda_kernels() -> bool:
    return backend() == "cuda"


@contextlib.contextmanager
def forced(name: str) -> Iterator[None]:
    """Take the paths of backend `name` whatever the device (a test of another machine's path,
    on the device at hand)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; one of {', '.join(BACKENDS)}")
    _forced.append(name)
    try:
        yield
    finally:
        _forced.pop()

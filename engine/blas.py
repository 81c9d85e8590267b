"""A fast BLAS for MLX on Linux CPUs, loaded before MLX itself.

The `mlx[cpu]` wheel for Linux links the reference (netlib) BLAS: its `cblas_sgemm`, which every
convolution and matrix product on the CPU ends in, runs at a few GFLOP/s. Intel's MKL, from PyPI
(the `mkl` package, pulled in by `pip install "engine[cpu]"` on x86-64 Linux), exports the same
CBLAS and LAPACK symbols. Loading it with RTLD_GLOBAL *before* `mlx.core` is imported puts it
ahead of the reference library when the dynamic linker binds MLX's symbols, so MLX runs on MKL
with no rebuild. Anything going wrong leaves MLX on its own BLAS (slow, but the same results).

`ENGINE_BLAS` chooses: `auto` (default: MKL when installed), `reference` (never preload), or a
path to a shared library that exports `cblas_sgemm` (OpenBLAS, say).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_RTLD_GLOBAL = getattr(os, "RTLD_GLOBAL", 0x100)


@dataclass
class BlasState:
    requested: str            # the ENGINE_BLAS setting
    library: str | None       # the file loaded ahead of MLX, if any
    reason: str               # why this library, or why none

    @property
    def fast(self) -> bool:
        return self.library is not None


_state = BlasState("auto", None, "not loaded yet")


def _mkl_library() -> Path | None:
    """libmkl_rt from the installed `mkl` distribution (in <prefix>/lib, not site-packages)."""
    from importlib import metadata

    try:
        files = metadata.files("mkl") or []
    except metadata.PackageNotFoundError:
        return None
    candidates = [f for f in files if Path(str(f)).name.startswith("libmkl_rt.so")]
    for entry in sorted(candidates, key=lambda f: str(f), reverse=True):
        path = Path(metadata.distribution("mkl").locate_file(entry)).resolve()
        if path.is_file():
            return path
    return None


def load() -> BlasState:
    """Preload the fast BLAS once; must run before the first `import mlx.core` to take effect."""
    import ctypes

    global _state
    if _state.reason != "not loaded yet":
        return _state
    requested = os.environ.get("ENGINE_BLAS", "auto").strip() or "auto"
    if requested == "reference":
        _state = BlasState(requested, None, "ENGINE_BLAS=reference")
        return _state
    if not sys.platform.startswith("linux"):
        _state = BlasState(requested, None, f"not needed on {sys.platform} (MLX uses the system's)")
        return _state
    if "mlx.core" in sys.modules:
        _state = BlasState(requested, None, "mlx.core was imported before engine")
        return _state
    if requested == "auto":
        path = _mkl_library()
        if path is None:
            _state = BlasState(requested, None, "MKL is not installed (pip install 'engine[cpu]')")
            return _state
    else:
        path = Path(requested)
    try:
        lib = ctypes.CDLL(str(path), mode=_RTLD_GLOBAL)
        lib.cblas_sgemm  # noqa: B018 - raises AttributeError when the symbol is missing
    except (OSError, AttributeError) as exc:
        _state = BlasState(requested, None, f"could not load {path}: {exc}")
        return _state
    _state = BlasState(requested, str(path), "loaded before mlx.core")
    return _state


def state() -> BlasState:
    return _state


def sgemm_provider() -> str | None:
    """The file whose `cblas_sgemm` the process resolves first (what MLX binds to), if any."""
    import ctypes

    class DlInfo(ctypes.Structure):
        _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                    ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]

    try:
        process = ctypes.CDLL(None)
        address = ctypes.cast(process.cblas_sgemm, ctypes.c_void_p)
        libdl = ctypes.CDLL("libc.so.6")
        info = DlInfo()
        if libdl.dladdr(address, ctypes.byref(info)) == 0 or not info.dli_fname:
            return None
        return info.dli_fname.decode()
    except (OSError, AttributeError):
        return None


class _BeforeMLX:
    """A meta-path finder that runs `prepare` when MLX is first imported, then steps aside."""

    def __init__(self, prepare: Callable[[], None]):
        self.prepare = prepare

    def find_spec(self, name, path=None, target=None):
        if name == "mlx" or name.startswith("mlx."):
            sys.meta_path.remove(self)
            self.prepare()
        return None  # the import itself goes on as usual


def before_mlx(prepare: Callable[[], None]) -> None:
    """Run `prepare` (loading the BLAS, say) at MLX's first import; at once if MLX is imported
    already."""
    if "mlx" in sys.modules or "mlx.core" in sys.modules:
        prepare()
    elif not any(isinstance(finder, _BeforeMLX) for finder in sys.meta_path):
        sys.meta_path.insert(0, _BeforeMLX(prepare))

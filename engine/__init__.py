"""engine: neural style transfer and image generation on MLX."""

import os

from . import blas

# MLX's CUDA backend records every kernel into CUDA graphs by default; for the style networks the
# graph bookkeeping costs more than it saves (H100, one run, interleaved A/B/A/B, ms per frame:
# 512x512 4.3-4.9 -> 2.6-3.2, 1920x1080 batch 8 6.1 -> 5.6-5.8; benchmarks/README.md). MLX reads
# the variable once, at the first kernel; MLX_USE_CUDA_GRAPHS=1 in the environment restores them.
os.environ.setdefault("MLX_USE_CUDA_GRAPHS", "0")


def _kernel_cache() -> str:
    """Where MLX's CUDA backend keeps the kernels it compiles (NVRTC, 25-90 s on a fresh machine):
    the user's cache folder, per MLX version, instead of MLX's default under /tmp, which a reboot
    or a /tmp cleaner empties."""
    from importlib.metadata import PackageNotFoundError, version

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    try:
        mlx = version("mlx")
    except PackageNotFoundError:
        mlx = "unknown"
    return os.path.join(base, "engine", f"mlx-{mlx}", "ptx")


def _prepare_mlx() -> None:
    """Run as MLX is first imported (not before: a command that never computes, `engine --help`,
    pays for none of it). MLX binds its BLAS symbols when it is loaded: the BLAS goes first."""
    os.environ.setdefault("MLX_PTX_CACHE_DIR", _kernel_cache())
    blas.load()


blas.before_mlx(_prepare_mlx)

__version__ = "0.1.0"

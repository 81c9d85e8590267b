"""MLX's compiled CUDA kernels, shipped with the engine for the GPUs and the MLX version it was
built with.

MLX's CUDA backend compiles every kernel it meets with NVRTC and keeps the result in a folder
(`MLX_PTX_CACHE_DIR`, which `import engine` points at `~/.cache/engine/mlx-VERSION/ptx`). On a
fresh machine, compiling the default training step takes minutes (212 s on an H100), the first
`engine apply` ~8 s. The engine ships those files, `weights/kernels/mlx-VERSION-ARCH.tar.xz`,
and copies them into the cache folder the first time a process computes on such a GPU: a file
the folder lacks is added, none is overwritten, and a stamp file records that it was done.

Pack them on a warm machine, after the commands they serve have run once:
    python -m engine.kernel_cache pack weights/kernels
"""

from __future__ import annotations

import io
import os
import re
import sys
from pathlib import Path

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.+-]{1,255}$")  # (255: a file name's limit)
_seeded = False


def cache_folder() -> Path:
    """The folder MLX reads and writes its compiled kernels in (engine/__init__ sets it)."""
    from . import _kernel_cache

    return Path(os.environ.get("MLX_PTX_CACHE_DIR") or _kernel_cache())


def archive_name(mlx_version: str, architecture: str) -> str:
    arch = re.sub(r"[^A-Za-z0-9_]", "", architecture) or "unknown"
    return f"mlx-{mlx_version}-{arch}.tar.xz"


def shipped_folder() -> Path:
    from importlib.resources import files

    return Path(str(files("engine_weights") / "kernels"))


def device() -> tuple[str, str]:
    """(MLX's version, the GPU's architecture as MLX names it, e.g. sm_90)."""
    import mlx.core as mx

    return mx.__version__, str(mx.device_info().get("architecture", ""))


def seed_once() -> int:
    """`seed()` once a process; a failure to seed costs the compilation only, never a command.
    (Its modules load here: a CPU's commands never import them.)"""
    global _seeded
    if _seeded:
        return 0
    _seeded = True
    import lzma
    import tarfile

    try:
        return seed(cache_folder(), shipped_folder(), *device())
    except (OSError, EOFError, lzma.LZMAError, tarfile.TarError, ValueError, RuntimeError):
        return 0


def seed(cache: Path, shipped: Path, mlx_version: str, architecture: str) -> int:
    """Copy the shipped kernels for this MLX version and GPU architecture into `cache`; the
    number of files added. Nothing is overwritten; a stamp beside them makes later calls one
    stat."""
    import tarfile

    archive = Path(shipped) / archive_name(mlx_version, architecture)
    if not archive.is_file():
        return 0
    # the archive by name and size: a repacked one is seeded again, without reading it first
    stamp = Path(cache) / f".shipped-{archive.name}-{archive.stat().st_size}"
    if stamp.exists():
        return 0
    Path(cache).mkdir(parents=True, exist_ok=True)
    added = 0
    with tarfile.open(archive, mode="r:xz") as tar:
        for member in tar:
            # plain files with plain names only: a name never reaches outside the folder
            if not member.isfile() or not _SAFE_NAME.match(member.name) or member.name[0] == ".":
                continue
            target = Path(cache) / member.name
            if target.exists():
                continue
            content = tar.extractfile(member).read()
            temporary = target.with_name(f".{member.name}.{os.getpid()}.part")
            temporary.write_bytes(content)
            os.replace(temporary, target)  # (MLX may read the folder from another process)
            added += 1
    stamp.touch()
    return added


def pack(cache: Path, out_folder: Path, mlx_version: str, architecture: str) -> Path:
    """The kernels in `cache` as `out_folder/mlx-VERSION-ARCH.tar.xz` (sorted, no owners or
    times: the same files give the same archive)."""
    import tarfile

    names = sorted(p.name for p in Path(cache).iterdir()
                   if p.is_file() and not p.name.startswith("."))
    odd = [name for name in names if not _SAFE_NAME.match(name)]
    if odd:  # seed() would leave them out
        raise ValueError(f"{cache}: kernel file names seed() would not take: {odd[:3]}")
    if not names:
        raise ValueError(f"{cache} holds no kernels; run the commands to ship once first")
    out = Path(out_folder) / archive_name(mlx_version, architecture)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz", preset=9) as tar:
        for name in names:
            content = (Path(cache) / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), 0o644
            tar.addfile(info, io.BytesIO(content))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(buffer.getvalue())
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "pack":
        sys.exit("usage: python -m engine.kernel_cache pack OUT_FOLDER")
    import engine  # noqa: F401  (sets MLX_PTX_CACHE_DIR before MLX is loaded)

    path = pack(cache_folder(), Path(sys.argv[2]), *device())
    print(f"{path}: {path.stat().st_size / 2**20:.1f} MB")

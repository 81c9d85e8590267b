"""One atomic writer for every file the engine writes, and the up-front check that a folder
takes files at all.

A file is written to a hidden temporary file beside its target, flushed to disk, and renamed
over the target only when complete: a crash, a kill, a full disk or Ctrl-C leaves the target as
it was (absent or the previous version), never half-written. The temporary file is removed on
every exit path a process can catch (an exception, Ctrl-C, SIGTERM: the CLI turns SIGTERM into
an exception); only SIGKILL can leave one behind, hidden, with a dot name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import OutputError


def describe(error: OSError) -> str:
    """An OSError as a reason a user can act on."""
    if error.errno == errno.ENOSPC or error.errno == errno.EDQUOT:
        return "the disk is full; free some space or write elsewhere"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "the folder is not writable; choose another output folder"
    return error.strerror or str(error)


@contextlib.contextmanager
def temporary_beside(path: Path, suffix: str = ".part") -> Iterator[Path]:
    """A hidden temporary file name in `path`'s folder, removed on the way out unless it was
    renamed; OSError while making it -> OutputError."""
    path = Path(path)
    try:
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
        os.close(handle)
    except OSError as error:
        if not path.parent.is_dir():
            raise OutputError(f"{path}: the folder {path.parent} does not exist; create it "
                              "first") from None
        raise OutputError(f"{path}: could not write ({describe(error)})") from None
    temporary = Path(name)
    try:
        yield temporary
    finally:
        temporary.unlink(missing_ok=True)


def publish(temporary: Path, path: Path) -> None:
    """Make a finished temporary file the target: world-readable, renamed over it."""
    os.chmod(temporary, 0o644)  # mkstemp makes the file private; an output is not
    os.replace(temporary, path)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, error_type: type[Exception] = OutputError
                 ) -> Iterator[BinaryIO]:
    """`with atomic_write(path) as stream: stream.write(...)`: the target appears complete or
    not at all. An OSError on the way (a full disk, a read-only folder) becomes `error_type`
    with a one-line reason."""
    path = Path(path)
    try:
        with temporary_beside(path) as temporary:
            with open(temporary, "wb") as stream:
                yield stream
                stream.flush()
                os.fsync(stream.fileno())
            publish(temporary, path)
    except OutputError as error:
        if error_type is OutputError:
            raise
        raise error_type(str(error)) from None
    except OSError as error:
        raise error_type(f"{path}: could not write ({describe(error)})") from None


def check_writable_folder(folder: str | os.PathLike, what: str = "output") -> Path:
    """Fail before any work if `folder` is missing, not a folder, or takes no new files (a
    read-only mount, no permission: tried with a real file, as permissions alone do not tell
    for root or for network file systems)."""
    folder = Path(folder)
    if not folder.exists():
        raise OutputError(f"{folder}: the {what} folder does not exist; create it first")
    if not folder.is_dir():
        raise OutputError(f"{folder}: is a file, not a folder; give a folder for the {what}")
    try:
        with tempfile.NamedTemporaryFile(prefix=".engine-probe.", dir=folder):
            pass
    except OSError as error:
        raise OutputError(f"{folder}: cannot write there ({describe(error)})") from None
    return folder

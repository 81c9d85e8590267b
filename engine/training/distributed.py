"""Data-parallel runs on MLX's distributed layer, started with `mlx.launch`.

`mlx.launch -n 2 -- engine train-style ...` (the ring backend between local processes; NCCL
between the GPUs of one host; `--hosts` or `--hostfile` for several machines) starts one process
per rank. Without a launcher, `group()` is a group of one and everything runs as usual.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import mlx.core as mx

from ..errors import EngineError

T = TypeVar("T")


_group: mx.distributed.Group | None = None


def group() -> mx.distributed.Group:
    """The process group set up by the launcher (a group of one when not launched)."""
    global _group
    if _group is None:
        hostfile = os.environ.get("MLX_HOSTFILE")
        if hostfile and Path(hostfile).is_file() and not Path(hostfile).read_text().strip():
            os.environ.pop("MLX_HOSTFILE")  # `mlx.launch -n 1` writes an empty one: one process
        try:
            _group = mx.distributed.init()
        except RuntimeError as error:
            raise EngineError(f"MLX's distributed layer did not start ({error}); check the hosts "
                              "and backend given to mlx.launch") from None
    return _group


def rank() -> int:
    return group().rank()


def size() -> int:
    return group().size()


def is_main() -> bool:
    """Rank 0: the process that writes checkpoints and shows progress."""
    return rank() == 0


def shard(items: Sequence[T], index: int | None = None, count: int | None = None) -> list[T]:
    """Every count-th item from index: this process's share (all of them in a group of one)."""
    index = rank() if index is None else index
    count = size() if count is None else count
    return list(items[index::count])


def mean(x: mx.array) -> mx.array:
    """The mean of x over the processes (x itself in a group of one)."""
    g = group()
    return x if g.size() == 1 else mx.distributed.all_sum(x, group=g) / g.size()

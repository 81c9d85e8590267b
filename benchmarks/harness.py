"""The one benchmark harness: every row carries the commit, MLX's version, the device, the
machine and the date; timings are the median (and best) of repeats after a warm-up.

    from harness import emit, timed
    emit({"what": "apply 512", **timed(run, repeats=7)})
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def user_environment() -> dict[str, str]:
    """The environment for a timed process, as a user's shell has it: Python writes its
    bytecode (where PYTHONDONTWRITEBYTECODE is set, every changed module is compiled from its
    source at each start)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def environment() -> dict:
    """What a result depends on, for its row."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    try:
        from importlib.metadata import version

        mlx = version("mlx")
    except Exception:
        mlx = "not installed"
    return {"commit": commit + ("+changes" if dirty else ""), "mlx": mlx, "device": _device(),
            "machine": f"{platform.machine()} {os.cpu_count()} cores",
            "date": datetime.date.today().isoformat()}


def _device() -> str:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=10)
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired):
        pass
    return f"CPU ({platform.processor() or platform.machine()})"


def timed(run: Callable[[], object], repeats: int = 5, warmup: int = 1) -> dict:
    """Seconds of `run()`: the median and the best of `repeats` after `warmup` calls."""
    return alternating({"run": run}, repeats, warmup)["run"]


def alternating(runs: dict[str, Callable[[], object]], repeats: int = 7, warmup: int = 1
                ) -> dict[str, dict]:
    """Several contenders timed in turn, A B A B ..., so that a noisy machine's slow moments
    fall on all of them alike."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    return {name: {"median_s": round(statistics.median(s), 6), "best_s": round(min(s), 6),
                   "repeats": repeats} for name, s in seconds.items()}


_ENV: dict | None = None


def emit(row: dict) -> dict:
    """Print one result as a JSON line, with the environment it was measured in."""
    global _ENV
    _ENV = _ENV or environment()
    row = {**row, **_ENV}
    print(json.dumps(row), flush=True)
    return row

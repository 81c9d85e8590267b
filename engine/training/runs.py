"""What every training run (a style, a generator) shares: the rules for its name and files,
the check that its weights are worth writing, the background writer and the loss plot."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten
from PIL import Image

from ..errors import EngineError, OutputError, UsageError
from ..io.atomic import atomic_write, check_writable_folder, describe
from ..io.style_files import engine_home


def check_new_name(name: str, kind: str, target: Path, checkpoint: Path, resume: bool,
                   overwrite: bool, catalog=None) -> bool:
    """A run may write `target` (the style or generator file) and its run folder: refused when
    that would replace a user's earlier work or take a name that a plugin (a shipped style)
    holds, unless --resume or --overwrite asks for it. Returns whether the new file overrides
    a plugin's entry of that name (`--overwrite` on a taken name)."""
    if resume and overwrite:
        raise UsageError("--resume continues a run and --overwrite starts it over; give one")
    owner = catalog.owner(name) if catalog is not None else None
    if owner is not None and not getattr(owner.item, "from_user", False):
        if not overwrite:
            raise UsageError(f"{name!r} is the name of {owner.kind_name(kind)} of plugin "
                             f"{owner.plugin!r}; choose another --name, or add --overwrite to "
                             f"make your {kind} the one {name!r} means")
        return True
    if resume or overwrite:
        return bool(owner is not None and getattr(owner.item, "overrides", False))
    if checkpoint.is_file():
        raise UsageError(f"a run named {name!r} exists ({checkpoint}); --resume continues it, "
                         "--overwrite starts it over, or choose another --name")
    if target.is_file():
        raise UsageError(f"your {kind} {name!r} exists ({target}); choose another --name, or "
                         "add --overwrite to replace it")
    return False


def all_finite(*trees) -> bool:
    """Whether every array in the trees (a network's parameters, say) is finite."""
    flat = [v for tree in trees for _, v in tree_flatten(tree) if isinstance(v, mx.array)]
    return all(mx.all(mx.isfinite(v)).item() for v in flat
               if mx.issubdtype(v.dtype, mx.floating))


def diverged(step: int, saved: int | None, checkpoint: Path) -> EngineError:
    kept = (f"the last finite checkpoint (step {saved}) is kept: --resume continues from it"
            if saved is not None else "nothing was written")
    return EngineError(f"training diverged at step {step} (a loss or weight is not finite); "
                       f"{kept}; lower --learning-rate or --style-weight")


def painting_network_dir() -> Path:
    """Where `engine train-universal` writes its networks (the registry finds them there)."""
    return engine_home() / "painting-networks"


def run_dir(name: str) -> Path:
    return engine_home() / "runs" / name


class BackgroundWriter:
    """Writes a run's files on one background thread while the next steps train.

    A save stops the GPU only while its arrays are copied to the host; the files (checkpoint,
    style, PNGs, plot: ~130 ms on a CPU) are written meanwhile. One job at a time: a new one
    first waits for the last, and the last one's error (a full disk, say) is raised then, in
    the training thread. Jobs touch no MLX array (MLX is not called from two threads)."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-writer")
        self._job = None

    def submit(self, job: Callable[[], None]) -> None:
        self.wait()
        self._job = self._pool.submit(job)

    def wait(self) -> None:
        job, self._job = self._job, None
        if job is not None:
            job.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def plot_losses(losses: list[float] | dict[str, list[float]], path: Path) -> None:
    """A small loss-curve PNG (log scale), drawn with Pillow: one curve, or one per name."""
    from PIL import ImageDraw

    width, height, margin = 640, 320, 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    curves = losses if isinstance(losses, dict) else {"loss": losses}
    logs = {name: np.log10(np.maximum(np.asarray(values, dtype=np.float64), 1e-12))
            for name, values in curves.items()}
    steps = max(map(len, logs.values()), default=0)
    if steps >= 2:
        low = min(values.min() for values in logs.values())
        high = max(values.max() for values in logs.values())
        span = max(high - low, 1e-9)
        colours = [(200, 40, 40), (40, 90, 200), (40, 150, 60)]
        for index, (name, values) in enumerate(logs.items()):
            xs = margin + np.arange(len(values)) * (width - 2 * margin) / (steps - 1)
            ys = height - margin - (values - low) / span * (height - 2 * margin)
            colour = colours[index % len(colours)]
            draw.line(list(zip(xs.tolist(), ys.tolist())), fill=colour, width=2)
            if len(logs) > 1:
                draw.text((width - margin - 60, 4 + 12 * index), name, fill=colour)
        draw.text((4, 4), f"loss (log10) {high:.2f} .. {low:.2f}, {steps} steps", fill="black")
    draw.rectangle([margin, margin, width - margin, height - margin], outline="gray")
    with atomic_write(path) as stream:
        image.save(stream, format="PNG")


def run_folders(*folders: Path) -> None:
    """The run's folders exist and take files, before any step."""
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            check_writable_folder(folder, "run")
        except (OSError, OutputError) as error:
            reason = describe(error) if isinstance(error, OSError) else error
            raise OutputError(f"{folder}: cannot write the run's files there ({reason}); set "
                              "ENGINE_HOME to a writable folder") from None

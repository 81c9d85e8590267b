"""The any-painting network: train-universal, and `styles add` (a painting as a named style)."""

from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError
from ..training.settings import UniversalSettings
from .common import (
    NO_CEILING,
    OverwriteRun,
    SeedOption,
    TrainingProgress,
    app,
    budget_seconds,
    err,
    user_errors,
)

DEFAULTS = UniversalSettings()


@app.command("train-universal")
def train_universal(
    content: Annotated[list[Path], typer.Option(help="Folder of training photos (repeatable).")],
    paintings: Annotated[list[Path], typer.Option(
        help="Folder of paintings, prints or textures (repeatable); hundreds or more.")],
    name: Annotated[str, typer.Option(help="The network's name.")] = "universal",
    steps: Annotated[int | None, typer.Option(
        min=1, show_default=False, help=f"Training steps (default {DEFAULTS.steps}; with "
        "--minutes, as many as fit).")] = None,
    minutes: Annotated[float | None, typer.Option(
        show_default=False, help="Train for this long (wall time); the steps are planned from "
        "the step rate so that --lr-decay ends on the last one.")] = None,
    batch: Annotated[int, typer.Option(min=1, help="Photo-painting pairs per step.")
                     ] = DEFAULTS.batch,
    size: Annotated[int, typer.Option(help="Crop size of photos and paintings.")] = DEFAULTS.size,
    style_weight: Annotated[float, typer.Option()] = DEFAULTS.style_weight,
    content_weight: Annotated[float, typer.Option()] = DEFAULTS.content_weight,
    tv_weight: Annotated[float, typer.Option()] = DEFAULTS.tv_weight,
    learning_rate: Annotated[float, typer.Option()] = DEFAULTS.learning_rate,
    lr_decay: Annotated[float, typer.Option()] = DEFAULTS.lr_decay,
    width: Annotated[int, typer.Option(help="The style network's width.")] = DEFAULTS.width,
    precision: Annotated[str, typer.Option(help="float32, or bfloat16 on a GPU.")
                         ] = DEFAULTS.precision,
    seed: SeedOption = DEFAULTS.seed,
    checkpoint_every: Annotated[int, typer.Option(min=1)] = DEFAULTS.checkpoint_every,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run of this name.")
                      ] = False,
    overwrite: OverwriteRun = False,
    start_from: Annotated[str | None, typer.Option(
        "--from", help="Go on training a painting network (a name, say universal, or a "
                       ".safetensors file) of the same shape: its weights and step count.")
                          ] = None,
    out: Annotated[Path | None, typer.Option(
        help="Where to write the network (default: your engine folder's painting-networks/).")
                   ] = None,
    vgg_weights: Annotated[Path | None, typer.Option(envvar="ENGINE_VGG_WEIGHTS")] = None,
) -> None:
    """Train the any-painting network: one network that stylizes with any painting."""
    from ..io.images import find_images
    from ..io.vgg_weights import load_vgg
    from ..training.runs import run_dir
    from ..training.universal import train_universal as run

    with user_errors():
        seconds = budget_seconds(minutes)
        settings = UniversalSettings(
            steps=steps or (NO_CEILING if minutes else DEFAULTS.steps),
            seconds=seconds, batch=batch, size=size,
            style_weight=style_weight, content_weight=content_weight, tv_weight=tv_weight,
            learning_rate=learning_rate, lr_decay=lr_decay, width=width, precision=precision,
            seed=seed, checkpoint_every=checkpoint_every, preview_every=checkpoint_every)
        settings.check()
        origin = _network_path(start_from) if start_from else None
        photos = [p for folder in content for p in _images(folder, find_images)]
        art = [p for folder in paintings for p in _images(folder, find_images)]
        vgg = load_vgg(path=vgg_weights)
        progress = TrainingProgress(None if minutes else settings.steps, batch)

        try:
            result = run(vgg, name, photos, art, settings, resume=resume, overwrite=overwrite,
                         out=out, on_step=progress.step, start_from=origin,
                         on_ready=lambda step: progress.ready(step, "compiling the step"))
        finally:
            progress.stop()
        state = "interrupted; resume with --resume" if result.interrupted else "done"
        err.print(f"{state}: painting network {name!r} after {result.steps} steps -> "
                  f"{result.style_path} (checkpoints, previews and loss.png in {run_dir(name)})")
        if result.interrupted:
            raise typer.Exit(130)


def _network_path(name: str) -> Path:
    """A registered painting network's file, or a .safetensors path given directly."""
    from ..registry import painting_networks

    candidate = Path(name)
    if candidate.suffix == ".safetensors" and candidate.is_file():
        return candidate
    return Path(painting_networks().get(name).item.path)


def _images(folder: Path, find_images) -> list[Path]:
    if not Path(folder).is_dir():
        raise UsageError(f"{folder}: not a folder of images")
    return find_images(folder)

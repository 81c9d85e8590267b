"""Generators: the list, generate, train-generator."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import UsageError
from .common import (
    NetChoice,
    OverwriteRun,
    SeedOption,
    app,
    budget_seconds,
    err,
    print_rows,
    progress_bar,
    user_errors,
)


@app.command("generators")
def list_generators(json_output: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the registered image generators."""
    from ..registry import generators

    with user_errors():
        catalog = generators()
        rows = [{"name": e.name, "plugin": e.plugin, "aliases": list(e.aliases),
                 "description": getattr(e.item, "description", ""),
                 "problem": e.problem or (e.note if catalog.owner(e.name) is not e else None)}
                for e in [*catalog.entries.values(), *catalog.hidden]]
        print_rows(rows, ["name", "plugin", "description", "problem"], json_output)


@app.command()
def generate(
    generator: Annotated[str, typer.Option("--generator", "-g")],
    out_dir: Annotated[Path, typer.Option("--output", "-o", help="Folder for the images.")],
    count: Annotated[int, typer.Option("-n", help="How many images (1..1024).")] = 16,
    seed: SeedOption = 0,
    size: Annotated[Optional[int], typer.Option(min=8, max=4096)] = None,
    style: Annotated[Optional[str], typer.Option(help="Stylize the images with this style.")
                     ] = None,
    optimize_style: Annotated[Optional[Path], typer.Option(
        "--optimize-style", help="Stylize with the reference optimizer and this painting.")
                              ] = None,
    iterations: Annotated[int, typer.Option(help="Optimizer iterations per image.")] = 100,
    interpolate: Annotated[Optional[str], typer.Option(
        help="SEED_A,SEED_B: -n images walking from one seed's image to the other's.")] = None,
    vgg_weights: Annotated[Optional[Path], typer.Option(envvar="ENGINE_VGG_WEIGHTS")] = None,
    net: NetChoice = "auto",
) -> None:
    """Generate images (and a grid), optionally stylized by a style or the optimizer."""
    from ..generators import grid, guarded
    from ..io.atomic import check_writable_folder
    from ..io.images import save_image
    from ..registry import generators
    from ..style_source import label_of, stylizer_for

    with user_errors():
        if not 1 <= count <= 1024:
            raise UsageError(f"-n {count} is out of range; ask for 1 to 1024 images")
        if style and optimize_style:
            raise UsageError("pick one of --style and --optimize-style")
        check_writable_folder(out_dir)
        maker = guarded(generators().get(generator))
        stylizer = stylizer_for(style, net)[0] if style else None
        if interpolate:
            try:
                seed_a, seed_b = (int(part) for part in interpolate.split(","))
            except ValueError:
                raise UsageError(f"--interpolate {interpolate!r}: give two seeds, e.g. 3,9"
                                 ) from None
            images = maker.between(seed_a, seed_b, count, size)
            label = f"{generator}-{seed_a}-to-{seed_b}"
        else:
            images = maker.generate(count, seed, size)
            label = f"{generator}-{seed}"
        if stylizer:
            images = stylizer(images)
            label += f"-{label_of(style)}"
        elif optimize_style:
            images = _optimized(images, optimize_style, iterations, vgg_weights)
            label += f"-{optimize_style.stem}"
        for index in range(count):
            save_image(out_dir / f"{label}-{index:03d}.png", images[index])
        save_image(out_dir / f"{label}-grid.png", grid(images))
        err.print(f"wrote {count} images and {label}-grid.png to {out_dir}")


def _optimized(images, painting: Path, iterations: int, vgg_weights: Optional[Path]):
    """The generated images repainted by the optimizer, with a progress bar."""
    from ..io.images import load_image
    from ..io.vgg_weights import load_vgg
    from ..optimize import OptimizeSettings, optimize_each

    vgg, style = load_vgg(path=vgg_weights), load_image(painting)
    with progress_bar("optimizing") as progress:
        task = progress.add_task("optimize", total=images.shape[0])
        return optimize_each(vgg, images, style.rgb, OptimizeSettings(iterations=iterations),
                             on_image=lambda done: progress.update(task, completed=done))


@app.command("train-generator")
def train_generator(
    folder: Annotated[Path, typer.Argument(help="Folder of training images (any sizes, modes).")],
    name: Annotated[str, typer.Option(help="Generator name.")],
    size: Annotated[int, typer.Option(help="Image size: a power of two (64, 128).")] = 64,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs (with --minutes, at most).")] = 25,
    minutes: Annotated[Optional[float], typer.Option(
        show_default=False, help="Train for this long (wall time from the start), or --epochs, "
        "whichever comes first; the run then stops with its files written, and --resume goes "
        "on from there.")] = None,
    batch: Annotated[int, typer.Option(min=2)] = 128,
    width: Annotated[int, typer.Option(min=1, help="Narrowest layer's channels.")] = 64,
    latent: Annotated[int, typer.Option(min=1)] = 128,
    learning_rate: Annotated[float, typer.Option()] = 2e-4,
    seed: SeedOption = 0,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run of this name.")
                      ] = False,
    overwrite: OverwriteRun = False,
) -> None:
    """Train a DCGAN on a folder of images; it then registers as a generator named NAME."""
    from ..training.data import ImageSet
    from ..training.gan import GanSettings
    from ..training.gan import train_generator as run

    with user_errors():
        seconds = budget_seconds(minutes)
        settings = GanSettings(size=size, latent=latent, width=width, epochs=epochs,
                               batch=batch, learning_rate=learning_rate, seed=seed,
                               seconds=seconds)
        settings.check()
        data = ImageSet(folder, size)
        with progress_bar("training {task.fields[name]}",
                          ("epoch {task.fields[epoch]}", "{task.fields[rate]}"),
                          ("{task.fields[terms]}",), remaining=True) as progress:
            task = progress.add_task("train", total=None, name=name, epoch="", rate="",
                                     terms="")

            def on_step(step) -> None:
                progress.update(task, total=step.steps, completed=step.step,
                                epoch=f"{step.epoch}/{settings.epochs}",
                                rate=f"{step.images_per_second:.0f} img/s",
                                terms=f"D {step.d_loss:.3f} G {step.g_loss:.3f}")

            result = run(folder, name, settings, resume=resume, on_step=on_step, data=data,
                         overwrite=overwrite)
        state = "interrupted; resume with --resume" if result.interrupted else "done"
        err.print(f"{state}: generator {name!r} after {result.epochs} epochs "
                  f"({len(result.history)} steps) -> {result.path}")
        if result.interrupted:
            raise typer.Exit(130)

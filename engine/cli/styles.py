"""Feed-forward styles: train-style, apply, sheet and the list of styles."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import UsageError
from ..io import examples
from ..nets.config import NETWORK_NAMES, NETWORKS
from ..training.settings import TrainSettings
from .common import (
    NO_CEILING,
    MarginOption,
    NetChoice,
    OverwriteRun,
    PaintingSizeOption,
    SeedOption,
    StrengthOption,
    StyleOption,
    StyleSizeOption,
    TrainingProgress,
    app,
    budget_seconds,
    err,
    parse_dilations,
    parse_names,
    progress_bar,
    user_errors,
)

TRAIN_DEFAULTS = TrainSettings()


# ------------------------------------------------------------------ feed-forward styles


@app.command("train-style")
def train_style(
    ctx: typer.Context,
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
    recipe: Annotated[str, typer.Option(
        help="auto: the options you leave out take this machine's recipe (GPU: the five-minute "
        "recipe, bfloat16, batch 8, 5 minutes; CPU: --warm-start from the any-painting network, "
        "192 px crops, batch 2, 10 minutes); none: the plain defaults shown here.")] = "auto",
    warm_start: Annotated[bool, typer.Option(
        help="Start from the any-painting network's network for this painting (its layout: the "
        "fast network, width 64) instead of random weights: a usable style from the first "
        "step, trained further on the painting alone.")] = False,
    vgg_weights: Annotated[Optional[Path], typer.Option(envvar="ENGINE_VGG_WEIGHTS")] = None,
    compile_step: Annotated[bool, typer.Option(
        "--compile/--no-compile", help="One compiled training step (fastest per step). The "
        "engine ships the GPU recipe's kernels for MLX 0.32.4 on H100/H200 (~50 s to load on a "
        "fresh one); elsewhere, a GPU whose kernel cache lacks this step's kernels compiles them "
        "in minutes (3.5 on an H100, once: they are cached); --no-compile starts at once at "
        "~2.5x the step time.")] = True,
) -> None:
    """Train a feed-forward style network once; then `engine apply --style NAME` is instant."""
    from ..io.images import find_images
    from ..io.vgg_weights import load_vgg
    from ..registry import style_path
    from ..training import distributed
    from ..training.runs import run_dir
    from ..training.settings import TrainSettings
    from ..training.style import train_style as run

    with user_errors():
        if recipe not in ("auto", "none"):
            raise UsageError(f"unknown --recipe {recipe!r}; use auto or none")
        if recipe == "auto":
            chosen = _machine_defaults(ctx)
            batch, size, style_size = chosen["batch"], chosen["size"], chosen["style_size"]
            style_layers, style_weight = chosen["style_layers"], chosen["style_weight"]
            lr_decay, precision = chosen["lr_decay"], chosen["precision"]
            minutes, warm_start = chosen["minutes"], chosen["warm_start"]
        if net not in NETWORKS:
            raise UsageError(f"unknown --net {net!r}; use full or fast")
        preset = NETWORKS[net]
        name = name or style_image.stem
        seconds = budget_seconds(minutes)
        if steps is None:
            steps = NO_CEILING if minutes else TRAIN_DEFAULTS.steps
        settings = TrainSettings(
            steps=steps, seconds=seconds, batch=batch, size=size,
            style_size=style_size,
            content_weight=content_weight, style_weight=style_weight, tv_weight=tv_weight,
            content_layer=content_layer, learning_rate=learning_rate,
            lr_decay=lr_decay, style_layers=tuple(parse_names(style_layers)),
            width=preset.width if width is None else width, res_blocks=preset.res_blocks,
            arch=preset.arch,
            dilations=parse_dilations(dilations), margin=margin, precision=precision, seed=seed,
            checkpoint_every=checkpoint_every, preview_every=checkpoint_every,
            warm_start="universal" if warm_start else "")
        settings.check()
        origin = style_path(start_from, net) if start_from else None
        photos = find_images(content) if content else examples.photos()
        vgg = load_vgg(path=vgg_weights)
        main = distributed.is_main()  # under mlx.launch, rank 0 alone shows progress
        if main and distributed.size() > 1:
            err.print(f"data-parallel over {distributed.size()} processes, batch {batch} each")
        # shown once every check has passed: a mistake found before (--from, --resume, the
        # style image) stays a one-line error, with no empty bar above it
        progress = TrainingProgress(None if minutes else steps, batch * distributed.size(),
                                    disable=not main)

        def on_ready(step: int) -> None:
            start = ("from the any-painting network's network for this painting; "
                     if settings.warm_start and not resume else "")
            progress.ready(step, start + (
                "compiling the step (minutes on a GPU without its kernels cached or shipped; "
                "--no-compile starts at once)"
                if compile_step else ""))

        try:
            result = run(vgg, style_image, name, photos, settings, resume=resume,
                         preview=preview, on_step=progress.step, start_from=origin,
                         on_ready=on_ready, overwrite=overwrite, compile_step=compile_step)
        finally:
            progress.stop()
        state = "interrupted; resume with --resume" if result.interrupted else "done"
        if main:
            err.print(f"{state}: style {name!r} after {result.steps} steps -> "
                      f"{result.style_path} (checkpoints, previews and loss.png in "
                      f"{run_dir(name)})")
        if main and seconds and result.first_step_seconds > 0.25 * seconds:
            err.print(f"note: the first step took {result.first_step_seconds:.0f} s of the "
                      f"{minutes:g} minutes (compiling its kernels); they are cached now, so "
                      "the next run of these shapes trains for nearly all of its time "
                      "(--no-compile skips the compilation, at a slower step)")
        if result.interrupted:
            raise typer.Exit(130)



def _machine_defaults(ctx: typer.Context) -> dict:
    """The command's options, those left out taken from the machine's recipe."""
    from ..backend import on_cpu
    from ..training.settings import LAYOUT_OPTIONS, machine_recipe

    sources = {name: ctx.get_parameter_source(name) for name in ctx.params}
    given = {name for name, source in sources.items()
             if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")}
    recipe = machine_recipe(on_cpu())
    if given & set(LAYOUT_OPTIONS):
        recipe.pop("warm_start", None)
    if given & {"steps", "minutes"}:
        recipe.pop("minutes")
    return {**ctx.params, **{k: v for k, v in recipe.items() if k not in given}}


@app.command()
def apply(
    inputs: Annotated[Optional[list[Path]], typer.Argument(
        help="Images or folders of images.", show_default=False)] = None,
    style: StyleOption = "starry",
    output: Annotated[Optional[Path], typer.Option("--output", "-o",
                                                   help="Output file (one input only).")] = None,
    example: Annotated[bool, typer.Option(
        help="Stylize the bundled example photo (a cat that ships with scikit-image).")
                       ] = False,
    out_dir: Annotated[Optional[Path], typer.Option(
        help="Folder for the outputs (default: next to each input).")] = None,
    max_size: Annotated[Optional[int], typer.Option(min=16, help="Downscale inputs first.")
                        ] = None,
    strength: StrengthOption = 1.0,
    preserve_color: Annotated[bool, typer.Option()] = False,
    style_size: StyleSizeOption = 1.0,
    mask: Annotated[Optional[Path], typer.Option(
        help="Stylize only where this image is white (soft: grey is partly); its size, or its "
        "aspect ratio, must be the photo's.")] = None,
    mask_style: Annotated[Optional[str], typer.Option(
        help="With --mask: this style (any --style form) where the mask is black, instead of "
        "the photo.")] = None,
    painting_size: PaintingSizeOption = None,
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
        "optimize`, at ~8 ms per iteration at 512 px on an H100 (~4 s on a 2-core CPU). A "
        "painting's targets come from the painting file; a style file needs style targets (the "
        "shipped ones have them).")] = 0,
    vgg_weights: Annotated[Path | None, typer.Option(
        envvar="ENGINE_VGG_WEIGHTS", help="VGG16 weights for --refine.")] = None,
) -> None:
    """Stylize images with a style or any painting: one compiled forward pass per batch."""
    from ..apply import apply_files, load_mask, plan_outputs
    from ..style_source import label_of, stylizer_for
    from ..stylize import kernels_pay_off
    from ..training import distributed

    with user_errors():
        if example and inputs:
            raise UsageError("--example stylizes the bundled photo; give no images with it")
        if mask_style and not mask:
            raise UsageError("--mask-style is the style outside the --mask; give --mask too")
        label = label_of(style)
        jobs = plan_outputs([examples.content_photo()] if example else inputs or [], label,
                            output or (Path(f"example-{label}.png") if example else None),
                            out_dir, overwrite)
        if distributed.size() > 1:  # under mlx.launch: every process takes its share
            jobs = distributed.shard(jobs)
        options = dict(strength=strength, preserve_color=preserve_color, max_tile=tile,
                       margin=margin, stroke=style_size, kernels=kernels_pay_off(len(jobs)))
        masking = load_mask(mask) if mask else None
        stylizer, _ = stylizer_for(style, net, refine, vgg_weights,
                                   painting_size=painting_size, **options)
        outside = stylizer_for(mask_style, net, refine, vgg_weights, painting_size=painting_size,
                               **options)[0] if mask_style else None
        with progress_bar() as progress:
            task = progress.add_task(f"applying {label}", total=len(jobs))
            for done, written in enumerate(apply_files(stylizer, jobs, max_size, batch,
                                                       masking, outside), 1):
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
    only: Annotated[Optional[str], typer.Option(
        help="Comma-separated style names or painting files.")] = None,
    overwrite: Annotated[bool, typer.Option()] = False,
    net: NetChoice = "auto",
) -> None:
    """The photo in every registered style (or --only some), labelled, on one sheet."""
    from ..io.images import check_output, load_image, save_image
    from ..registry import styles
    from ..sheet import make_sheet
    from ..style_source import check_style, stylizer_for

    with user_errors():
        target = check_output(output, (photo,), overwrite)
        picture = load_image(photo, max_size=max_size)
        catalog = styles()
        names = [n.strip() for n in only.split(",")] if only else [
            name for name, entry in catalog.entries.items() if not entry.problem]
        if not names:
            raise UsageError("no usable styles are registered; train one with engine train-style")
        for name in names:  # an unknown name or a missing painting: before any work
            check_style(name, net, catalog)
        with progress_bar() as progress:
            task = progress.add_task("stylizing", total=len(names))
            image = make_sheet(
                picture.rgb, ((Path(n).stem, stylizer_for(n, net, catalog=catalog)[0])
                              for n in names), columns,
                on_style=lambda name: progress.advance(task))
        save_image(target, image)
        err.print(f"wrote {target}: {photo.name} in {len(names)} styles")



styles_app = typer.Typer(help="List the registered styles; `engine styles add` makes a "
                         "painting a named style.")
app.add_typer(styles_app, name="styles")


@styles_app.command("add")
def add_style(
    painting: Annotated[Path, typer.Argument(help="The painting (any image file).")],
    name: Annotated[Optional[str], typer.Option(help="Style name (default: the file's stem).")
                    ] = None,
    painting_size: PaintingSizeOption = None,
    overwrite: Annotated[bool, typer.Option(help="Replace your style of this name.")] = False,
) -> None:
    """Register a painting as a named style (through the any-painting network, in a second):
    then `--style NAME` works everywhere a style goes."""
    from ..style_source import add_painting_style

    with user_errors():
        name = name or painting.stem
        path = add_painting_style(painting, name, overwrite, painting_size=painting_size)
        err.print(f"added style {name!r} -> {path} (preview {path.with_suffix('.png')})")


@styles_app.callback(invoke_without_command=True)
def list_styles(ctx: typer.Context,
                json_output: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the registered styles: name, plugin, network size, training, preview."""
    if ctx.invoked_subcommand is not None:
        return
    import json

    from rich.console import Console
    from rich.table import Table

    from ..registry import styles

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
            if t.get("painting_network"):
                training = (f"painting {t.get('style_image', '?')} @ "
                            f"{t.get('style_size', '?')}, any-painting network "
                            f"{t['painting_network']!r}")
            name = row["name"] + (f" ({', '.join(row['aliases'])})" if row["aliases"] else "")
            training += f"; {row['note']}" if row["note"] else ""
            network = (f"{NETWORK_NAMES[row['network']]} width "
                       f"{row['width']}, {row['parameters'] / 1e6:.2f}M weights"
                       + (" + fast CPU network" if row["fast_path"] else ""))
            table.add_row(name, row["plugin"], network, training, row["preview"] or "")
        Console().print(table)



"""What every command shares: the app, the console, the options several commands take, and the
mapping of the engine's errors to one line and an exit code."""

import contextlib
import os
from typing import Annotated, Optional

import typer

from ..errors import EngineError, UsageError
from ..plugins import DISABLE_ENV
from ..training.settings import UNTIL_TIME_IS_UP as NO_CEILING  # --minutes without --steps

NetChoice = Annotated[str, typer.Option(
    "--net", help="Which network of a style: auto (the fast CPU network on a CPU, the full one "
    "on a GPU), full or fast.")]

StyleOption = Annotated[str, typer.Option(
    "--style", "-s", help="A registered style name, a style file, any painting (an image "
    "file: the any-painting network), or a blend: starry:0.6,wave:0.4 (a painting file may be "
    "one of them).")]
StyleSizeOption = Annotated[float, typer.Option(
    "--style-size", help="How large the painting's strokes land: 1 as the style was trained, "
    "2 twice as large (for large photos), 0.5 half (0.25 to 8).")]
PaintingSizeOption = Annotated[Optional[int], typer.Option(
    "--painting-size", min=64, max=2048, show_default=False,
    help="Longest side a painting is read at for its style (default 384): smaller reads "
    "coarser strokes and shapes.")]

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
    # click's plain help and usage errors: rich's boxes cost every `--help` ~100 ms of imports
    rich_markup_mode=None,
)


class _Stderr:
    """rich's Console on stderr, made on first use (importing rich costs a `--help` 40 ms):
    `err.print(...)`, and `err.console` where a Console itself is wanted (a progress bar)."""

    _console = None

    @property
    def console(self):
        if _Stderr._console is None:
            from rich.console import Console

            _Stderr._console = Console(stderr=True)
        return _Stderr._console

    def print(self, *args, **kwargs) -> None:
        self.console.print(*args, **kwargs)


err = _Stderr()


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


def parse_names(text: str) -> list[str]:
    """A comma-separated list of names, blanks dropped."""
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_floats(text: Optional[str], what: str) -> Optional[list[float]]:
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise typer.BadParameter(f"{what} must be comma-separated numbers, e.g. 0.7,0.3") from None


def parse_dilations(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in parse_names(text))
    except ValueError:
        raise typer.BadParameter(f"--dilations must be comma-separated integers, e.g. 2,4, not "
                                 f"{text!r}") from None




class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: the same clean exit as Ctrl-C (temporary files
    removed, a training run's progress saved), with exit code 143."""


def terminate(signum, frame) -> None:
    raise Terminated()


MarginOption = Annotated[int | None, typer.Option(
    min=0, show_default=False, help="Reflected pixels around each image for the network, "
    "cropped after, e.g. 16: cleaner edges (the networks draw a band of their own there), a "
    "little slower. Default: the margin the style was trained with (the shipped ones: 0; "
    "with another, the style drifts from what it was trained to match).")]



def print_rows(rows: list[dict], columns: list[str], json_output: bool) -> None:
    import json

    from rich.table import Table

    if json_output:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*(", ".join(v) if isinstance(v, list) else str(v if v is not None else "")
                        for v in (row[c] for c in columns)))
    from rich.console import Console

    Console().print(table)


def progress_bar(title: str = "{task.description}", fields: tuple[str, ...] = (),
                 after: tuple[str, ...] = (), remaining: bool = False, **options):
    """The commands' progress bar, on stderr: the bold title, the bar, done/total, the text
    `fields` (rich formats of the task's fields), the time elapsed (and left), then `after`.
    rich loads here, when a command runs, not at start-up."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn(f"[bold]{title}"), BarColumn(), MofNCompleteColumn(),
               *map(TextColumn, fields), TimeElapsedColumn(),
               *([TimeRemainingColumn()] if remaining else []), *map(TextColumn, after)]
    return Progress(*columns, console=err.console, **options)


def budget_seconds(minutes: float | None) -> float:
    """A training command's --minutes as its settings' seconds (0: no time budget)."""
    if minutes is None:
        return 0.0
    if not 0 < minutes < 1e6:  # (NaN too)
        raise UsageError("--minutes must be more than 0 (and finite)")
    return minutes * 60


class TrainingProgress:
    """The training commands' bar: steps (of the planned total), steps/s, the loss terms."""

    def __init__(self, total: int | None, batch: int, disable: bool = False):
        self.bar = progress_bar("training", ("{task.fields[rate]}",), ("{task.fields[terms]}",),
                                remaining=True, disable=disable)
        self.task = self.bar.add_task("train", total=total, rate="", terms="")
        self.batch = batch  # images a step, over every process

    def ready(self, step: int, note: str) -> None:
        """Every check passed: show the bar at the step the run starts from, with `note`."""
        self.bar.update(self.task, completed=step, terms=note)
        self.bar.start()

    def step(self, step) -> None:
        """A TrainStep done."""
        terms = " ".join(f"{k} {v:.3g}" for k, v in step.terms.items())
        steps_per_second = step.images_per_second / self.batch
        self.bar.update(self.task, completed=step.step, terms=f"loss {step.loss:.3g} {terms}",
                        total=step.steps if step.steps < NO_CEILING else None,
                        rate=f"{steps_per_second:.1f} it/s" if steps_per_second else "")

    def stop(self) -> None:
        self.bar.stop()

"""The command line: one module per command group. Each command turns its options into plain
arguments, calls one engine function, draws progress from what it reports, and maps the engine's
errors to one line (cli.common.user_errors). No engine rule lives here."""

import os
import signal
import sys

import typer

from ..plugins import DISABLE_ENV
from . import generators, paintings, plugins, serve, styles, video  # noqa: F401,I001 - commands register, in order
from .common import app, err, terminate


def get_app() -> typer.Typer:
    """The app with the commands that plugins add (the reference optimizer among them), once."""
    if not getattr(app, "_plugin_commands_added", False):
        from ..registry import add_commands

        add_commands(app)
        app._plugin_commands_added = True
    return app


def main() -> None:
    """The `engine` command. A mistyped option or value is one line, as the engine's own
    errors are: `error: Invalid value for '--seed': ...; see `engine train-style --help``."""
    # the command-line parser's own errors (click's, inside Typer), found through a public name
    parser_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    if "--no-plugins" in sys.argv[1:2]:
        os.environ[DISABLE_ENV] = "1"
    signal.signal(signal.SIGTERM, terminate)
    command = typer.main.get_command(get_app())
    try:
        code = command.main(prog_name="engine", standalone_mode=False)
    except parser_error as error:
        if type(error).__name__ == "NoArgsIsHelpError":  # `engine` alone: the help
            error.show()
            sys.exit(error.exit_code)
        context = getattr(error, "ctx", None)
        hint = f"; see `{context.command_path} --help`" if context is not None else ""
        message = error.format_message().rstrip(".")
        err.print(f"error: {message}{hint}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(error.exit_code)
    except typer.Abort:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)



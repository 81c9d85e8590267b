"""The command line: one module per command group. Each command turns its options into plain
arguments, calls one engine function, draws progress from what it reports, and maps the engine's
errors to one line (cli.common.user_errors). No engine rule lives here."""

from __future__ import annotations

import os
import signal
import sys

import typer

from ..plugins import DISABLE_ENV
from . import generators, plugins, styles, video  # noqa: F401 - their commands register
from .common import app, terminate


def get_app() -> typer.Typer:
    """The app with the commands that plugins add (the reference optimizer among them), once."""
    if not getattr(app, "_plugin_commands_added", False):
        from ..registry import add_commands

        add_commands(app)
        app._plugin_commands_added = True
    return app


def main() -> None:
    if "--no-plugins" in sys.argv[1:2]:
        os.environ[DISABLE_ENV] = "1"
    signal.signal(signal.SIGTERM, terminate)
    get_app()()



"""The list of plugins."""

from typing import Annotated

import typer

from .common import app, print_rows, user_errors


@app.command("plugins")
def list_plugins(json_output: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the loaded plugins (name, version, hooks) and any that failed."""
    from ..plugins import plugin_summaries
    from ..registry import generators, styles

    with user_errors():
        styles(), generators()  # their hooks' failures are among the plugins' failures
        print_rows(plugin_summaries(), ["name", "version", "hooks", "error"], json_output)



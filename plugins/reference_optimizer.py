"""The reference per-image optimizer (Gatys et al.), offered as the `optimize` command."""

from engine.hookspecs import hookimpl


@hookimpl
def register_commands(app):
    from engine.cli import optimize

    app.command("optimize")(optimize)

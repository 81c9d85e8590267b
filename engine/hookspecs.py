"""Hook specifications: the whole surface a plugin, built-in or third-party, can use."""

import pluggy

PROJECT = "engine"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_styles(register):
    """Register feed-forward styles: register(Style(...), aliases=())."""


@hookspec
def register_generators(register):
    """Register image generators: register(generator, aliases=())."""


@hookspec
def register_commands(app):
    """Add commands to the Typer app."""

"""Hook specifications: the whole surface a plugin, built-in or third-party, can use."""

import pluggy

PROJECT = "engine"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_styles(register):
    """Register feed-forward styles: register(Style(...), aliases=())."""


@hookspec
def register_painting_networks(register):
    """Register any-painting networks: register(PaintingNet(...), aliases=()). The first one
    registered under the name "universal" (the engine's own) is the default."""


@hookspec
def register_generators(register):
    """Register image generators: register(generator, aliases=())."""


@hookspec
def register_commands(app):
    """Add commands to the Typer app."""

"""Generators that need no training: fractal plasma clouds and a marbled texture. The images are
made in engine_plugins.noise, imported on first use: listing the engine's commands or plugins
does not load MLX."""

from engine.generators import Generator
from engine.hookspecs import hookimpl


def _later(name: str):
    def run(*args):
        from engine_plugins import noise

        return getattr(noise, name)(*args)
    return run


@hookimpl
def register_generators(register):
    register(Generator("plasma", _later("plasma"), "fractal plasma clouds (no training)",
                       interpolate=_later("plasma_between")))
    register(Generator("marble", _later("marble"), "marbled stripes bent by fractal noise (no "
                       "training)", interpolate=_later("marble_between")))

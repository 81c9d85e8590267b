"""A third-party engine plugin: a style shipped inside the package, a generator and a command."""

from importlib.resources import files

import typer

from engine.generators import Generator
from engine.hookspecs import hookimpl
from engine.registry import Style


@hookimpl
def register_styles(register):
    # Declare data only: the weights file is found with importlib.resources, loaded on use.
    weights = files(__name__) / "demo_wave.safetensors"
    register(Style("demo-wave", weights, "Hokusai's wave, slim network (demo plugin)"),
             aliases=("hokusai-demo",))


def checkerboard(count: int, seed: int, size: int):
    """Checkerboards with a random cell size and two random colours per image."""
    import mlx.core as mx  # here, not at import: the plugin loads with every command

    key_cells, key_colours = mx.random.split(mx.random.key(seed))
    cells = mx.random.randint(2, 12, (count, 1, 1, 1), key=key_cells)
    y = mx.arange(size)[None, :, None, None]
    x = mx.arange(size)[None, None, :, None]
    pattern = (((y * cells) // size + (x * cells) // size) % 2).astype(mx.float32)
    colours = mx.random.uniform(shape=(count, 2, 3), key=key_colours)
    return pattern * colours[:, None, None, 0] + (1 - pattern) * colours[:, None, None, 1]


@hookimpl
def register_generators(register):
    register(Generator("checkerboard", checkerboard, "random checkerboards (demo plugin)"))


@hookimpl
def register_commands(app):
    @app.command("demo-hello")
    def demo_hello(name: str = "world"):
        """A command added by the demo plugin."""
        typer.echo(f"hello {name}, from engine-demo-plugin")

"""Styles trained with `engine train-style`, found in the user's style folder."""

from engine.hookspecs import hookimpl
from engine.registry import Style
from engine.styles import style_dir


@hookimpl
def register_styles(register):
    folder = style_dir()
    if folder.is_dir():
        for path in sorted(folder.glob("*.safetensors")):
            register(Style(path.stem, path, "trained by you"))

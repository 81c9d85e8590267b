"""Styles trained with `engine train-style`, found in the user's style folder."""

from engine.hookspecs import hookimpl
from engine.registry import Style
from engine.styles import overrides_other, style_dir


@hookimpl
def register_styles(register):
    folder = style_dir()
    if folder.is_dir():
        for path in sorted(folder.glob("*.safetensors")):
            if not path.name.startswith("."):
                register(Style(path.stem, path, "trained by you", overrides=overrides_other(path),
                               from_user=True))

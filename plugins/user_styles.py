"""Styles trained with `engine train-style`, found in the user's style folder."""

from engine.hookspecs import hookimpl
from engine.registry import Style


@hookimpl
def register_styles(register):
    from engine.io.style_files import overrides_other, style_dir

    folder = style_dir()
    if folder.is_dir():
        for path in sorted(folder.glob("*.safetensors")):
            if not path.name.startswith("."):
                register(Style(path.stem, path, "trained by you", overrides=overrides_other(path),
                               from_user=True))

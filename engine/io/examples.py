"""Example images that ship inside a dependency's wheel (scikit-image, CC0 / public domain)."""

from __future__ import annotations

from pathlib import Path

from ..errors import EngineError

CONTENT = "chelsea.png"  # Chelsea the cat


STYLE = "hubble_deep_field.jpg"  # the Hubble Deep Field


PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
          "hubble_deep_field.jpg", "retina.jpg")


def data_dir() -> Path:
    try:
        import skimage
    except ImportError:
        raise EngineError("scikit-image is not installed; `pip install scikit-image`") from None
    return Path(skimage.__file__).parent / "data"


def content_photo() -> Path:
    return data_dir() / CONTENT


def style_painting() -> Path:
    return data_dir() / STYLE


def photos() -> list[Path]:
    """Colour photos from the wheel, for training with no content folder given."""
    folder = data_dir()
    return [folder / name for name in PHOTOS if (folder / name).is_file()]

"""Example images: photos that ship inside a dependency's wheel (scikit-image, CC0 / public
domain) and the seven public-domain paintings the shipped styles were trained on (downscaled,
in the engine's own wheel)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from ..errors import EngineError, UsageError

CONTENT = "chelsea.png"  # Chelsea the cat
STYLE = "starry_night"  # the painting `optimize --example` repaints her in

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


def paintings() -> dict[str, Path]:
    """The shipped styles' paintings by style name (448 px on the longest side)."""
    folder = Path(str(files("engine_weights") / "paintings"))
    return {path.stem: path for path in sorted(folder.glob("*.jpg"))}


def painting(name: str = STYLE) -> Path:
    found = paintings()
    if name not in found:
        raise UsageError(f"no example painting {name!r}; there are {', '.join(found)}")
    return found[name]


def photos() -> list[Path]:
    """Colour photos from the wheel, for training with no content folder given."""
    folder = data_dir()
    return [folder / name for name in PHOTOS if (folder / name).is_file()]

"""Pillow <-> MLX image I/O: NHWC float32 in [0, 1], EXIF orientation, alpha, atomic saves."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .. import __version__
from ..errors import ImageError, OutputError
from .atomic import atomic_write, check_writable_folder

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


# What the engine writes: formats that hold 8-bit RGB (and, but for JPEG, alpha) and that it
# reads back; Pillow registers many more extensions whose writers fail on some modes or lack one
OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP",
                  ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}


# The text chunk that marks a PNG as written by the engine: folder runs skip such files, so a
# second run over a folder does not stylize the first run's outputs
MARK = "engine"


# Anything above this many pixels is treated as a decompression bomb (Pillow's own default
# only warns at 89 MP); 16k x 8k covers any real photo or painting.
MAX_PIXELS = 16384 * 8192


@dataclass
class Picture:
    """A loaded image: RGB as (1, H, W, 3) float32 in [0, 1]; alpha as (H, W) float32 or None."""

    rgb: mx.array
    alpha: np.ndarray | None
    path: Path | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.rgb.shape[2], self.rgb.shape[1]


def _open(path: Path) -> Image.Image:
    if not path.exists():
        raise ImageError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, not an image file")
    return _decode(path, str(path), MAX_PIXELS)


def _decode(source, name: str, max_pixels: int, load: bool = True) -> Image.Image:
    """A file or file object decoded by Pillow (`load=False`: its header alone); more than
    `max_pixels` is refused from the header, before the pixels are decoded."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    path = name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source)
            if image.width * image.height > max_pixels:
                raise Image.DecompressionBombError(name)
            if load:
                image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(
            f"{path}: too many pixels (over {max_pixels // 1_000_000} megapixels); "
            "downscale it first"
        ) from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image Pillow can read; use PNG, JPEG, WebP or TIFF") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"{path}: unreadable or truncated image ({error}); re-export it") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    if image.width == 0 or image.height == 0:
        raise ImageError(f"{path}: the image is empty (0 pixels)")
    return image


def _to_float_planes(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Any Pillow mode -> (H, W, 3) float32 RGB and optional (H, W) float32 alpha, in [0, 1]."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        grey = np.asarray(image, dtype=np.float32)
        top = 65535.0 if image.mode != "I" or grey.max() > 255 else 255.0
        grey = np.clip(grey / top, 0.0, 1.0)
        return np.repeat(grey[..., None], 3, axis=2), None
    if image.mode == "F":
        grey = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
        return np.repeat(grey[..., None], 3, axis=2), None
    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
        return np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3])
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0, None


def fit_size(width: int, height: int, max_size: int | None) -> tuple[int, int]:
    """Scale (width, height) down so that the longest side is at most max_size."""
    if not max_size or max(width, height) <= max_size:
        return width, height
    scale = max_size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_planes(planes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize a (H, W) or (H, W, C) float array with Lanczos, channel by channel."""
    if planes.shape[1] == width and planes.shape[0] == height:
        return planes
    if planes.ndim == 2:
        return np.asarray(
            Image.fromarray(planes, mode="F").resize((width, height), Image.Resampling.LANCZOS)
        )
    channels = [resize_planes(np.ascontiguousarray(planes[..., c]), width, height)
                for c in range(planes.shape[2])]
    return np.clip(np.stack(channels, axis=2), 0.0, 1.0)


def load_image(path: str | os.PathLike, max_size: int | None = None) -> Picture:
    """Read an image file, upright per EXIF, scaled so its longest side is at most max_size."""
    path = Path(path)
    return _picture(_open(path), max_size, path)


def decode_image(data: bytes, name: str = "the upload", max_pixels: int = MAX_PIXELS
                 ) -> Image.Image:
    """An image file's bytes (an upload) decoded and upright, with load_image's checks; more
    than `max_pixels` is refused from the header, before its pixels are decoded."""
    import io

    return _upright(_decode(io.BytesIO(data), name, max_pixels))


def check_header(data: bytes, name: str = "the upload", max_pixels: int = MAX_PIXELS) -> str:
    """An image file's format from its header alone (no pixels decoded), with load_image's
    checks: ImageError if it is no image, empty, or has more than `max_pixels`."""
    import io

    return _decode(io.BytesIO(data), name, max_pixels, load=False).format or ""


def _upright(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block should not lose the picture
        return image


def _picture(image: Image.Image, max_size: int | None, path: Path | None) -> Picture:
    image = _upright(image)
    rgb, alpha = _to_float_planes(image)
    width, height = fit_size(image.width, image.height, max_size)
    rgb = resize_planes(rgb, width, height)
    if alpha is not None:
        alpha = np.clip(resize_planes(alpha, width, height), 0.0, 1.0)
    return Picture(mx.array(rgb)[None], alpha, path)


def find_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under a folder (recursively, sorted); an error if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"{folder}: not a folder of images")
    found = sorted(p for p in folder.rglob("*")
                   if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not found:
        raise ImageError(f"{folder}: holds no images (.jpg, .png, ...)")
    return found


def resize(rgb: mx.array, width: int, height: int) -> mx.array:
    """Resize a (1, H, W, 3) image array (Lanczos)."""
    if rgb.shape[2] == width and rgb.shape[1] == height:
        return rgb
    return mx.array(resize_planes(np.array(rgb[0]), width, height))[None]


def check_output(path: str | os.PathLike, inputs: tuple[Path, ...] = (), overwrite: bool = False,
                 probe_folder: bool = True) -> Path:
    """Fail early, before any work, if `path` cannot be written safely. `probe_folder=False`:
    the caller has tried its folder already (once for many outputs)."""
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_FORMATS:
        raise OutputError(f"{path}: cannot write {path.suffix or 'files without an extension'!r}"
                          "; use .png, .jpg, .webp, .tif or .bmp")
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; give a file name")
    if probe_folder:
        check_writable_folder(path.parent)
    if not overwrite:
        for source in inputs:
            if source is not None and path.exists() and path.resolve() == Path(source).resolve():
                raise OutputError(
                    f"{path}: is also an input; choose another output or pass --overwrite"
                )
    return path


def to_pil(rgb: mx.array | np.ndarray, alpha: np.ndarray | None = None) -> Image.Image:
    """(1, H, W, 3) or (H, W, 3) floats in [0, 1] (+ optional (H, W) alpha) -> a Pillow image."""
    array = np.array(rgb, dtype=np.float32)
    if array.ndim == 4:
        array = array[0]
    pixels = np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    if alpha is None:
        return Image.fromarray(pixels, mode="RGB")
    height, width = pixels.shape[:2]
    alpha = resize_planes(np.asarray(alpha, dtype=np.float32), width, height)
    alpha8 = np.round(np.clip(alpha, 0.0, 1.0) * 255.0).astype(np.uint8)
    return Image.fromarray(np.dstack([pixels, alpha8]), mode="RGBA")


def is_engine_output(path: Path) -> bool:
    """True for a PNG that the engine wrote (its text chunk says so)."""
    if path.suffix.lower() != ".png":
        return False
    try:
        with Image.open(path) as image:
            return MARK in getattr(image, "text", {})
    except Exception:  # unreadable: not ours to judge here; loading it reports the problem
        return False


def save_image(path: str | os.PathLike, rgb: mx.array | np.ndarray,
               alpha: np.ndarray | None = None) -> Path:
    """Write atomically: a temporary file in the target folder, then a rename over the target."""
    path = Path(path)
    fmt = OUTPUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        check_output(path, overwrite=True)  # raises, naming the extensions that work
    image = to_pil(rgb, alpha)
    if image.mode == "RGBA" and fmt == "JPEG":
        image = image.convert("RGB")  # JPEG has no alpha channel
    options = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    if fmt == "PNG":
        from PIL.PngImagePlugin import PngInfo

        options["pnginfo"] = PngInfo()
        options["pnginfo"].add_text(MARK, __version__)
    with atomic_write(path) as stream:
        image.save(stream, format=fmt, **options)
    return path

"""A contact sheet: one photo in every registered style, each cell labelled with the style name."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import mlx.core as mx
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .stylize import Stylizer

LABEL_HEIGHT = 28


def _font(size: int = 18):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def _cell(image: np.ndarray, label: str) -> Image.Image:
    """(H, W, 3) float [0, 1] -> an RGB image with a white label bar on top."""
    picture = Image.fromarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8))
    cell = Image.new("RGB", (picture.width, picture.height + LABEL_HEIGHT), "white")
    cell.paste(picture, (0, LABEL_HEIGHT))
    ImageDraw.Draw(cell).text((6, 4), label, fill="black", font=_font())
    return cell


def make_sheet(photo: mx.array, styles: Iterable[tuple[str, Stylizer]], columns: int | None = None,
               on_style: Callable[[str], None] | None = None) -> mx.array:
    """(1, H, W, 3) photo -> (1, rows*(H+label), cols*W, 3): the photo, then each style."""
    cells = [_cell(np.array(photo[0]), "photo")]
    for name, stylizer in styles:
        cells.append(_cell(np.array(stylizer(photo)[0]), name))
        if on_style:
            on_style(name)
    columns = columns or math.ceil(math.sqrt(len(cells)))
    rows = math.ceil(len(cells) / columns)
    width, height = cells[0].size
    sheet = Image.new("RGB", (columns * width, rows * height), "white")
    for index, cell in enumerate(cells):
        sheet.paste(cell, ((index % columns) * width, (index // columns) * height))
    return mx.array(np.asarray(sheet, dtype=np.float32)[None] / 255.0)

import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from engine.errors import ImageError, OutputError
from engine.io import images as image_io
from engine.io.images import check_output, load_image, save_image

from ..conftest import write_image


def test_rgb_loads_as_nhwc_float_in_unit_range(tmp_path):
    pixels = np.array([[[0, 128, 255], [10, 20, 30]]], dtype=np.uint8)  # (1, 2, 3)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    picture = load_image(tmp_path / "a.png")
    assert picture.rgb.shape == (1, 1, 2, 3)
    np.testing.assert_allclose(np.array(picture.rgb[0]), pixels / 255.0, atol=1e-6)
    assert picture.alpha is None and picture.size == (2, 1)


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.new("RGB", (40, 20), (200, 10, 10)).save(path, exif=exif)
    assert load_image(path).size == (20, 40)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "CMYK", "P"])
def test_modes_become_rgb(tmp_path, mode):
    path = tmp_path / f"{mode}.png" if mode != "CMYK" else tmp_path / "cmyk.jpg"
    base = Image.new("RGBA", (8, 6), (255, 0, 0, 128))
    if mode == "P":
        base.convert("RGB").convert("P").save(path, transparency=0)
    else:
        base.convert(mode).save(path)
    picture = load_image(path)
    assert picture.rgb.shape == (1, 6, 8, 3)
    has_alpha = mode in ("LA", "RGBA", "P")
    assert (picture.alpha is not None) == has_alpha
    if mode == "RGBA":
        np.testing.assert_allclose(picture.alpha, 128 / 255, atol=1e-6)
        np.testing.assert_allclose(np.array(picture.rgb[0, 0, 0]), [1, 0, 0], atol=1e-6)


def test_sixteen_bit_grey_keeps_its_range(tmp_path):
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    picture = load_image(path)
    np.testing.assert_allclose(np.array(picture.rgb[0, 0, :, 0]), [0, 0.5, 1], atol=1e-4)


def test_max_size_limits_the_longest_side(tmp_path):
    path = write_image(tmp_path / "big.png", (300, 120))
    assert load_image(path, max_size=100).size == (100, 40)
    assert load_image(path, max_size=1000).size == (300, 120)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.png")


def test_not_an_image(tmp_path):
    (tmp_path / "notes.png").write_text("hello")
    with pytest.raises(ImageError, match="not an image"):
        load_image(tmp_path / "notes.png")


def test_truncated_image(tmp_path):
    path = write_image(tmp_path / "whole.png", (64, 64))
    data = path.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated|unreadable|not an image"):
        load_image(tmp_path / "cut.png")


def test_decompression_bomb(tmp_path, monkeypatch):
    path = write_image(tmp_path / "bomb.png", (100, 100))
    monkeypatch.setattr(image_io, "MAX_PIXELS", 50 * 50)
    with pytest.raises(ImageError, match="too many pixels"):
        load_image(path)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def test_zero_size_image(tmp_path):
    header = struct.pack(">IIBBBBB", 0, 0, 8, 2, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(b"")) + _png_chunk(b"IEND", b""))
    (tmp_path / "empty.png").write_bytes(data)
    with pytest.raises(ImageError):
        load_image(tmp_path / "empty.png")


def test_alpha_is_carried_to_the_output(tmp_path):
    rgba = np.zeros((6, 8, 4), dtype=np.uint8)
    rgba[..., 1] = 200
    rgba[..., 3] = np.arange(8, dtype=np.uint8)[None, :] * 30
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "in.png")
    picture = load_image(tmp_path / "in.png")
    save_image(tmp_path / "out.png", picture.rgb, picture.alpha)
    back = np.asarray(Image.open(tmp_path / "out.png"))
    assert back.shape == (6, 8, 4)
    np.testing.assert_array_equal(back[..., 3], rgba[..., 3])
    save_image(tmp_path / "out.jpg", picture.rgb, picture.alpha)  # JPEG drops alpha cleanly
    assert Image.open(tmp_path / "out.jpg").mode == "RGB"


def test_output_in_missing_folder_writes_nothing(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        save_image(tmp_path / "missing" / "out.png", np.zeros((4, 4, 3)))
    assert not (tmp_path / "missing").exists()


def test_output_never_replaces_an_input_unless_asked(tmp_path, photo):
    with pytest.raises(OutputError, match="also an input"):
        check_output(photo, (photo,))
    assert check_output(photo, (photo,), overwrite=True) == photo


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    target.write_bytes(b"precious")

    def broken_save(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OutputError, match="disk is full"):
        save_image(target, np.zeros((4, 4, 3)))
    assert target.read_bytes() == b"precious"
    assert os.listdir(tmp_path) == ["out.png"]  # no temporary left behind

"""Any painting as a style, end to end with the shipped any-painting network: `apply --style
painting.jpg`, blends, masks, --style-size, `styles add`, and bad input."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from engine.cli import app
from engine.errors import UsageError
from engine.io import examples
from engine.io.style_files import style_dir
from engine.style_source import label_of, parse_blend
from tests.conftest import write_image

runner = CliRunner()


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)


@pytest.fixture
def scene(tmp_path):
    """A 64x48 photo with some structure (a gradient and a square)."""
    x = np.linspace(0, 255, 64)[None, :, None] * np.ones((48, 1, 3))
    x[10:30, 20:40] = [200, 40, 40]
    path = tmp_path / "scene.png"
    Image.fromarray(x.astype(np.uint8)).save(path)
    return path


def apply(*args):
    return runner.invoke(app, ["apply", *map(str, args)])


def test_parse_blend_and_its_errors():
    assert parse_blend("starry") == [("starry", 1.0)]
    assert parse_blend("starry:0.6, wave:0.4") == [("starry", 0.6), ("wave", 0.4)]
    assert label_of("starry:0.6,a/b/painting.jpg:0.4") == "starry+painting"
    for text, message in (("starry:x", "not a number"), ("starry:-1", "0 or more"),
                          ("starry:nan", "finite"), ("a:0,b:0", "sum to zero"),
                          ("starry,,wave", "empty part"), (",".join(["a"] * 17), "at most")):
        with pytest.raises(UsageError, match=message):
            parse_blend(text)


def test_any_painting_is_a_style(tmp_path, scene):
    wave, starry = examples.painting("wave"), examples.painting("starry_night")
    outs = {}
    for name, style in (("wave", wave), ("starry", starry), ("blend", f"{wave}:0.5,{starry}:0.5"),
                        ("named", "starry:0.5,wave:0.5")):
        out = tmp_path / f"{name}.png"
        result = apply(scene, "--style", style, "-o", out)
        assert result.exit_code == 0, result.output
        outs[name] = pixels(out)
        assert outs[name].shape == (48, 64, 3)
        assert np.abs(outs[name] - pixels(scene)).mean() > 5  # stylized
    assert np.abs(outs["wave"] - outs["starry"]).mean() > 3  # each painting its own way
    for one in ("wave", "starry"):  # a blend is neither
        assert np.abs(outs["blend"] - outs[one]).mean() > 0.5
    # a shipped style's name in a blend means its painting: the same blend
    assert np.abs(outs["named"] - outs["blend"]).mean() < 1.0
    # a folder run names outputs by the painting's stem
    (tmp_path / "o").mkdir()
    result = apply(scene, "--style", wave, "--out-dir", tmp_path / "o")
    assert result.exit_code == 0 and (tmp_path / "o" / "scene-wave.png").is_file()


def test_style_size_scales_the_strokes_and_keeps_the_size(tmp_path, scene):
    wave = examples.painting("wave")
    one, two = tmp_path / "1.png", tmp_path / "2.png"
    assert apply(scene, "--style", wave, "-o", one).exit_code == 0
    result = apply(scene, "--style", wave, "--style-size", "2", "-o", two)
    assert result.exit_code == 0, result.output
    assert pixels(two).shape == pixels(one).shape
    assert np.abs(pixels(two) - pixels(one)).mean() > 2
    bad = apply(scene, "--style", wave, "--style-size", "20", "-o", tmp_path / "3.png")
    assert bad.exit_code == 2 and "--style-size 20" in bad.output
    assert not (tmp_path / "3.png").exists()


def test_masks(tmp_path, scene):
    mask = np.zeros((48, 64), np.uint8)
    mask[:, 32:] = 255
    Image.fromarray(mask).save(tmp_path / "half.png")
    out = tmp_path / "masked.png"
    result = apply(scene, "-s", "starry", "--mask", tmp_path / "half.png", "-o", out)
    assert result.exit_code == 0, result.output
    got, photo = pixels(out), pixels(scene)
    assert np.abs(got[:, :32] - photo[:, :32]).max() <= 1  # the photo where the mask is black
    assert np.abs(got[:, 33:] - photo[:, 33:]).mean() > 5
    # two styles: the other one outside
    both = tmp_path / "both.png"
    result = apply(scene, "-s", "starry", "--mask", tmp_path / "half.png", "--mask-style",
                   "wave", "-o", both)
    assert result.exit_code == 0, result.output
    assert np.abs(pixels(both)[:, :32] - photo[:, :32]).mean() > 5
    # the same aspect ratio at another size is resized; another one is refused
    Image.fromarray(mask).resize((32, 24)).save(tmp_path / "small.png")
    assert apply(scene, "-s", "starry", "--mask", tmp_path / "small.png", "-o",
                 tmp_path / "s.png").exit_code == 0
    Image.fromarray(mask[:, :40]).save(tmp_path / "narrow.png")
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(tmp_path / "black.png")
    (tmp_path / "text.png").write_text("not an image")
    for bad, message in (("narrow.png", "aspect ratio"), ("black.png", "all black"),
                         ("text.png", "text.png"), ("missing.png", "missing.png")):
        target = tmp_path / f"out-{bad}"
        result = apply(scene, "-s", "starry", "--mask", tmp_path / bad, "-o", target)
        assert result.exit_code != 0 and message in result.output, result.output
        assert "Traceback" not in result.output and not target.exists()
    lone = apply(scene, "-s", "starry", "--mask-style", "wave", "-o", tmp_path / "x.png")
    assert lone.exit_code == 2 and "--mask" in lone.output


def test_bad_style_images_are_one_line_and_write_nothing(tmp_path, scene):
    write_image(tmp_path / "tiny.png", (40, 30))
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    cases = (("tiny.png", "at least 64 px"), ("corrupt.jpg", "corrupt.jpg"),
             ("absent.jpg", "no such painting file"))
    for name, message in cases:
        target = tmp_path / f"out-{name}.png"
        result = apply(scene, "--style", tmp_path / name, "-o", target)
        assert result.exit_code != 0 and message in result.output, result.output
        assert "Traceback" not in result.output and not target.exists()
    blend = apply(scene, "--style", "starry:0.5,nope:0.5", "-o", tmp_path / "b.png")
    assert blend.exit_code == 2 and "unknown style 'nope'" in blend.output
    weights = apply(scene, "--style", "starry:0,wave:0", "-o", tmp_path / "b.png")
    assert weights.exit_code == 2 and "sum to zero" in weights.output
    assert not (tmp_path / "b.png").exists()
    # grey and transparent paintings are paintings too
    for mode in ("L", "RGBA"):
        painting = write_image(tmp_path / f"p-{mode}.png", (96, 80), mode=mode)
        result = apply(scene, "--style", painting, "-o", tmp_path / f"{mode}.png")
        assert result.exit_code == 0, result.output


def test_styles_add_registers_a_painting_everywhere(tmp_path, scene):
    wave = examples.painting("wave")
    result = runner.invoke(app, ["styles", "add", str(wave), "--name", "mine"])
    assert result.exit_code == 0, result.output
    assert (style_dir() / "mine.safetensors").is_file() and (style_dir() / "mine.png").is_file()
    rows = {row["name"]: row for row in json.loads(runner.invoke(app, ["styles", "--json"]).output)}
    assert rows["mine"]["in_use"] and rows["mine"]["training"]["painting_network"] == "universal"
    # the same output as the painting file itself
    named, direct = tmp_path / "named.png", tmp_path / "direct.png"
    assert apply(scene, "-s", "mine", "-o", named).exit_code == 0
    assert apply(scene, "-s", wave, "-o", direct).exit_code == 0
    assert np.abs(pixels(named) - pixels(direct)).mean() < 1.0
    # in blends by its stored code, in the sheet
    assert apply(scene, "-s", "mine:0.5,starry:0.5", "-o", tmp_path / "b.png").exit_code == 0
    sheet = runner.invoke(app, ["sheet", str(scene), "--only", f"mine,{wave}", "-o",
                                str(tmp_path / "sheet.png")])
    assert sheet.exit_code == 0, sheet.output
    # names are guarded as for trained styles
    again = runner.invoke(app, ["styles", "add", str(wave), "--name", "mine"])
    assert again.exit_code == 2 and "exists" in again.output
    shipped = runner.invoke(app, ["styles", "add", str(wave), "--name", "starry"])
    assert shipped.exit_code == 2 and "--overwrite" in shipped.output


def test_refine_from_a_painting(tmp_path, scene):
    plain, refined = tmp_path / "plain.png", tmp_path / "refined.png"
    wave = examples.painting("wave")
    assert apply(scene, "-s", wave, "-o", plain).exit_code == 0
    result = apply(scene, "-s", wave, "--refine", "2", "-o", refined)
    assert result.exit_code == 0, result.output
    assert np.abs(pixels(refined) - pixels(plain)).mean() > 0.5


def test_video_and_generate_take_a_painting(tmp_path):
    from tests.test_faults import write_clip

    clip = write_clip(tmp_path / "clip.mp4", 6, 64, 48, noise=True)
    wave = examples.painting("wave")
    out = tmp_path / "out.mp4"
    result = runner.invoke(app, ["video", str(clip), "--style", str(wave), "--strength", "0.7",
                                 "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and out.stat().st_size > 0
    (tmp_path / "gen").mkdir()
    made = runner.invoke(app, ["generate", "-g", "plasma", "-n", "2", "--size", "64",
                               "--style", str(wave), "-o", str(tmp_path / "gen")])
    assert made.exit_code == 0, made.output
    assert len(list((tmp_path / "gen").glob("*.png"))) >= 2


def test_a_paintings_code_is_cached_by_its_contents(tmp_path, scene, monkeypatch):
    from engine.io.vgg_weights import cache_dir
    from engine.painting import PaintingNetwork

    painting = tmp_path / "p.jpg"
    painting.write_bytes(examples.painting("wave").read_bytes())
    first, second = tmp_path / "1.png", tmp_path / "2.png"
    assert apply(scene, "-s", painting, "-o", first).exit_code == 0
    cached = list((cache_dir() / "painting-codes").glob("*.npy"))
    assert len(cached) == 1

    def no_vgg(*args, **kwargs):
        raise AssertionError("the cached code was not used")

    monkeypatch.setattr(PaintingNetwork, "code", no_vgg)
    result = apply(scene, "-s", painting, "-o", second)
    assert result.exit_code == 0, result.output
    assert np.abs(pixels(first) - pixels(second)).max() <= 1
    monkeypatch.undo()
    cached[0].write_bytes(b"damaged")  # a damaged cache entry is computed again
    assert apply(scene, "-s", painting, "-o", tmp_path / "3.png").exit_code == 0
    assert np.abs(pixels(first) - pixels(tmp_path / "3.png")).max() <= 1

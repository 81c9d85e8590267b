"""Applying a style to files: shipped styles, bad input."""

import json

import mlx.core as mx
import numpy as np
from PIL import Image
from typer.testing import CliRunner

from engine.cli import app
from engine.io.style_files import style_dir

runner = CliRunner()
SHIPPED = {"starry_night", "wave", "scream", "composition", "udnie", "shipwreck", "matisse"}



def test_apply_bad_input(tmp_path, photo):
    unknown = runner.invoke(app, ["apply", "--style", "nope", str(photo)])
    assert unknown.exit_code == 2 and "unknown style 'nope'; known:" in unknown.output
    broken = style_dir() / "broken.safetensors"
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_bytes(b"not weights")
    result = runner.invoke(app, ["apply", "--style", "broken", str(photo)])
    assert result.exit_code == 2 and "broken" in result.output
    assert "Traceback" not in result.output
    missing = runner.invoke(app, ["apply", "--style", "broken", str(photo), "-o",
                                  str(tmp_path / "no" / "x.png")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    listing = runner.invoke(app, ["styles"])
    assert listing.exit_code == 0 and "broken" in listing.output


def test_shipped_style_is_registered_and_applies(tmp_path, photo):
    listed = runner.invoke(app, ["styles", "--json"])
    assert listed.exit_code == 0
    assert '"name": "starry_night"' in listed.output and '"starry"' in listed.output
    out = tmp_path / "starry.png"
    result = runner.invoke(app, ["apply", "--style", "starry", str(photo), "-o", str(out)])
    assert result.exit_code == 0, result.output
    stylized = np.asarray(Image.open(out), dtype=np.float32)
    original = np.asarray(Image.open(photo), dtype=np.float32)
    assert stylized.shape == original.shape and np.abs(stylized - original).mean() > 5


def test_every_shipped_style_changes_a_photo_its_own_way(tmp_path):
    """The seven shipped styles load, apply, and differ from the photo and from each other."""


    from engine.registry import style_path
    from engine.stylize import Stylizer

    rows = json.loads(runner.invoke(app, ["styles", "--json"]).output)
    shipped = {row["name"]: row for row in rows if row["plugin"] == "engine_plugins.shipped_styles"}
    assert set(shipped) == SHIPPED
    # fully trained, not demo networks: 10000-17500 steps on 680 photos, the last at batch 4 of
    # 512 px crops (as many pixels per step as batch 8 at 256), after 256 px stages at batch 8
    def pixels_per_step(stage):
        return stage["batch"] * stage["size"] ** 2

    assert all(row["steps"] >= 10000 and row["training"]["style_image"]
               and pixels_per_step(row["training"]) >= 8 * 256 ** 2
               and all(pixels_per_step(stage) >= 8 * 256 ** 2
                       for stage in row["training"].get("earlier", ()))
               for row in shipped.values())
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    photo = mx.array(np.stack([xx, yy, 0.5 + 0.3 * np.sin(6 * xx)], -1)[None].astype(np.float32))
    outputs = {name: np.array(Stylizer.from_file(style_path(name))(photo)[0]) for name in SHIPPED}
    for name, image in outputs.items():
        assert np.abs(image - np.array(photo[0])).mean() > 0.02, name
    names = sorted(outputs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert np.abs(outputs[a] - outputs[b]).mean() > 0.02, (a, b)

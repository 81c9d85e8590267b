"""The contact sheet: one photo in every style."""

import json

from PIL import Image
from typer.testing import CliRunner

from engine.cli import app
from engine.io.style_files import style_dir

runner = CliRunner()
SHIPPED = {"starry_night", "wave", "scream", "composition", "udnie", "shipwreck", "matisse"}



def test_sheet_shows_the_photo_in_every_style(tmp_path, photo, tiny_style_file):
    import shutil

    style_dir().mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny_style_file, style_dir() / "mine.safetensors")
    out = tmp_path / "sheet.png"
    result = runner.invoke(app, ["sheet", str(photo), "-o", str(out), "--columns", "3"])
    assert result.exit_code == 0, result.output
    sheet = Image.open(out)
    listed = json.loads(runner.invoke(app, ["styles", "--json"]).output)
    assert {"mine", *SHIPPED} <= {row["name"] for row in listed}
    cells = 1 + sum(not row["problem"] for row in listed)  # the photo, then every usable style
    rows = -(-cells // 3)
    assert sheet.size == (3 * 24, rows * (18 + 28))
    only = runner.invoke(app, ["sheet", str(photo), "-o", str(tmp_path / "two.png"),
                               "--only", "mine,starry", "--columns", "3"])
    assert only.exit_code == 0 and Image.open(tmp_path / "two.png").size == (72, 18 + 28)
    bad = runner.invoke(app, ["sheet", str(photo), "-o", str(tmp_path / "x.png"), "--only", "nope"])
    assert bad.exit_code == 2 and "unknown style" in bad.output
    assert not (tmp_path / "x.png").exists()

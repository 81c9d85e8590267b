"""The parts of benchmarks/ that decide what a quality figure is measured against."""

import hashlib
import importlib.util
from pathlib import Path

import pytest
from PIL import Image

from .conftest import write_image

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_copy_is_a_1024_px_jpeg_and_leaves_smaller_paintings_their_size(tmp_path):
    paintings = load("training_paintings")
    wide = write_image(tmp_path / "wide.png", (1300, 650))
    small = write_image(tmp_path / "small.png", (600, 400), seed=1)
    paintings.training_copy(wide, tmp_path / "wide.jpg")
    paintings.training_copy(small, tmp_path / "small.jpg")
    assert Image.open(tmp_path / "wide.jpg").size == (1024, 512)
    assert Image.open(tmp_path / "small.jpg").size == (600, 400)
    assert Image.open(tmp_path / "wide.jpg").format == "JPEG"
    again = tmp_path / "again.jpg"
    paintings.training_copy(wide, again)  # the same bytes each time: the hash is reproducible
    assert again.read_bytes() == (tmp_path / "wide.jpg").read_bytes()
    assert not list(tmp_path.glob("*.partial"))


def test_quality_report_scores_against_the_trained_painting_only(tmp_path):
    report = load("quality_report")
    painting = write_image(tmp_path / "painting.png", (64, 64))
    sha = hashlib.sha256(painting.read_bytes()).hexdigest()
    report.check_painting(painting, sha, Path("starry.safetensors"))  # the one: no error
    Image.open(painting).save(tmp_path / "painting.jpg", quality=92)  # the same, re-encoded
    with pytest.raises(SystemExit, match="is not the file starry.safetensors was trained on"):
        report.check_painting(tmp_path / "painting.jpg", sha, Path("starry.safetensors"))
    with pytest.raises(SystemExit, match="no such painting"):
        report.check_painting(tmp_path / "missing.jpg", sha, Path("starry.safetensors"))

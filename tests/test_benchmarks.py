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


def test_first_at_or_below_finds_the_first_crossing_or_none():
    equivalent = load("lbfgs_equivalent")
    assert equivalent.first_at_or_below([5.0, 4.0, 2.0, 3.0, 1.0], 3.0) == 2
    assert equivalent.first_at_or_below([5.0, 4.0], 3.0) is None
    assert equivalent.first_at_or_below([3.0 * (1 + 1e-7)], 3.0) == 0  # the same image, rescored


def test_lbfgs_equivalent_of_an_optimizer_output_is_the_iteration_that_made_it(tiny_vgg):
    """An image the optimizer itself made after k iterations is worth exactly the iteration at
    which its objective was first reached; the photo itself is worth none."""
    import mlx.core as mx

    from engine.optimize import optimize

    equivalent = load("lbfgs_equivalent")
    own = {"content_layer": "relu2_2", "style_layers": ("relu1_1", "relu2_1", "relu3_1"),
           "content_weight": 1.0, "style_weight": 1e3, "tv_weight": 1.0}
    mx.random.seed(3)
    photo, painting = mx.random.uniform(shape=(1, 32, 32, 3)), mx.random.uniform(
        shape=(1, 40, 40, 3))
    settings = equivalent.matched_settings(own, 6)
    losses = []
    made = optimize(tiny_vgg, photo, [painting], settings,
                    on_step=lambda step: losses.append(step.loss))
    assert min(losses) < losses[0]  # it did optimize
    best = 1 + losses.index(min(losses))
    found = equivalent.equivalent_iterations(tiny_vgg, photo, painting, made.image, own, 20)
    assert found["iterations_objective"] == best
    assert found["curve_objective"][1:best + 1] == pytest.approx(losses[:best], rel=1e-5)
    assert found["optimizer_ran"] < 20  # it stopped once both were reached
    at_start = equivalent.equivalent_iterations(tiny_vgg, photo, painting, photo, own, 20)
    assert at_start["iterations_objective"] == 0 and at_start["iterations_style"] == 0


def test_every_engine_import_in_the_benchmarks_resolves():
    """The benchmark scripts, and the code they run in subprocesses (as strings), import only
    modules and names the engine has: a moved module fails here, not on a GPU machine."""
    import importlib
    import re

    found = set()
    for script in BENCHMARKS.glob("*.py"):
        found |= set(re.findall(r"^\s*from (engine(?:\.\w+)*) import ([\w, ]+)$",
                                script.read_text(), re.MULTILINE))
    assert found
    for module, names in sorted(found):
        loaded = importlib.import_module(module)
        for name in (n.strip() for n in names.split(",") if n.strip()):
            assert hasattr(loaded, name) or importlib.util.find_spec(f"{module}.{name}"), (
                f"{module} has no {name}")

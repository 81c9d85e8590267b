import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from engine.cli import get_app

runner = CliRunner()
app = get_app()
FAST = ["--iterations", "3", "--max-size", "24"]


def _run(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def _one_line_error(result, needle):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], result.output


def test_optimize_writes_the_output(tmp_path, photo, painting, tiny_vgg_file):
    out = tmp_path / "out.png"
    result = _run("optimize", photo, painting, "-o", out, *FAST,
                  env={"ENGINE_VGG_WEIGHTS": str(tiny_vgg_file)})
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (24, 18)
    assert "wrote" in result.output


def test_optimize_with_two_styles_preserve_color_and_alpha(tmp_path, painting, tiny_vgg_file):
    rgba = np.zeros((16, 20, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 180, 90
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "cut.png")
    out = tmp_path / "out.png"
    result = _run("optimize", tmp_path / "cut.png", painting, painting, "--blend", "0.3,0.7",
                  "--preserve-color", "--method", "adam", "-o", out, *FAST,
                  "--vgg-weights", tiny_vgg_file)
    assert result.exit_code == 0, result.output
    written = np.asarray(Image.open(out))
    assert written.shape == (16, 20, 4) and (written[..., 3] == 90).all()


@pytest.mark.parametrize("case", ["missing", "not_image", "missing_folder", "bad_weights",
                                  "blend", "same_as_input"])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, photo, painting, tiny_vgg_file,
                                                  case):
    content, out, weights = photo, tmp_path / "out.png", tiny_vgg_file
    extra = []
    needle = {"missing": "no such file", "not_image": "not an image",
              "missing_folder": "does not exist", "bad_weights": "not a readable safetensors",
              "blend": "one weight per style", "same_as_input": "also an input"}[case]
    if case == "missing":
        content = tmp_path / "nope.jpg"
    elif case == "not_image":
        content = tmp_path / "text.jpg"
        content.write_text("not a picture")
    elif case == "missing_folder":
        out = tmp_path / "no" / "out.png"
    elif case == "bad_weights":
        weights = tmp_path / "broken.safetensors"
        weights.write_bytes(b"garbage")
    elif case == "blend":
        extra = ["--blend", "1,2"]
    elif case == "same_as_input":
        out = painting
    before = painting.read_bytes()
    result = _run("optimize", content, painting, "-o", out, *FAST, *extra,
                  "--vgg-weights", weights)
    _one_line_error(result, needle)
    assert painting.read_bytes() == before
    if case != "same_as_input":
        assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_example_runs_with_no_files(tmp_path, tiny_vgg_file):
    out = tmp_path / "example.png"
    result = _run("optimize", "--example", "-o", out, *FAST, "--vgg-weights", tiny_vgg_file)
    assert result.exit_code == 0, result.output
    assert Image.open(out).size[0] == 24


def test_installed_console_script_runs(tmp_path, photo, painting, tiny_vgg_file):
    exe = shutil.which("engine") or pytest.fail("the `engine` console script is not installed")
    out = tmp_path / "out.png"
    env = dict(os.environ, ENGINE_VGG_WEIGHTS=str(tiny_vgg_file))
    done = subprocess.run([exe, "optimize", str(photo), str(painting), "-o", str(out), *FAST],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert out.is_file()
    missing = subprocess.run([exe, "optimize", str(tmp_path / "x.png"), str(painting)],
                             capture_output=True, text=True, env=env, timeout=300)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert sys.executable  # the script runs in this interpreter's environment


def test_real_weights_end_to_end(tmp_path, real_vgg_weights):
    photo = tmp_path / "gradient.png"
    grid = np.linspace(0, 255, 32, dtype=np.uint8)
    Image.fromarray(np.dstack([np.tile(grid, (32, 1))] * 3)).save(photo)
    stripes = tmp_path / "stripes.png"
    Image.fromarray(((np.indices((32, 32)).sum(0) % 6 < 3) * 255).astype(np.uint8)).save(stripes)
    out = tmp_path / "out.png"
    result = _run("optimize", photo, stripes, "-o", out, "--iterations", "5", "--max-size", "32",
                  "--vgg-weights", real_vgg_weights)
    assert result.exit_code == 0, result.output
    written = np.asarray(Image.open(out), dtype=np.float32)
    original = np.asarray(Image.open(photo), dtype=np.float32)
    assert np.abs(written - original).mean() > 1.0  # the style changed the picture


def test_running_out_of_memory_is_one_line(monkeypatch, painting, tiny_vgg_file):
    import engine.training.style

    def allocator(message):
        def run(*args, **kwargs):
            raise RuntimeError(message)
        return run

    args = ["train-style", painting, "--steps", "1", "--vgg-weights", tiny_vgg_file]
    monkeypatch.setattr(engine.training.style, "train_style", allocator(
        "cudaMallocAsync(&data, size, stream) failed: out of memory"))
    result = _run(*args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("error: out of memory (cudaMallocAsync")
    monkeypatch.setattr(engine.training.style, "train_style", allocator("some other failure"))
    result = _run(*args)  # not a user's problem: it stays a traceback
    assert isinstance(result.exception, RuntimeError) and "other failure" in str(result.exception)


def _after_import_engine(variable, **environment):
    """The value `import engine` leaves in an environment variable by the time MLX is loaded,
    in a fresh interpreter whose environment lacks it unless given."""
    env = {k: v for k, v in os.environ.items() if k != variable}
    show = f"import engine, os, mlx.core; print(os.environ[{variable!r}])"
    shown = subprocess.run([sys.executable, "-c", show], env={**env, **environment},
                           capture_output=True, text=True, check=True)
    return shown.stdout.strip()


def test_cuda_graphs_default_off_unless_the_user_says():
    assert _after_import_engine("MLX_USE_CUDA_GRAPHS") == "0"
    assert _after_import_engine("MLX_USE_CUDA_GRAPHS", MLX_USE_CUDA_GRAPHS="1") == "1"


def test_kernel_cache_in_the_users_cache_folder_unless_the_user_says(tmp_path):
    cache = Path(_after_import_engine("MLX_PTX_CACHE_DIR", XDG_CACHE_HOME=str(tmp_path)))
    assert cache.parent.parent == tmp_path / "engine" and cache.parent.name.startswith("mlx-0.")
    chosen = _after_import_engine("MLX_PTX_CACHE_DIR", MLX_PTX_CACHE_DIR=str(tmp_path / "k"))
    assert chosen == str(tmp_path / "k")


@pytest.mark.parametrize("args, needle", [
    (["train-style", "x.png", "--seed", "-1"], "error: Invalid value for '--seed'"),
    (["apply", "--max-size", "abc"], "error: Invalid value for '--max-size'"),
    (["nosuch"], "error: No such command 'nosuch'"),
])
def test_the_installed_command_gives_parser_errors_in_one_line(args, needle):
    """As a real process (after pip install): a mistyped value is one line with the command's
    --help named, exit code 2, like the engine's own errors."""
    exe = shutil.which("engine") or pytest.fail("the engine console script is not installed")
    done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith(needle) and "--help`" in lines[0], done.stderr


def test_the_readmes_first_command_stylizes_the_bundled_photo(tmp_path):
    """`engine apply --example -o example.png`, as the README runs it after pip install: the
    cat that ships with scikit-image in the shipped Starry Night, nothing downloaded."""
    exe = shutil.which("engine") or pytest.fail("the engine console script is not installed")
    done = subprocess.run([exe, "apply", "--example", "-o", "example.png"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    written = Image.open(tmp_path / "example.png")
    assert written.size == (451, 300) and written.mode == "RGB"
    photo = np.asarray(Image.open(tmp_path / "example.png"), dtype=np.float32)
    from engine.io.examples import content_photo

    original = np.asarray(Image.open(content_photo()).convert("RGB"), dtype=np.float32)
    assert np.abs(photo - original).mean() > 20  # repainted, not copied

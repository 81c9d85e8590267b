"""Bad input and faults: every case gets one line, a non-zero exit, no traceback, no hang, and
nothing on disk lost or half-written. Full disks and read-only folders are real tmpfs mounts
where the test may mount one (root, as CI runs), else a writer that raises the same error."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from engine.cli import get_app
from engine.errors import EngineError, OutputError, UsageError, WeightsError

from .conftest import ROOT, write_image

runner = CliRunner()
app = get_app()


def run(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def one_line_error(result, needle: str, code: int = 2) -> None:
    """The engine's own error: one line (after any progress bar), exit code 2."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == [lines[-1]] and needle in lines[-1], result.output


def refused(result, needle: str) -> None:
    """An option refused, by the engine or by the command line's own parser (whose message
    comes in a box with the usage): exit code 2, no traceback, the value named."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    text = " ".join(result.output.replace("│", " ").split())
    assert needle in text, result.output


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).iterdir())


@contextlib.contextmanager
def mounted(folder: Path, options: str):
    """A tmpfs at `folder` (options such as 'size=64k' or 'ro'), or None where mounting is not
    allowed (the caller then injects the fault instead)."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True)
    if done.returncode != 0:
        yield None
        return
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.fixture
def read_only(tmp_path, monkeypatch):
    """A folder that takes no new files: a read-only tmpfs, else one whose file creation fails
    with EROFS as a read-only mount's does."""
    with mounted(tmp_path / "ro", "ro,size=64k") as folder:
        if folder is not None:
            yield folder
            return
        folder = tmp_path / "ro"
        import tempfile

        real = tempfile.mkstemp

        def refuse(*args, dir=None, **kwargs):
            if dir is not None and Path(dir) == folder:
                raise OSError(errno.EROFS, "Read-only file system")
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
        monkeypatch.setattr(tempfile, "_mkstemp_inner",
                            lambda dir, *a, **k: refuse(dir=dir) if Path(dir) == folder
                            else real(dir=dir))
        yield folder


@pytest.fixture
def clip(tmp_path) -> Path:
    """A 24-frame 64x48 H.264 clip."""
    return write_clip(tmp_path / "clip.mp4", 24, 64, 48)


def write_clip(path: Path, frames: int, width: int, height: int, noise: bool = False) -> Path:
    """An H.264 clip at 24 frames/s: flat frames, or frames of noise (each packet large)."""
    import av

    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as output:
        stream = output.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            pixels = (rng.integers(0, 256, (height, width, 3), dtype=np.uint8) if noise
                      else np.full((height, width, 3), index * 10, dtype=np.uint8))
            output.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        output.mux(stream.encode())
    return path


# ------------------------------------------------------------------------ outputs


@pytest.mark.parametrize("command", ["apply", "optimize", "sheet", "video"])
def test_a_read_only_output_folder_is_refused_before_any_work(command, read_only, photo,
                                                              painting, clip, tiny_vgg_file):
    args = {"apply": ["apply", photo, "--style", "starry", "-o", read_only / "x.png"],
            "optimize": ["optimize", photo, painting, "-o", read_only / "x.png",
                         "--vgg-weights", tiny_vgg_file, "-n", "2", "--max-size", "24"],
            "sheet": ["sheet", photo, "-o", read_only / "x.png", "--only", "starry"],
            "video": ["video", clip, "--style", "starry", "-o", read_only / "x.mp4"]}[command]
    one_line_error(run(*args), "cannot write there")


@pytest.mark.parametrize("suffix", [".psd", ".fits", ".xpm", ".blp", ".eps", ".pdf", ""])
def test_output_extensions_that_cannot_be_written_are_refused_up_front(tmp_path, suffix):
    rgba = write_image(tmp_path / "cut.png", (24, 20), mode="RGBA")
    one_line_error(run("apply", rgba, "--style", "starry", "-o", tmp_path / f"out{suffix}"),
                   "use .png, .jpg")
    assert files_in(tmp_path) == ["cut.png"]


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif", ".bmp"])
def test_every_output_format_takes_an_image_with_alpha(tmp_path, suffix):
    rgba = write_image(tmp_path / "cut.png", (24, 20), mode="RGBA")
    result = run("apply", rgba, "--style", "starry", "-o", tmp_path / f"out{suffix}")
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / f"out{suffix}").size == (24, 20)


def test_webm_video_output_is_refused_with_the_reason(tmp_path, clip):
    one_line_error(run("video", clip, "--style", "starry", "-o", tmp_path / "a.webm"),
                   "WebM holds VP8")


def test_a_full_disk_keeps_the_old_image_and_leaves_no_temporary(tmp_path):
    from engine.io.images import save_image

    with mounted(tmp_path / "disk", "size=16k") as disk:
        if disk is None:
            pytest.fail("this test needs to mount a tmpfs (root)")
        old = disk / "out.png"
        old.write_bytes(b"old")
        noise = np.random.default_rng(0).random((1, 256, 256, 3)).astype(np.float32)
        with pytest.raises(OutputError, match="disk is full"):
            save_image(old, noise)
        assert old.read_bytes() == b"old"
        assert files_in(disk) == ["out.png"]


def test_a_full_disk_while_the_loss_plot_is_drawn(tmp_path):
    from engine.training.runs import plot_losses

    with mounted(tmp_path / "disk", "size=4k") as disk:
        if disk is None:
            pytest.fail("this test needs to mount a tmpfs (root)")
        (disk / "fill").write_bytes(b"x" * 4096)
        with pytest.raises(OutputError, match="disk is full"):
            plot_losses(list(np.linspace(10, 1, 500)), disk / "loss.png")
        assert files_in(disk) == ["fill"]


def test_video_on_a_full_disk_ends_with_the_error_not_a_hang(tmp_path, clip):
    from engine.io.video import stylize_video
    from engine.registry import style_path
    from engine.stylize import Stylizer

    stylizer = Stylizer.from_file(style_path("starry"))
    with mounted(tmp_path / "disk", "size=64k") as disk:
        if disk is None:
            pytest.fail("this test needs to mount a tmpfs (root)")
        (disk / "fill").write_bytes(b"x" * (62 * 1024))
        started = time.monotonic()
        with pytest.raises(OutputError, match="disk is full"):
            stylize_video(clip, disk / "out.mp4", stylizer, batch=2)
        assert time.monotonic() - started < 60  # (it hung forever before: a generous bound)
        assert files_in(disk) == ["fill"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_a_signal_during_video_then_a_re_run(tmp_path, signum):
    """SIGINT and SIGTERM: a clean exit (130, 143) with the temporary file gone. SIGKILL can
    leave it (hidden; nothing in the process runs): the output is never half-written, and a
    re-run writes it whole."""
    import av

    long_clip = write_clip(tmp_path / "long.mp4", 240, 320, 240, noise=True)  # ~10 s of work
    out = tmp_path / "out" / "styled.mp4"
    out.parent.mkdir()
    command = [sys.executable, "-m", "engine", "video", str(long_clip), "--style", "starry",
               "-o", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(out.parent.iterdir()):
            time.sleep(0.05)
        assert any(out.parent.iterdir()), "the run never started writing"
        process.send_signal(signum)
        output = process.communicate(timeout=60)[0].decode()
    finally:
        process.kill()
    assert "Traceback" not in output and not out.exists()
    if signum == signal.SIGKILL:
        assert all(name.startswith(".") for name in files_in(out.parent))
    else:
        assert process.returncode == {signal.SIGINT: 130, signal.SIGTERM: 143}[signum], output
        assert files_in(out.parent) == []
    again = subprocess.run([*command, "--max-size", "64"], capture_output=True, text=True,
                           cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr
    with av.open(str(out)) as done:
        assert sum(1 for _ in done.decode(video=0)) == 240


def test_a_truncated_video_is_reported_with_its_frame_count(tmp_path, clip):
    import av

    # frames of noise: each packet large, so a cut lands late
    noisy = write_clip(tmp_path / "noisy.mp4", 24, 64, 48, noise=True)
    # a fast-start copy (index first) cut at two thirds: the container still declares 24 frames
    cut = tmp_path / "cut.mp4"
    faststart = tmp_path / "fast.mp4"
    with av.open(str(noisy)) as source, av.open(str(faststart), "w",
                                               options={"movflags": "faststart"}) as output:
        stream = output.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                output.mux(packet)
    data = faststart.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    result = run("video", cut, "--style", "starry", "-o", tmp_path / "out.mp4")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "the source declared 24 frames but ended after" in text
    written = int(text.split("ended after ")[1].split(":")[0])
    assert 0 < written < 24
    import av

    with av.open(str(tmp_path / "out.mp4")) as done:
        assert sum(1 for _ in done.decode(video=0)) == written


def test_video_reports_the_output_size_not_the_input_size(tmp_path, clip):
    result = run("video", clip, "--style", "starry", "-o", tmp_path / "out.mp4",
                 "--max-size", "32")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "(24 frames, 32x24 at 24 fps)" in text


# ------------------------------------------------------------------------- apply


def test_inputs_that_share_a_stem_get_distinct_outputs(tmp_path):
    folder = tmp_path / "col"
    folder.mkdir()
    write_image(folder / "a.png", (24, 20), seed=1)
    Image.open(folder / "a.png").convert("RGB").save(folder / "a.jpg")
    out = tmp_path / "out"
    out.mkdir()
    result = run("apply", "--style", "starry", folder, "--out-dir", out)
    assert result.exit_code == 0, result.output
    assert files_in(out) == ["a-jpg-starry.png", "a-png-starry.png"]


def test_a_second_folder_run_skips_the_engines_own_outputs(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    write_image(folder / "cat.png", (24, 20))
    for _ in range(2):  # the README's folder command, run twice
        result = run("apply", "--style", "starry", folder)
        assert result.exit_code == 0, result.output
        assert "wrote 1 image" in result.output
    result = run("apply", "--style", "wave", folder, "--overwrite")
    assert result.exit_code == 0, result.output
    assert files_in(folder) == ["cat-starry.png", "cat-wave.png", "cat.png"]


@pytest.mark.parametrize("args, needle", [
    (["--tile", "129"], "use --tile 256 or more"),
    (["--max-size", "-5"], "'--max-size'"),
    (["--strength", "nan"], "--strength nan must be a number from 0 to 1"),
    (["--refine", "1"], "at least"),
])
def test_bad_apply_options_are_one_line(tmp_path, args, needle, tiny_vgg_file):
    image = write_image(tmp_path / "p.png", (200, 150))
    if "--refine" in args:
        image = write_image(tmp_path / "p.png", (1, 1))
        args = [*args, "--vgg-weights", tiny_vgg_file]
    result = run("apply", image, "--style", "starry", "-o", tmp_path / "o.png", *args)
    refused(result, needle)
    assert not (tmp_path / "o.png").exists()


def test_refine_on_a_strip_after_following_the_advice(tmp_path, tiny_vgg_file):
    strip = write_image(tmp_path / "strip.png", (50000, 3))
    result = run("apply", strip, "--style", "starry", "-o", tmp_path / "o.png", "--refine", "1",
                 "--vgg-weights", tiny_vgg_file, "--max-size", "2048")
    one_line_error(result, "--refine needs images at least")


# ------------------------------------------------------------------ style files


def _style_bytes(metadata: dict, tensors: dict | None = None) -> bytes:
    header = {"__metadata__": metadata, **(tensors or {})}
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text


def _shipped_metadata() -> dict:
    from engine.io.weightfile import read_header
    from engine.registry import style_path

    return dict(read_header(style_path("wave", "full")).metadata)


BAD_METADATA = {
    "res_blocks_1e8": lambda m: {**m, "config": json.dumps({"width": 32, "res_blocks": 10**8})},
    "width_negative": lambda m: {**m, "config": json.dumps({"width": -4, "res_blocks": 5})},
    "config_a_list": lambda m: {**m, "config": "[1, 2]"},
    "training_a_list": lambda m: {**m, "training": "[]"},
    "margin_text": lambda m: {**m, "training": json.dumps({"margin": "abc"})},
    "steps_negative": lambda m: {**m, "steps": "-5"},
    "nested_deep": lambda m: {**m, "training": "[" * 200_000 + "]" * 200_000},
}


@pytest.mark.parametrize("case", sorted(BAD_METADATA))
def test_a_malformed_style_file_is_one_broken_entry(case, isolated_home):
    from engine.io.style_files import read_info
    from engine.registry import style_path

    shipped = style_path("wave", "full")
    data = shipped.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + length])
    header["__metadata__"] = BAD_METADATA[case](header["__metadata__"])
    text = json.dumps(header).encode()
    folder = isolated_home / "engine" / "styles"
    folder.mkdir(parents=True)
    bad = folder / "bad.safetensors"
    bad.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + length:])
    with pytest.raises(WeightsError):
        read_info(bad)
    started = time.monotonic()
    result = run("styles", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["bad"]["problem"] and rows["wave"]["problem"] is None
    assert time.monotonic() - started < 30
    photo = write_image(isolated_home / "p.png", (24, 20))
    result = run("apply", photo, "--style", "hokusai", "-o", isolated_home / "o.png")
    assert result.exit_code == 0, result.output
    one_line_error(run("apply", photo, "--style", "bad", "-o", isolated_home / "o2.png"),
                   "broken")


def test_a_malformed_generator_file_hides_no_other(isolated_home):
    from engine.io.generator_files import save_generator
    from engine.nets.gan import GanConfig, GeneratorNet

    folder = isolated_home / "engine" / "generators"
    folder.mkdir(parents=True)
    (folder / "a-bad.safetensors").write_bytes(_style_bytes(
        {"format": "engine-generator", "config": json.dumps({"size": 2**40})}))
    (folder / "b-list.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00[]")
    save_generator(folder / "c-good.safetensors", GeneratorNet(GanConfig(8, 4, 2)), {}, 1)
    result = run("generators", "--json")
    assert result.exit_code == 0, result.output
    names = {row["name"] for row in json.loads(result.output)}
    assert {"a-bad", "b-list", "c-good", "emoji"} <= names
    out = isolated_home / "gen"
    out.mkdir()
    result = run("generate", "-g", "a-bad", "-o", out, "-n", "1")
    one_line_error(result, "a-bad.safetensors")
    assert "plugin's author" not in result.output
    assert run("generate", "-g", "c-good", "-o", out, "-n", "2").exit_code == 0


def test_wrong_vgg_files_are_one_line(tmp_path, photo, painting):
    npz = tmp_path / "vgg.npz"
    np.savez(npz, a=np.zeros(3))
    one_line_error(run("optimize", photo, painting, "-o", tmp_path / "o.png", "--vgg-weights",
                       npz), "not a VGG weights format")
    style = ROOT / "weights" / "wave.safetensors"
    one_line_error(run("optimize", photo, painting, "-o", tmp_path / "o.png", "--vgg-weights",
                       style), "weights do not match")


# -------------------------------------------------------------------- training


@pytest.fixture
def trained(tiny_vgg, content_dir, style_image):
    from engine.training.settings import TrainSettings
    from engine.training.style import train_style

    tiny = dict(batch=1, size=32, style_size=32, width=4, res_blocks=1, checkpoint_every=2,
                preview_every=0, style_layers=("relu1_2", "relu2_2"))

    def train(name, steps=2, **options):
        return train_style(tiny_vgg, style_image, name, sorted(content_dir.glob("*.jpg")),
                           TrainSettings(steps=steps, **tiny), **options)
    return train


@pytest.fixture
def content_dir(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(3):
        write_image(folder / f"{index}.jpg", (48, 40), seed=index)
    return folder


@pytest.fixture
def style_image(tmp_path) -> Path:
    return write_image(tmp_path / "stripes.png", (64, 64), seed=9)


def test_a_second_run_of_a_name_is_refused_and_keeps_the_first(trained):
    from engine.io.style_files import style_dir

    first = trained("k9").style_path
    kept = first.read_bytes()
    with pytest.raises(UsageError, match="--resume continues it, --overwrite starts it over"):
        trained("k9")
    assert first.read_bytes() == kept
    trained("k9", steps=4, overwrite=True)
    assert (style_dir() / "k9.safetensors").read_bytes() != kept


def test_a_shipped_name_is_refused_and_overriding_it_must_be_asked(trained, tmp_path):
    from engine.registry import styles

    with pytest.raises(UsageError, match="shipped_styles"):
        trained("wave")
    with pytest.raises(UsageError, match="shipped_styles"):
        trained("hokusai")  # an alias is a name too
    trained("wave", overwrite=True)
    catalog = styles()
    assert catalog.get("wave").plugin == "engine_plugins.user_styles"
    assert catalog.get("hokusai").plugin == "engine_plugins.user_styles"  # what wave means
    result = run("styles", "--json")
    rows = [row for row in json.loads(result.output) if row["name"] == "wave"]
    assert [row["in_use"] for row in rows] == [True, False]
    assert "overrides" in rows[0]["note"] and "overridden" in rows[1]["note"]


def test_a_user_file_named_like_a_shipped_style_breaks_only_itself(isolated_home,
                                                                    tiny_style_file):
    from engine.registry import styles

    folder = isolated_home / "engine" / "styles"
    folder.mkdir(parents=True)
    for name in ("starry", "starry_night"):
        shutil.copy(tiny_style_file, folder / f"{name}.safetensors")
    catalog = styles()
    assert catalog.get("starry").plugin == "engine_plugins.shipped_styles"
    assert catalog.get("starry_night").plugin == "engine_plugins.shipped_styles"
    hidden = {entry.name: entry.problem for entry in catalog.hidden}
    assert "taken by the style 'starry_night'" in hidden["starry"]
    assert "--overwrite" in hidden["starry_night"]


def test_a_diverging_run_keeps_the_last_finite_checkpoint(trained, monkeypatch):
    from mlx.utils import tree_map

    import engine.training.style as train_module
    from engine.io.style_files import load_style

    good = trained("nan", steps=2).style_path
    kept = good.read_bytes()
    real = train_module.make_train_step

    def poisoned(vgg, net, optimizer, grams, settings, *rest):
        step, state = real(vgg, net, optimizer, grams, settings, *rest)
        calls = []

        def run_step(x):
            calls.append(1)
            loss, terms = step(x)
            if len(calls) >= 3:
                net.update(tree_map(lambda p: p * float("nan"), net.parameters()))
                loss = loss * float("nan")
            return loss, terms
        return run_step, state

    monkeypatch.setattr(train_module, "make_train_step", poisoned)
    with pytest.raises(EngineError, match="diverged at step 5.*checkpoint \\(step 4\\)"):
        trained("nan", steps=8, resume=True)
    net, info = load_style(good)
    assert info.steps == 4 and good.read_bytes() != kept
    assert all(np.isfinite(np.array(v)).all() for v in mx.load(str(good)).values())


def test_tiny_and_strip_content_photos_are_skipped(tmp_path, trained, content_dir):
    write_image(content_dir / "tiny.jpg", (5, 5))
    write_image(content_dir / "strip.jpg", (50000, 3))
    result = trained("strips", steps=2)
    assert result.steps == 2


def test_an_unwritable_engine_home_is_one_line(tmp_path, style_image, content_dir,
                                               tiny_vgg_file, monkeypatch):
    home = tmp_path / "home-file"
    home.write_text("not a folder")
    monkeypatch.setenv("ENGINE_HOME", str(home))
    result = run("train-style", style_image, "--content", content_dir, "--steps", "1",
                 "--size", "32", "--vgg-weights", tiny_vgg_file, "--net", "fast")
    one_line_error(result, "set ENGINE_HOME to a writable folder")


@pytest.mark.parametrize("args, needle", [
    (["--seed", "-1"], "'--seed'"), (["--seed", "100000000000000000000"], "'--seed'"),
    (["--learning-rate", "nan"], "--learning-rate nan"), (["--width", "0"], "--width 0 must be in 1..256"),
    (["--style-size", "0"], "--style-size 0"), (["--style-weight", "inf"], "--style-weight inf"),
    (["--size", "100000", "--batch", "64"], "megapixels"),
])
def test_bad_training_numbers_are_refused_up_front(args, needle, style_image, content_dir,
                                                   tiny_vgg_file):
    result = run("train-style", style_image, "--content", content_dir, "--steps", "1",
                 "--vgg-weights", tiny_vgg_file, *args)
    refused(result, needle)


def test_resume_after_changing_net_names_net(trained, tiny_vgg, style_image, content_dir):
    from engine.training.settings import TrainSettings
    from engine.training.style import train_style

    trained("nets", steps=2)
    with pytest.raises(UsageError, match="--net"):
        train_style(tiny_vgg, style_image, "nets", sorted(content_dir.glob("*.jpg")),
                    TrainSettings(steps=4, batch=1, size=32, style_size=32, width=4,
                                  res_blocks=1, arch="shuffle",
                                  style_layers=("relu1_2", "relu2_2")), resume=True)


def test_generator_names_and_sizes(tmp_path):
    folder = tmp_path / "faces"
    folder.mkdir()
    for index in range(4):
        write_image(folder / f"{index}.png", (16, 16), seed=index)
    one_line_error(run("train-generator", folder, "--name", "emoji", "--size", "8"),
                   "engine_plugins.trained_generators")
    one_line_error(run("train-generator", folder, "--name", "g", "--size", "1048576"),
                   "power of two from 8 to 1024")
    assert run("train-generator", folder, "--name", "g", "--size", "8", "--epochs", "1",
               "--batch", "2", "--width", "2", "--latent", "4").exit_code == 0
    one_line_error(run("train-generator", folder, "--name", "g", "--size", "8"),
                   "--resume continues it")


@pytest.mark.parametrize("args, needle", [
    (["-n", "1024", "--size", "4096"], "megapixels"), (["--seed", "-1"], "'--seed'"),
])
def test_generate_requests_are_bounded(tmp_path, args, needle):
    result = run("generate", "-g", "plasma", "-o", tmp_path, *args)
    refused(result, needle)


@pytest.mark.parametrize("args, needle", [
    (["--style-scale", "nan"], "--style-scale nan"), (["--style-scale", "inf"], "inf"),
    (["--style-scale", "1e6"], "--style-scale 1000000.0"),
    (["--style-weight", "nan"], "--style-weight nan"), (["--tv-weight", "inf"], "inf"),
    (["--seed", "-1"], "'--seed'"),
])
def test_bad_optimizer_numbers_are_refused_up_front(tmp_path, photo, painting, tiny_vgg_file,
                                                    args, needle):
    result = run("optimize", photo, painting, "-o", tmp_path / "o.png", "--vgg-weights",
                 tiny_vgg_file, "-n", "2", *args)
    refused(result, needle)
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_a_signal_during_train_style_then_resume(tmp_path, signum, tiny_vgg_file, content_dir,
                                                 style_image):
    from engine.io.weightfile import read_header

    env = {**os.environ, "ENGINE_HOME": str(tmp_path / "home")}
    base = [sys.executable, "-m", "engine", "train-style", str(style_image), "--name", "sig",
            "--content", str(content_dir), "--size", "32", "--style-size", "32", "--net",
            "fast", "--width", "4", "--checkpoint-every", "2", "--vgg-weights",
            str(tiny_vgg_file)]
    process = subprocess.Popen([*base, "--steps", "100000"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    checkpoint = tmp_path / "home" / "runs" / "sig" / "checkpoint.safetensors"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not checkpoint.is_file():
            time.sleep(0.05)
        assert checkpoint.is_file(), "no checkpoint came"
        time.sleep(0.3)
        process.send_signal(signum)
        output = process.communicate(timeout=120)[0].decode()
    finally:
        process.kill()  # (a no-op once it has ended)
    assert "Traceback" not in output
    if signum == signal.SIGKILL:
        assert process.returncode == -signal.SIGKILL
    else:
        assert process.returncode in (130, 143), output
        assert "resume with --resume" in output
        for folder in (checkpoint.parent, tmp_path / "home" / "styles"):
            assert not [p for p in folder.iterdir() if p.name.startswith(".")]
    step = int(read_header(checkpoint).metadata["step"])
    refused = subprocess.run([*base, "--steps", str(step + 2)], env=env, capture_output=True,
                             text=True)
    assert refused.returncode == 2 and "--resume continues it" in refused.stderr
    resumed = subprocess.run([*base, "--steps", str(step + 2), "--resume"], env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    style = tmp_path / "home" / "styles" / "sig.safetensors"
    assert int(read_header(style).metadata["steps"]) == step + 2

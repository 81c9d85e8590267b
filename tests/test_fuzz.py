"""Property-based fuzzing (Hypothesis) of everything that reads what a user hands the engine:
image files, every weight-file reader, checkpoint resumption and option values. The property
is the engine's promise: the input works, or it raises the engine's own error (one line for
the CLI); never another exception, never a hang.

`ENGINE_FUZZ_EXAMPLES=N` sets the examples per test (CI: the default below);
`benchmarks/fuzz.py` runs a long campaign and reports the counts."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from engine.errors import EngineError
from engine.io.images import load_image

from .conftest import write_image

EXAMPLES = int(os.environ.get("ENGINE_FUZZ_EXAMPLES", "40"))
COUNTS: dict[str, int] = {}  # examples run per test (benchmarks/fuzz.py reports them)
fuzz = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 100,
                suppress_health_check=list(HealthCheck))


def counted(name: str) -> None:
    COUNTS[name] = COUNTS.get(name, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    report = os.environ.get("ENGINE_FUZZ_REPORT")
    if report:
        old = json.loads(Path(report).read_text()) if Path(report).is_file() else {}
        Path(report).write_text(json.dumps({**old, **COUNTS}, indent=1))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def mutations(data: bytes):
    """Strategy: `data` with bytes flipped, cut, inserted or a region overwritten."""
    size = len(data)
    flip = st.lists(st.tuples(st.integers(0, size - 1), st.integers(1, 255)), min_size=1,
                    max_size=8).map(lambda edits: _flip(data, edits))
    cut = st.integers(0, size - 1).map(lambda n: data[:n])
    insert = st.tuples(st.integers(0, size), st.binary(min_size=1, max_size=64)).map(
        lambda t: data[:t[0]] + t[1] + data[t[0]:])
    overwrite = st.tuples(st.integers(0, size - 1), st.binary(min_size=1, max_size=32)).map(
        lambda t: data[:t[0]] + t[1] + data[t[0] + len(t[1]):])
    return st.one_of(flip, cut, insert, overwrite)


def _flip(data: bytes, edits) -> bytes:
    array = bytearray(data)
    for index, mask in edits:
        array[index] ^= mask
    return bytes(array)


def _image_bytes(fmt: str, mode: str = "RGB") -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (24, 32, 4), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGBA").convert(mode)
    stream = io.BytesIO()
    image.save(stream, format=fmt)
    return stream.getvalue()


# ---------------------------------------------------------------------------- images


@fuzz
@given(data=st.binary(max_size=4096), suffix=st.sampled_from([".png", ".jpg", ".webp", ".tif",
                                                              ".bmp", ".gif", ""]))
def test_random_bytes_as_an_image(scratch, data, suffix):
    counted("image: random bytes")
    path = scratch / f"random{suffix}"
    path.write_bytes(data)
    try:
        picture = load_image(path, 64)
    except EngineError:
        return
    assert picture.rgb.shape[0] == 1 and picture.rgb.shape[-1] == 3


@fuzz
@given(data=st.sampled_from([("PNG", "RGB"), ("PNG", "RGBA"), ("JPEG", "RGB"), ("PNG", "P"),
                             ("TIFF", "RGB"), ("WEBP", "RGB")]).flatmap(
    lambda kind: mutations(_image_bytes(*kind)).map(lambda b: (kind[0], b))))
def test_mutated_real_images(scratch, data):
    counted("image: mutated PNG/JPEG/TIFF/WebP")
    fmt, payload = data
    path = scratch / f"mutated.{fmt.lower()}"
    path.write_bytes(payload)
    try:
        picture = load_image(path, 64)
    except EngineError:
        return
    assert np.isfinite(np.array(picture.rgb)).all()


# ------------------------------------------------------------------ weight files


@pytest.fixture(scope="module")
def style_file(tmp_path_factory) -> Path:
    from engine.io.style_files import save_style
    from engine.nets.transformer import NetConfig, TransformerNet

    path = tmp_path_factory.mktemp("fuzz-style") / "tiny.safetensors"
    save_style(path, TransformerNet(NetConfig(4, 1)), {"size": 32, "margin": 0}, 3, "0" * 64,
               {"relu1_2": mx.ones((1, 4, 4))})
    return path


@pytest.fixture(scope="module")
def generator_file(tmp_path_factory) -> Path:
    from engine.io.generator_files import save_generator
    from engine.nets.gan import GanConfig, GeneratorNet

    path = tmp_path_factory.mktemp("fuzz-gen") / "g.safetensors"
    save_generator(path, GeneratorNet(GanConfig(8, 4, 2)), {}, 1)
    return path


def _readers():
    from engine.io.generator_files import load_generator
    from engine.io.style_files import load_style, load_targets, read_info
    from engine.io.weightfile import read_header

    return {"header": read_header, "style info": read_info, "style": load_style,
            "style targets": load_targets, "generator": load_generator}


def _read_all(path: Path) -> None:
    for name, reader in _readers().items():
        try:
            reader(path)
        except EngineError:
            pass


@fuzz
@given(data=st.binary(max_size=2048))
def test_random_bytes_as_every_weight_file(scratch, data):
    counted("weights: random bytes x 5 readers")
    path = scratch / "random.safetensors"
    path.write_bytes(data)
    _read_all(path)


@fuzz
@given(data=st.data())
def test_mutated_style_and_generator_files(scratch, style_file, generator_file, data):
    counted("weights: mutated style/generator bytes x 5 readers")
    source = data.draw(st.sampled_from([style_file, generator_file]))
    raw = source.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    # mostly mutate the header, where the declarations are
    payload = data.draw(st.one_of(mutations(raw[:8 + length]).map(lambda h: h + raw[8 + length:]),
                                  mutations(raw)))
    path = scratch / "mutated.safetensors"
    path.write_bytes(payload)
    _read_all(path)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)


def _with_metadata(raw: bytes, change) -> bytes:
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + length])
    header["__metadata__"] = change(header["__metadata__"])
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + raw[8 + length:]


@fuzz
@given(key=st.sampled_from(["config", "training", "steps", "format", "style_sha256",
                            "overrides"]),
       value=json_values, as_text=st.booleans(),
       inner=st.sampled_from([None, "width", "res_blocks", "arch", "dilations", "margin",
                              "style_layers", "size", "style_weight", "earlier"]))
def test_style_metadata_of_every_type(scratch, style_file, key, value, as_text, inner):
    counted("weights: style metadata values")
    from engine.io.style_files import load_style
    from engine.registry import Style

    def change(metadata):
        if inner is not None and key in ("config", "training"):
            fields = json.loads(metadata.get(key, "{}"))
            fields[inner] = value
            return {**metadata, key: json.dumps(fields)}
        return {**metadata, key: json.dumps(value) if as_text else value}

    path = scratch / "metadata.safetensors"
    path.write_bytes(_with_metadata(style_file.read_bytes(), change))
    _read_all(path)
    try:
        net, info = load_style(path)
    except EngineError:
        return
    from engine.stylize import Stylizer

    try:  # a file that loads must also apply (its training settings feed the stylizer)
        Stylizer(net, info)(mx.zeros((1, 16, 16, 3)))
    except EngineError:
        pass
    assert Style("x", path)


@fuzz
@given(key=st.sampled_from(["config", "training", "epochs", "format"]), value=json_values,
       inner=st.sampled_from([None, "size", "latent", "width"]))
def test_generator_metadata_of_every_type(scratch, generator_file, key, value, inner):
    counted("weights: generator metadata values")
    from engine.io.generator_files import as_generator

    def change(metadata):
        if inner is not None and key == "config":
            fields = json.loads(metadata["config"])
            fields[inner] = value
            return {**metadata, "config": json.dumps(fields)}
        return {**metadata, key: json.dumps(value)}

    path = scratch / "generator.safetensors"
    path.write_bytes(_with_metadata(generator_file.read_bytes(), change))
    _read_all(path)
    try:
        as_generator("g", path).generate(1, 0, 8)
    except EngineError:
        pass


# ------------------------------------------------------------------ checkpoints


@pytest.fixture(scope="module")
def run_to_resume(tmp_path_factory, tiny_vgg):
    """A finished 2-step run of a tiny style, its checkpoint, photos and painting."""
    from unittest import mock

    from engine.training.settings import TrainSettings
    from engine.training.style import _checkpoint_path, train_style

    home = tmp_path_factory.mktemp("fuzz-home")
    photos = [write_image(home / f"{i}.jpg", (40, 36), seed=i) for i in range(2)]
    painting = write_image(home / "painting.png", (64, 64), seed=5)
    settings = dict(batch=1, size=32, style_size=32, width=4, res_blocks=1, checkpoint_every=2,
                    preview_every=0, style_layers=("relu1_2",))
    with mock.patch.dict(os.environ, {"ENGINE_HOME": str(home)}):
        train_style(tiny_vgg, painting, "fz", photos, TrainSettings(steps=2, **settings))
        checkpoint = _checkpoint_path("fz")
    yield home, checkpoint, photos, painting, settings




@fuzz
@given(data=st.data())
def test_resuming_from_a_mutated_checkpoint(run_to_resume, tiny_vgg, monkeypatch, data):
    counted("checkpoint: resume from mutated")
    from engine.training.settings import TrainSettings
    from engine.training.style import train_style

    home, checkpoint, photos, painting, settings = run_to_resume
    monkeypatch.setenv("ENGINE_HOME", str(home))
    good = checkpoint.with_name("good.bin")
    if not good.exists():
        shutil.copy(checkpoint, good)
    raw = good.read_bytes()
    key = data.draw(st.sampled_from(["step", "settings", "losses", "style_sha256", None]))
    if key is None:
        length = int.from_bytes(raw[:8], "little")
        payload = data.draw(mutations(raw[:8 + length])) + raw[8 + length:]
    else:
        value = data.draw(json_values)
        inner = data.draw(st.sampled_from([None, "earlier", "size", "width", "arch"]))

        def change(metadata):
            if key == "settings" and inner is not None:
                fields = json.loads(metadata["settings"])
                fields[inner] = value
                return {**metadata, "settings": json.dumps(fields)}
            return {**metadata, key: json.dumps(value)}
        payload = _with_metadata(raw, change)
    checkpoint.write_bytes(payload)
    try:
        train_style(tiny_vgg, painting, "fz", photos, TrainSettings(steps=3, **settings),
                    resume=True)
    except EngineError:
        pass


# ---------------------------------------------------------------------- options


def _settings_check(factory, values) -> None:
    try:
        factory(**values).check(*([1] if factory.__name__ == "OptimizeSettings" else []))
    except EngineError:
        pass


numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                    st.integers(-2**70, 2**70))


@fuzz
@given(values=st.fixed_dictionaries({}, optional={
    "steps": st.integers(-5, 2**40), "batch": st.integers(-5, 2**20),
    "size": st.integers(-5, 2**20), "style_size": st.integers(-5, 2**20),
    "content_weight": numbers, "style_weight": numbers, "tv_weight": numbers,
    "learning_rate": numbers, "lr_decay": numbers, "width": st.integers(-5, 2**20),
    "margin": st.integers(-5, 2**20), "seed": st.integers(-2**70, 2**70),
    "seconds": numbers, "checkpoint_every": st.integers(-5, 10)}))
def test_training_settings_of_any_value(values):
    counted("options: train-style settings")
    from engine.training.settings import TrainSettings

    _settings_check(TrainSettings, values)


@fuzz
@given(values=st.fixed_dictionaries({}, optional={
    "iterations": st.integers(-5, 2**40), "style_scale": numbers, "content_weight": numbers,
    "style_weight": numbers, "tv_weight": numbers, "learning_rate": numbers,
    "seed": st.integers(-2**70, 2**70), "style_blend": st.lists(numbers, max_size=3)}))
def test_optimizer_settings_of_any_value(values):
    counted("options: optimize settings")
    from engine.optimize import OptimizeSettings

    _settings_check(OptimizeSettings, values)


option_text = st.one_of(st.integers(-2**70, 2**70).map(str), st.floats().map(str),
                        st.sampled_from(["nan", "inf", "-inf", "", "1e400", "0x10", "abc"]))


@fuzz
@given(options=st.dictionaries(st.sampled_from(["--max-size", "--strength", "--tile",
                                                "--margin", "--batch", "--net"]),
                               option_text, max_size=3))
def test_apply_with_any_option_values(scratch, options):
    counted("options: apply from the command line")
    from engine.cli import get_app

    photo = scratch / "photo.png"
    if not photo.exists():
        write_image(photo, (40, 30))
    out = scratch / "out.png"
    out.unlink(missing_ok=True)
    args = ["apply", str(photo), "--style", "starry", "-o", str(out)]
    for flag, value in options.items():
        args += [flag, value]
    result = CliRunner().invoke(get_app(), args)
    assert result.exit_code in (0, 2), (args, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        args, result.exception)
    if result.exit_code == 0:
        assert Image.open(out).size[0] >= 1
    else:
        assert not out.exists()

"""Training the any-painting network on tiny shapes with a tiny random VGG."""

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from engine.errors import UsageError, WeightsError
from engine.io.painting_files import load_painting_network, read_painting_info
from engine.io.style_files import write_atomic
from engine.training.runs import painting_network_dir, run_dir
from engine.training.settings import UniversalSettings
from engine.training.universal import train_universal
from tests.conftest import write_image


def folders(tmp_path, photos=3, paintings=4):
    content = [write_image(tmp_path / f"p{i}.png", (40, 36), seed=i) for i in range(photos)]
    art = [write_image(tmp_path / f"a{i}.png", (48, 40), seed=10 + i) for i in range(paintings)]
    return content, art


def settings(**changes) -> UniversalSettings:
    values = dict(steps=4, batch=2, size=32, width=8, res_blocks=1, hidden=16, code=6,
                  checkpoint_every=2, preview_every=2)
    values.update(changes)
    return UniversalSettings(**values)


def test_training_writes_a_loadable_network_and_resumes(tmp_path, tiny_vgg):
    content, art = folders(tmp_path)
    first = train_universal(tiny_vgg, "u", content, art, settings())
    path = painting_network_dir() / "u.safetensors"
    assert first.style_path == path and first.steps == 4 and len(first.losses) == 4
    assert all(np.isfinite(first.losses))
    assert path.with_suffix(".png").is_file() and (run_dir("u") / "loss.png").is_file()
    model, encoder, info = load_painting_network(path)
    assert info.steps == 4 and info.training["paintings_sha256"]
    # the encoder is the VGG's first layers: the same features
    x = mx.random.uniform(shape=(1, 16, 16, 3))
    assert np.allclose(np.array(encoder(x, ["relu4_1"])["relu4_1"]),
                       np.array(tiny_vgg(x, ["relu4_1"])["relu4_1"]), atol=1e-2)
    # a second run of the name is refused; --resume goes on from step 4 to 6
    with pytest.raises(UsageError, match="exists"):
        train_universal(tiny_vgg, "u", content, art, settings())
    resumed = train_universal(tiny_vgg, "u", content, art, settings(steps=6), resume=True)
    assert resumed.steps == 6 and len(resumed.losses) == 6
    assert resumed.losses[:4] == first.losses
    # another objective, or other paintings, cannot resume it
    with pytest.raises(UsageError, match="style-weight"):
        train_universal(tiny_vgg, "u", content, art, settings(steps=8, style_weight=1.0),
                        resume=True)
    with pytest.raises(UsageError, match="another style image"):
        train_universal(tiny_vgg, "u", content, art[:3], settings(steps=8), resume=True)


def test_too_few_paintings_and_bad_settings_are_refused(tmp_path, tiny_vgg):
    content, art = folders(tmp_path, paintings=1)
    with pytest.raises(UsageError, match="painting"):
        train_universal(tiny_vgg, "u", content, art, settings())
    with pytest.raises(UsageError, match="fast network"):
        train_universal(tiny_vgg, "u", content, art, settings(arch="johnson"))
    assert not painting_network_dir().exists() or not any(painting_network_dir().iterdir())


def test_a_damaged_network_file_is_one_clear_error(tmp_path, tiny_vgg):
    content, art = folders(tmp_path)
    train_universal(tiny_vgg, "u", content, art, settings(steps=2))
    path = painting_network_dir() / "u.safetensors"
    header = read_painting_info(path)
    assert header.config.code == 6
    bad = tmp_path / "bad.safetensors"
    write_atomic(bad, {"x": ("F32", np.zeros(2, np.float32))},
                 {"format": "engine-painting-network", "config": "{\"net\": 3}"})
    with pytest.raises(WeightsError, match="unreadable painting network metadata"):
        read_painting_info(bad)
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(WeightsError):
        load_painting_network(truncated)


def test_from_goes_on_training_a_network_of_the_same_shape(tmp_path, tiny_vgg):
    content, art = folders(tmp_path)
    train_universal(tiny_vgg, "u", content, art, settings(steps=4))
    start = painting_network_dir() / "u.safetensors"
    first, _, _ = load_painting_network(start)
    # steps count from 0: the new run goes on from step 4 with the first run's weights
    with pytest.raises(UsageError, match="already trained 4 steps"):
        train_universal(tiny_vgg, "v", content, art, settings(steps=4), start_from=start)
    more = train_universal(tiny_vgg, "v", content, art, settings(steps=6, learning_rate=0.0),
                           start_from=start)
    assert more.steps == 6 and len(more.losses) == 2
    went_on, _, info = load_painting_network(painting_network_dir() / "v.safetensors")
    assert info.steps == 6 and info.training["earlier"][-1]["steps"] == 4
    # a learning rate of 0 leaves the weights as they were (float16 in the file)
    for (key, a), (_, b) in zip(tree_flatten(first.parameters()),
                                tree_flatten(went_on.parameters())):
        assert np.array_equal(np.array(a), np.array(b)), key
    # another shape is refused before training; so is --from with --resume
    with pytest.raises(UsageError, match="same shape"):
        train_universal(tiny_vgg, "w", content, art, settings(steps=8, code=7),
                        start_from=start)
    with pytest.raises(UsageError, match="either --resume"):
        train_universal(tiny_vgg, "v", content, art, settings(steps=8), resume=True,
                        start_from=start)
    assert not (painting_network_dir() / "w.safetensors").exists()


def test_train_universal_from_a_registered_network_on_the_command_line(tmp_path, tiny_vgg_file):
    from typer.testing import CliRunner

    from engine.cli import app

    content, art = folders(tmp_path)
    photos, paintings = tmp_path / "photos", tmp_path / "paintings"
    for folder, files in ((photos, content), (paintings, art)):
        folder.mkdir()
        for file in files:
            file.rename(folder / file.name)
    base = ["train-universal", "--content", str(photos), "--paintings", str(paintings),
            "--batch", "2", "--size", "32", "--width", "8", "--vgg-weights", str(tiny_vgg_file)]
    runner = CliRunner()
    first = runner.invoke(app, [*base, "--name", "u", "--steps", "2"])
    assert first.exit_code == 0, first.output
    # by its registered name; the new network goes on from its step 2
    more = runner.invoke(app, [*base, "--name", "v", "--steps", "3", "--from", "u"])
    assert more.exit_code == 0, more.output
    assert read_painting_info(painting_network_dir() / "v.safetensors").steps == 3
    unknown = runner.invoke(app, [*base, "--name", "w", "--steps", "3", "--from", "nosuch"])
    assert unknown.exit_code == 2 and "unknown painting network 'nosuch'" in unknown.output
    assert "Traceback" not in unknown.output
    assert not (painting_network_dir() / "w.safetensors").exists()

"""The DCGAN: a few CPU steps, checkpoints, registration, determinism, bad input."""

import subprocess
import sys

import numpy as np
import pytest
from mlx.utils import tree_flatten
from PIL import Image

from engine import registry
from engine.errors import EngineError
from engine.io.generator_files import load_generator
from engine.plugins import reset
from engine.training.gan import GanSettings, train_generator
from tests.conftest import write_image

TINY = dict(size=16, latent=8, width=4, batch=8)


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(24):  # mixed modes and sizes, as a real folder would hold
        mode = ("RGB", "RGBA", "L")[i % 3]
        write_image(folder / f"img{i:02d}.png", (20 + i, 16 + 2 * i), mode=mode, seed=i)
    return folder


def _engine(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "engine", *map(str, args)],
                            capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_gan_trains_saves_resumes_and_registers(image_folder):
    result = train_generator(image_folder, "tiny", GanSettings(epochs=2, **TINY))
    assert result.epochs == 2 and result.steps == 2 * (24 // 8)
    assert all(np.isfinite(result.history).ravel())
    net, metadata = load_generator(result.path)
    assert metadata["epochs"] == "2"
    plot = Image.open(result.path.parent.parent / "runs" / "generator-tiny" / "loss.png")
    colours = np.unique(np.asarray(plot.convert("RGB")).reshape(-1, 3), axis=0)
    assert plot.size == (640, 320) and len(colours) > 3  # curves drawn on it
    # resuming continues from the checkpoint: 2 more epochs, 3 more steps each
    more = train_generator(image_folder, "tiny", GanSettings(epochs=4, **TINY), resume=True)
    assert more.epochs == 4 and len(more.history) == 4 * 3
    assert more.history[:6] == result.history
    reset()
    generator = registry.generators().get("tiny").item
    images = np.array(generator.generate(5, seed=3))
    assert images.shape == (5, 16, 16, 3) and 0 <= images.min() and images.max() <= 1
    assert images.std() > 0
    # the same seed gives the same images, whatever the count; another seed does not
    np.testing.assert_allclose(np.array(generator.generate(2, seed=3)), images[:2], atol=1e-6)
    assert np.abs(np.array(generator.generate(2, seed=4)) - images[:2]).max() > 1e-3
    walk = np.array(generator.between(3, 4, 4))
    np.testing.assert_allclose(walk[0], images[0], atol=1e-5)
    np.testing.assert_allclose(walk[-1], np.array(generator.generate(1, seed=4))[0], atol=1e-5)



def test_gan_interrupted_mid_epoch_resumes_at_the_next_batch(image_folder):
    """Ctrl-C while the 4th step's losses are shown (an epoch is 3): the 5th step, already
    queued, is kept, and --resume goes on with the 6th batch, so the run ends where an
    uninterrupted one does, loss for loss and weight for weight."""
    straight = train_generator(image_folder, "straight", GanSettings(epochs=2, **TINY))

    def stop_at_four(step):
        if step.step == 4:
            raise KeyboardInterrupt

    cut = train_generator(image_folder, "cut", GanSettings(epochs=2, **TINY),
                          on_step=stop_at_four)
    assert cut.interrupted and cut.epochs == 1 and len(cut.history) == 5
    resumed = train_generator(image_folder, "cut", GanSettings(epochs=2, **TINY), resume=True)
    assert len(resumed.history) == 6
    np.testing.assert_allclose(resumed.history, straight.history, rtol=1e-5)
    ours, _ = load_generator(resumed.path)
    theirs, _ = load_generator(straight.path)
    pairs = zip(tree_flatten(ours.parameters()), tree_flatten(theirs.parameters()))
    for (name, a), (_, b) in pairs:
        np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-6, err_msg=name)


def test_a_timed_gan_run_stops_on_time_with_its_files_and_resumes(image_folder, monkeypatch):
    """--minutes: the run stops at its budget mid-epoch (each step takes 1 s of a ticking
    clock; 5.5 s allow 5 steps and the one in flight), with the generator written, and --resume
    goes on to the end as an uninterrupted run would."""
    from engine.training import gan, loop

    straight = train_generator(image_folder, "straight", GanSettings(epochs=3, **TINY))
    now = [0.0]
    monkeypatch.setattr(loop, "_clock", lambda: now[0])
    making = gan.make_gan_step

    def ticking(*args):
        step, state = making(*args)

        def run(real, z):
            now[0] += 1.0
            return step(real, z)
        return run, state

    monkeypatch.setattr(gan, "make_gan_step", ticking)
    timed = train_generator(image_folder, "timed", GanSettings(epochs=3, seconds=5.5, **TINY))
    assert not timed.interrupted and 4 <= len(timed.history) < 9  # an epoch is 3 steps
    _, metadata = load_generator(timed.path)
    assert metadata["epochs"] == str(timed.epochs)
    monkeypatch.setattr(gan, "make_gan_step", making)
    resumed = train_generator(image_folder, "timed", GanSettings(epochs=3, **TINY), resume=True)
    assert len(resumed.history) == 9
    np.testing.assert_allclose(resumed.history, straight.history, rtol=1e-5)


def test_gan_resume_takes_the_new_learning_rate(image_folder, monkeypatch):
    from engine.training import gan

    train_generator(image_folder, "rate", GanSettings(epochs=1, learning_rate=2e-4, **TINY))
    rates = []
    making = gan.make_gan_step

    def spy(generator, discriminator, g_opt, d_opt, settings):
        rates.extend([float(g_opt.learning_rate), float(d_opt.learning_rate)])
        return making(generator, discriminator, g_opt, d_opt, settings)

    monkeypatch.setattr(gan, "make_gan_step", spy)
    train_generator(image_folder, "rate", GanSettings(epochs=2, learning_rate=1e-3, **TINY),
                    resume=True)
    assert rates == pytest.approx([1e-3, 1e-3])

def test_gan_training_from_the_cli_then_generate(image_folder, tmp_path):
    _engine("train-generator", image_folder, "--name", "cli-gan", "--size", "16", "--width",
            "4", "--latent", "8", "--batch", "8", "--epochs", "1")
    out = tmp_path / "out"
    out.mkdir()
    _engine("generate", "-g", "cli-gan", "-n", "3", "--seed", "1", "-o", out)
    assert sorted(p.name for p in out.iterdir()) == [
        "cli-gan-1-000.png", "cli-gan-1-001.png", "cli-gan-1-002.png", "cli-gan-1-grid.png"]


@pytest.mark.parametrize("content", ["empty", "not-images"])
def test_train_generator_bad_folders(tmp_path, content):
    folder = tmp_path / content
    folder.mkdir()
    if content == "not-images":
        (folder / "a.png").write_text("not a picture")
        (folder / "b.txt").write_text("hello")
    result = _engine("train-generator", folder, "--name", "x", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    with pytest.raises(EngineError):
        train_generator(folder, "x", GanSettings(**TINY))


@pytest.mark.parametrize("args, message", [
    (["-g", "plasma", "-n", "0"], "out of range"),
    (["-g", "plasma", "-n", "100000"], "out of range"),
    (["-g", "no-such-generator"], "known:"),
    (["-g", "plasma", "--interpolate", "1"], "two seeds"),
])
def test_generate_bad_input(tmp_path, args, message):
    result = _engine("generate", *args, "-o", tmp_path, check=False)
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("*.png"))


def test_noise_generators_keep_each_image_of_a_seed_and_interpolate():
    catalog = registry.generators()
    for name in ("plasma", "marble"):
        generator = catalog.get(name).item
        four = np.array(generator.generate(4, 11, 32))
        np.testing.assert_allclose(np.array(generator.generate(2, 11, 32)), four[:2], atol=1e-6)
        walk = np.array(generator.between(11, 12, 5, 32))
        np.testing.assert_allclose(walk[0], four[0], atol=1e-5)
        np.testing.assert_allclose(walk[-1], np.array(generator.generate(1, 12, 32))[0],
                                   atol=1e-4)
        assert np.abs(walk[2] - walk[0]).mean() > 0.01


def test_generate_stylized_by_the_optimizer(tmp_path, painting, tiny_vgg_file):
    _engine("generate", "-g", "plasma", "-n", "2", "--size", "32", "--optimize-style", painting,
            "--iterations", "3", "--vgg-weights", tiny_vgg_file, "-o", tmp_path)
    assert (tmp_path / "plasma-0-painting-grid.png").is_file()

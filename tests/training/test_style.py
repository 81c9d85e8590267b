import json
import threading
from contextlib import contextmanager

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten
from PIL import Image
from typer.testing import CliRunner

from engine.cli import app
from engine.errors import ImageError, UsageError, WeightsError
from engine.io import style_files as styles_module
from engine.io.images import load_image
from engine.io.style_files import load_style, read_info, style_dir
from engine.nets.transformer import NetConfig, TransformerNet
from engine.optimize import make_objective
from engine.refine import Refiner
from engine.training import loop as loop_module
from engine.training import style as train_module
from engine.training.settings import TrainSettings
from engine.training.style import train_style

from ..conftest import write_image

runner = CliRunner()
TINY = dict(batch=2, size=32, style_size=48, width=4, res_blocks=1, checkpoint_every=4,
            preview_every=4, learning_rate=5e-3)


@contextmanager
def stop_after(n):
    """Training interrupted (as Ctrl-C would) once its global step n has run: the interrupt
    lands as the loop asks for the next batch. (Raised from on_step it would land one step
    later or not, as the pipelined loop reports a step while the next one is queued.)"""
    real = train_module.ShardedContent.batches

    def batches(self, seed, per_shard, start, stop):
        for step, batch in enumerate(real(self, seed, per_shard, start, stop), start):
            if step == n:
                raise KeyboardInterrupt
            yield batch

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module.ShardedContent, "batches", batches)
        yield


@pytest.fixture
def content_dir(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        rng = np.random.default_rng(i)
        smooth = np.cumsum(rng.normal(size=(48, 64, 3)), axis=1)
        pixels = ((smooth - smooth.min()) / np.ptp(smooth) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"p{i}.jpg")
    return folder


@pytest.fixture
def style_image(tmp_path):
    stripes = (np.indices((96, 96)).sum(0) % 12 < 6)
    pixels = np.dstack([stripes * 230, stripes * 40 + 20, 200 - stripes * 150]).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "stripes.png")
    return tmp_path / "stripes.png"


def test_training_lowers_the_loss_and_saves_a_style(tiny_vgg, content_dir, style_image):
    settings = TrainSettings(steps=16, **TINY)
    photos = sorted(content_dir.glob("*.jpg"))
    result = train_style(tiny_vgg, style_image, "stripes", photos, settings)
    assert result.steps == 16 and not result.interrupted
    first, last = np.mean(result.losses[:3]), np.mean(result.losses[-3:])
    assert last < 0.8 * first
    info = read_info(result.style_path)
    assert result.style_path == style_dir() / "stripes.safetensors"
    assert info.steps == 16 and info.config.width == 4 and info.training["size"] == 32
    assert len(info.style_sha256) == 64 and info.engine_version
    assert info.preview is not None
    run = style_dir().parent / "runs" / "stripes"
    assert (run / "loss.png").is_file() and (run / "preview-000004.png").is_file()
    net, _ = load_style(result.style_path)
    assert net.config.width == 4


def test_resume_continues_where_it_stopped(tiny_vgg, content_dir, style_image):
    photos = sorted(content_dir.glob("*.jpg"))
    with stop_after(5):
        interrupted = train_style(tiny_vgg, style_image, "r", photos,
                                  TrainSettings(steps=12, **TINY))
    assert interrupted.interrupted and interrupted.steps == 5
    assert read_info(interrupted.style_path).steps == 5  # Ctrl-C leaves a usable style
    resumed = train_style(tiny_vgg, style_image, "r", photos, TrainSettings(steps=12, **TINY),
                          resume=True)
    assert resumed.steps == 12 and len(resumed.losses) == 12
    assert resumed.losses[:5] == interrupted.losses
    changed = TrainSettings(steps=16, **{**TINY, "style_weight": 1e6})
    with pytest.raises(UsageError, match="trained with --style-weight 100000.0, not 1000000.0"):
        train_style(tiny_vgg, style_image, "r", photos, changed, resume=True)
    layers = TrainSettings(steps=16, style_layers=("relu1_1",), **TINY)
    with pytest.raises(UsageError, match="--style-layers relu1_2,relu2_2,relu3_3,relu4_3, not "
                                         "relu1_1;"):
        train_style(tiny_vgg, style_image, "r", photos, layers, resume=True)
    fast = TrainSettings(steps=16, **{**TINY, "arch": "shuffle"})
    with pytest.raises(UsageError, match="trained with --net full, not fast"):
        train_style(tiny_vgg, style_image, "r", photos, fast, resume=True)
    checkpoint = style_dir().parent / "runs" / "r" / "checkpoint.safetensors"
    good = checkpoint.read_bytes()
    checkpoint.write_bytes(good[:40])
    with pytest.raises(WeightsError, match="start again without --resume"):
        train_style(tiny_vgg, style_image, "r", photos, TrainSettings(steps=16, **TINY),
                    resume=True)
    checkpoint.write_bytes(good)
    longer = train_style(tiny_vgg, style_image, "r", photos, TrainSettings(steps=14, **TINY),
                         resume=True)  # more steps: allowed
    assert longer.steps == 14


def assert_same_weights(first, second, **tolerance):
    """Every parameter of two networks equal: exactly, or within assert_allclose's tolerance."""
    for (key, a), (_, b) in zip(tree_flatten(first.parameters()),
                                tree_flatten(second.parameters())):
        if tolerance:
            np.testing.assert_allclose(np.array(a), np.array(b), err_msg=key, **tolerance)
        else:
            np.testing.assert_array_equal(np.array(a), np.array(b), err_msg=key)


def test_learning_rate_decay_schedule():
    rate = TrainSettings(steps=100, learning_rate=1e-3, lr_decay=0.2).schedule()
    at = [float(rate(mx.array(step))) for step in range(101)]
    assert at[0] == at[79] == pytest.approx(1e-3)
    assert np.all(np.diff(at[80:]) < 0) and at[100] == pytest.approx(1e-5)
    assert TrainSettings(steps=100, lr_decay=0.0).schedule() == 1e-3
    with pytest.raises(UsageError, match="--lr-decay"):
        TrainSettings(lr_decay=1.5).check()


def test_resume_takes_the_new_learning_rate_and_keeps_the_schedule(tiny_vgg, content_dir,
                                                                   style_image):
    photos = sorted(content_dir.glob("*.jpg"))
    decayed = {**TINY, "lr_decay": 0.5}
    whole = train_style(tiny_vgg, style_image, "w", photos, TrainSettings(steps=10, **decayed))
    with stop_after(6):
        train_style(tiny_vgg, style_image, "h", photos, TrainSettings(steps=10, **decayed))
    halves = train_style(tiny_vgg, style_image, "h", photos, TrainSettings(steps=10, **decayed),
                         resume=True)
    np.testing.assert_allclose(halves.losses, whole.losses, rtol=1e-4)
    first, _ = load_style(whole.style_path)
    second, _ = load_style(halves.style_path)
    assert_same_weights(first, second, rtol=1e-3, atol=1e-5)

    # --learning-rate 0 on resume: the network must not move (the saved 5e-3 is not reused)
    with stop_after(4):
        train_style(tiny_vgg, style_image, "z", photos, TrainSettings(steps=10, **TINY))
    before, _ = load_style(style_dir() / "z.safetensors")
    frozen = TrainSettings(steps=10, **{**TINY, "learning_rate": 0.0})
    train_style(tiny_vgg, style_image, "z", photos, frozen, resume=True)
    after, _ = load_style(style_dir() / "z.safetensors")
    assert_same_weights(before, after)


def test_training_goes_on_from_a_style_file(tiny_vgg, content_dir, style_image, tmp_path):
    photos = sorted(content_dir.glob("*.jpg"))
    first = train_style(tiny_vgg, style_image, "a", photos, TrainSettings(steps=6, **TINY))
    still = TrainSettings(steps=9, **{**TINY, "learning_rate": 0.0})
    same = train_style(tiny_vgg, style_image, "b", photos, still, start_from=first.style_path)
    assert same.steps == 9 and len(same.losses) == 3 and read_info(same.style_path).steps == 9
    before, _ = load_style(first.style_path)
    after, _ = load_style(same.style_path)
    assert_same_weights(before, after)
    # (learning rate 0: equal weights mean it started from the file's, not from a fresh network)

    with pytest.raises(UsageError, match="was trained with --style-weight 100000.0, not 1000000.0"):
        train_style(tiny_vgg, style_image, "d", photos,
                    TrainSettings(steps=9, **{**TINY, "style_weight": 1e6}),
                    start_from=first.style_path)
    with pytest.raises(UsageError, match="trained with --net full, not fast"):
        train_style(tiny_vgg, style_image, "d", photos,
                    TrainSettings(steps=9, **{**TINY, "arch": "shuffle"}),
                    start_from=first.style_path)
    other = write_image(tmp_path / "other.png", (96, 96))
    with pytest.raises(UsageError, match="another style image"):
        train_style(tiny_vgg, other, "d", photos, TrainSettings(steps=9, **TINY),
                    start_from=first.style_path)
    with pytest.raises(UsageError, match="already trained 6 steps; --steps counts from 0"):
        train_style(tiny_vgg, style_image, "d", photos, TrainSettings(steps=6, **TINY),
                    start_from=first.style_path)
    assert not (style_dir().parent / "runs" / "d").exists()  # refused before writing anything
    with pytest.raises(UsageError, match="either --resume"):
        train_style(tiny_vgg, style_image, "a", photos, TrainSettings(steps=9, **TINY),
                    resume=True, start_from=first.style_path)


def test_going_on_with_dilated_blocks_added(tiny_vgg, content_dir, style_image):
    """--from with --dilations adds residual blocks that start as the identity: at learning rate
    0 the network's output is the file's; trained, they move, and the file records them."""
    photos = sorted(content_dir.glob("*.jpg"))
    first = train_style(tiny_vgg, style_image, "a", photos, TrainSettings(steps=4, **TINY))
    wider = {**TINY, "dilations": (2, 3)}
    still = train_style(tiny_vgg, style_image, "s", photos,
                        TrainSettings(steps=6, **{**wider, "learning_rate": 0.0}),
                        start_from=first.style_path)
    x = mx.random.uniform(shape=(1, 32, 32, 3))
    before, _ = load_style(first.style_path)
    kept, info = load_style(still.style_path)
    assert info.config.dilations == (2, 3) and len(kept.blocks) == 3
    np.testing.assert_array_equal(np.array(kept(x)), np.array(before(x)))

    moved = train_style(tiny_vgg, style_image, "m", photos, TrainSettings(steps=8, **wider),
                        start_from=first.style_path)
    trained, _ = load_style(moved.style_path)
    assert float(mx.abs(trained.blocks[2].norm2.weight).max()) > 0
    result = runner.invoke(app, ["apply", "--style", "m", str(photos[0]), "-o",
                                 str(content_dir.parent / "m.png"), "--net", "full"])
    assert result.exit_code == 0, result.output

    with pytest.raises(UsageError, match="must begin with them"):
        train_style(tiny_vgg, style_image, "d", photos,
                    TrainSettings(steps=12, **{**TINY, "dilations": (3,)}),
                    start_from=moved.style_path)
    with stop_after(5):
        train_style(tiny_vgg, style_image, "r", photos, TrainSettings(steps=8, **wider))
    with pytest.raises(UsageError, match="--dilations 2,3, not 2"):
        train_style(tiny_vgg, style_image, "r", photos,
                    TrainSettings(steps=8, **{**TINY, "dilations": (2,)}), resume=True)


def test_training_with_a_margin_crops_before_the_loss_and_applies_with_it(
        tiny_vgg, content_dir, style_image):
    """--margin: the loss sees the network's output on the reflected crop, cropped back; the
    style file records the margin and applies with it unless told otherwise."""
    from engine.stylize import Stylizer
    from engine.training.style import framed_forward

    net = TransformerNet(NetConfig(4, 1))
    x = mx.random.uniform(shape=(2, 16, 20, 3))
    framed = mx.pad(x, [(0, 0), (4, 4), (4, 4), (0, 0)], mode="reflect")
    np.testing.assert_allclose(np.array(framed_forward(net, x, 4)),
                               np.array(net(framed))[:, 4:-4, 4:-4], atol=1e-6)
    np.testing.assert_array_equal(np.array(framed_forward(net, x, 0)), np.array(net(x)))

    photos = sorted(content_dir.glob("*.jpg"))
    result = train_style(tiny_vgg, style_image, "framed", photos,
                         TrainSettings(steps=6, **{**TINY, "margin": 4}))
    assert result.losses[-1] < result.losses[0]
    stylizer = Stylizer.from_file(result.style_path)
    assert stylizer.info.training["margin"] == 4 and stylizer.margin == 4
    assert Stylizer.from_file(result.style_path, margin=0).margin == 0
    listed = runner.invoke(app, ["styles"], env={"COLUMNS": "300"})
    assert listed.exit_code == 0 and "margin 4" in listed.output, listed.output
    with pytest.raises(UsageError, match="even"):
        TrainSettings(margin=3).check()
    # a style trained without one goes on with one (--from), not a resumed run
    plain = train_style(tiny_vgg, style_image, "plain", photos, TrainSettings(steps=4, **TINY))
    more = train_style(tiny_vgg, style_image, "more", photos,
                       TrainSettings(steps=6, **{**TINY, "margin": 4}),
                       start_from=plain.style_path)
    assert Stylizer.from_file(more.style_path).margin == 4
    with stop_after(5):
        train_style(tiny_vgg, style_image, "r", photos, TrainSettings(steps=8, **TINY))
    with pytest.raises(UsageError, match="margin"):
        train_style(tiny_vgg, style_image, "r", photos,
                    TrainSettings(steps=8, **{**TINY, "margin": 4}), resume=True)

def test_progress_starts_before_the_first_step_and_its_rate_leaves_that_step_out(
        tiny_vgg, content_dir, style_image, monkeypatch):
    """The first step compiles (minutes on a fresh GPU): the caller hears when it begins, from
    which step, and the images/s reported later count from the end of it."""
    photos = sorted(content_dir.glob("*.jpg"))
    first = train_style(tiny_vgg, style_image, "a", photos, TrainSettings(steps=3, **TINY))
    clock = []

    def now():  # read at the start, then once per step as its loss arrives: a slow first
        clock.append(0.0 if not clock else clock[-1] + (100.0 if len(clock) == 1 else 1.0))
        return clock[-1]  # step, then 1 s each

    monkeypatch.setattr(loop_module, "_clock", now)
    events = []
    train_style(tiny_vgg, style_image, "b", photos, TrainSettings(steps=7, **TINY),
                start_from=first.style_path, on_ready=lambda step: events.append(("ready", step)),
                on_step=lambda s: events.append((s.step, s.images_per_second)))
    batch = TINY["batch"]
    assert events == [("ready", 3), (4, 0.0), (5, batch), (6, batch), (7, batch)]


def test_going_on_at_a_larger_crop_size_records_the_earlier_stages(tiny_vgg, content_dir,
                                                                   style_image):
    """--from may change --size (fine-tuning at the size a style is used at); the metadata keeps
    each earlier stage, also when the fine-tune is interrupted and resumed."""
    photos = sorted(content_dir.glob("*.jpg"))
    first = train_style(tiny_vgg, style_image, "a", photos, TrainSettings(steps=4, **TINY))
    larger = {**TINY, "size": 2 * TINY["size"], "batch": 1, "learning_rate": 3e-4}
    with stop_after(6):
        train_style(tiny_vgg, style_image, "big", photos, TrainSettings(steps=9, **larger),
                    start_from=first.style_path)
    resumed = train_style(tiny_vgg, style_image, "big", photos, TrainSettings(steps=9, **larger),
                          resume=True)
    info = read_info(resumed.style_path)
    assert info.steps == 9 and info.training["size"] == 2 * TINY["size"]
    assert info.training["earlier"] == [{"size": TINY["size"], "batch": TINY["batch"],
                                         "learning_rate": TINY["learning_rate"], "lr_decay": 0.0,
                                         "steps": 4}]
    again = train_style(tiny_vgg, style_image, "bigger", photos,
                        TrainSettings(steps=11, **larger), start_from=resumed.style_path)
    assert [stage["steps"] for stage in read_info(again.style_path).training["earlier"]] == [4, 9]


def test_going_on_from_a_style_runs_the_schedule_on_the_global_step(tiny_vgg, content_dir,
                                                                    style_image, monkeypatch):
    """--from starts a fresh Adam (count 0, with bias correction); its learning rate still
    follows the schedule of the global step, and an interrupted --from run resumes exactly."""
    photos = sorted(content_dir.glob("*.jpg"))
    made = []
    real_adam = train_module.optim.Adam

    def recorded_adam(**kwargs):
        made.append(real_adam(**kwargs))
        return made[-1]

    monkeypatch.setattr(train_module.optim, "Adam", recorded_adam)
    first = train_style(tiny_vgg, style_image, "a", photos, TrainSettings(steps=6, **TINY))
    decayed = TrainSettings(steps=10, **{**TINY, "lr_decay": 0.4})  # cosine over steps 6..9
    whole = train_style(tiny_vgg, style_image, "w", photos, decayed, start_from=first.style_path)
    adam = made[-1]
    assert adam.bias_correction and int(adam.step) == 4
    last = float(adam.learning_rate)  # the rate of the last update, global step 9
    assert last == pytest.approx(float(decayed.schedule()(mx.array(9))))
    assert last < 0.5 * TINY["learning_rate"]  # (counted from 0 it would still be constant)
    assert not made[0].bias_correction  # training from scratch keeps MLX's default

    with stop_after(8):
        train_style(tiny_vgg, style_image, "h", photos, decayed, start_from=first.style_path)
    resumed = train_style(tiny_vgg, style_image, "h", photos, decayed, resume=True)
    assert made[-1].bias_correction and int(made[-1].step) == 4
    assert_same_weights(load_style(whole.style_path)[0], load_style(resumed.style_path)[0])


def test_steps_are_queued_one_ahead_of_the_losses_read(tiny_vgg, content_dir, style_image,
                                                     monkeypatch):
    """The loop queues step t+1 before it reads step t's loss (the GPU is never left waiting
    for the host), and reads every loss up to a checkpoint before writing it."""
    photos = sorted(content_dir.glob("*.jpg"))
    events = []
    real_step = train_module.make_train_step

    def logged_step(*args):
        step, state = real_step(*args)

        def run(batch):
            events.append("queue")
            return step(batch)
        return run, state

    monkeypatch.setattr(train_module, "make_train_step", logged_step)
    real_snapshot = train_module.checkpoint_snapshot  # a save's part in the training thread
    monkeypatch.setattr(train_module, "checkpoint_snapshot",
                        lambda *a: (events.append("save"), real_snapshot(*a))[1])
    train_style(tiny_vgg, style_image, "q", photos, TrainSettings(steps=6, **TINY),
                on_step=lambda s: events.append(s.step))
    assert events == ["queue", "queue", 1, "queue", 2, "queue", 3, 4, "save",
                      "queue", "queue", 5, 6, "save"]


def test_files_are_written_while_the_next_steps_train(tiny_vgg, content_dir, style_image,
                                                     monkeypatch):
    """A checkpoint's files are written on a background thread: the loss plot of the save at
    step 4 is still being drawn when step 5 is queued (on the training thread it would stall
    the steps until it returned)."""
    photos = sorted(content_dir.glob("*.jpg"))
    queued_after_save = threading.Event()
    overlapped = []
    real_step, real_plot = train_module.make_train_step, train_module.plot_losses

    def logged_step(*args):
        step, state = real_step(*args)
        calls = []

        def run(batch):
            calls.append(1)
            if len(calls) == 5:
                queued_after_save.set()
            return step(batch)
        return run, state

    def slow_plot(losses, path):
        if len(losses) == 4:  # the save at step 4 waits for step 5 to be queued
            overlapped.append(queued_after_save.wait(timeout=20))
        real_plot(losses, path)

    monkeypatch.setattr(train_module, "make_train_step", logged_step)
    monkeypatch.setattr(train_module, "plot_losses", slow_plot)
    result = train_style(tiny_vgg, style_image, "bg", photos, TrainSettings(steps=6, **TINY))
    assert overlapped == [True]
    assert result.steps == 6 and read_info(result.style_path).steps == 6
    checkpoint = train_module._checkpoint_path("bg")
    saved = styles_module.read_metadata(checkpoint, "engine-checkpoint", "checkpoint")
    assert saved["step"] == "6" and len(json.loads(saved["losses"])) == 6


def _ticking_clock(monkeypatch, per_step: float, first: float):
    """The training loop's clock advanced by the steps themselves: `first` s for the first (its
    compilation), `per_step` s for each after it."""
    now = [0.0]
    monkeypatch.setattr(loop_module, "_clock", lambda: now[0])
    real_step = train_module.make_train_step

    def ticking(*args):
        step, state = real_step(*args)

        def run(batch):
            now[0] += first if now[0] == 0.0 else per_step
            return step(batch)
        return run, state
    monkeypatch.setattr(train_module, "make_train_step", ticking)


def _saved_learning_rate(name: str) -> float:
    return mx.load(str(train_module._checkpoint_path(name)))["optimizer.learning_rate"].item()


def test_a_timed_run_fits_its_steps_and_its_decay_into_the_time(tiny_vgg, content_dir,
                                                                 style_image, monkeypatch):
    """--minutes: 5 s at 20 steps a second after a 1 s first step (its compilation): the run
    plans ~78 steps from the rate it measures, ends inside the time (a finished run, not an
    interrupted one) and its learning rate has decayed to ~1/100 on its last step."""
    photos = sorted(content_dir.glob("*.jpg"))
    _ticking_clock(monkeypatch, per_step=0.05, first=1.0)
    settings = TrainSettings(steps=10**9, seconds=5.0, lr_decay=0.5, **TINY)
    result = train_style(tiny_vgg, style_image, "timed", photos, settings)
    assert not result.interrupted
    assert 74 <= result.steps <= 79  # (5 s - 1 s - 0.1 s kept for the last save) x 20
    info = read_info(result.style_path)
    assert info.steps == result.steps and info.training["steps"] == result.steps
    assert info.training["seconds"] == 5.0
    assert _saved_learning_rate("timed") < 0.03 * settings.learning_rate


def test_a_timed_run_stops_at_its_steps_if_they_come_first(tiny_vgg, content_dir, style_image,
                                                           monkeypatch):
    photos = sorted(content_dir.glob("*.jpg"))
    _ticking_clock(monkeypatch, per_step=0.05, first=1.0)
    settings = TrainSettings(steps=30, seconds=60.0, lr_decay=0.5, **TINY)
    result = train_style(tiny_vgg, style_image, "capped", photos, settings)
    assert not result.interrupted and result.steps == 30
    assert read_info(result.style_path).training["steps"] == 30
    assert _saved_learning_rate("capped") < 0.03 * settings.learning_rate


def test_an_interrupt_just_after_an_update_counts_that_step(tiny_vgg, content_dir, style_image,
                                                            monkeypatch):
    """Ctrl-C while a step's update computes (after the compiled step returned): the saved style
    holds that update and says so in its step count, like a run that stopped there."""
    photos = sorted(content_dir.glob("*.jpg"))
    whole = train_style(tiny_vgg, style_image, "three", photos, TrainSettings(steps=3, **TINY))
    real_step, real_eval = train_module.make_train_step, train_module.mx.async_eval
    armed = []

    def third_step_armed(*args):
        step, state = real_step(*args)
        calls = []

        def wrapped(batch):
            calls.append(1)
            armed.append(len(calls) == 3)
            return step(batch)
        return wrapped, state

    def eval_then_interrupt(*arrays):  # Ctrl-C lands while the third step's update computes
        real_eval(*arrays)
        if armed and armed.pop():
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "make_train_step", third_step_armed)
    monkeypatch.setattr(train_module.mx, "async_eval", eval_then_interrupt)
    cut = train_style(tiny_vgg, style_image, "cut", photos, TrainSettings(steps=6, **TINY))
    assert cut.interrupted and cut.steps == 3 and read_info(cut.style_path).steps == 3
    assert_same_weights(load_style(whole.style_path)[0], load_style(cut.style_path)[0])


def test_a_crash_while_checkpointing_keeps_the_last_good_one(tiny_vgg, content_dir, style_image,
                                                             monkeypatch):
    photos = sorted(content_dir.glob("*.jpg"))
    train_style(tiny_vgg, style_image, "c", photos, TrainSettings(steps=4, **TINY))
    checkpoint = train_module._checkpoint_path("c")
    good = checkpoint.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(styles_module, "_write_safetensors", full_disk)
    with pytest.raises(WeightsError, match="disk is full"):
        train_style(tiny_vgg, style_image, "c", photos, TrainSettings(steps=8, **TINY),
                    resume=True)
    assert checkpoint.read_bytes() == good
    assert not [p for p in checkpoint.parent.iterdir() if p.name.startswith(".")]


def test_bad_training_input(tiny_vgg, tmp_path, content_dir, style_image):
    photos = sorted(content_dir.glob("*.jpg"))
    small = write_image(tmp_path / "small.png", (20, 20))
    with pytest.raises(ImageError, match="at least 64 px"):
        train_style(tiny_vgg, small, "s", photos, TrainSettings(steps=1, **TINY))
    with pytest.raises(UsageError, match="nothing to resume"):
        train_style(tiny_vgg, style_image, "fresh", photos, TrainSettings(steps=1, **TINY),
                    resume=True)
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["train-style", str(style_image), "--content",
                                 str(tmp_path / "empty"), "--steps", "1"])
    assert result.exit_code == 2 and "holds no images" in result.output
    result = runner.invoke(app, ["train-style", str(style_image), "--content", str(content_dir),
                                 "--style-layers", "relu1_2,conv9", "--steps", "1"])
    assert result.exit_code == 2 and "unknown style layer conv9" in result.output
    result = runner.invoke(app, ["train-style", str(style_image), "--content", str(content_dir),
                                 "--precision", "float8", "--steps", "1"])
    assert result.exit_code == 2 and "unknown precision 'float8'" in result.output
    result = runner.invoke(app, ["train-style", str(style_image), "--content", str(content_dir),
                                 "--minutes", "0"])
    assert result.exit_code == 2 and "--minutes must be more than 0" in result.output
    with pytest.raises(UsageError, match="--minutes must be more than 0"):
        train_style(tiny_vgg, style_image, "s", photos,
                    TrainSettings(steps=1, seconds=float("inf"), **TINY))
    if mx.default_device() == mx.cpu:
        result = runner.invoke(app, ["train-style", str(style_image), "--content",
                                     str(content_dir), "--precision", "bfloat16", "--steps", "1"])
        assert result.exit_code == 2 and "is for GPUs" in result.output


def test_no_compile_trains_op_by_op_and_turns_compilation_back_on(
        tiny_vgg_file, content_dir, style_image, monkeypatch):
    """--no-compile: mx.compile is off for the run (on a fresh GPU it starts at once instead of
    compiling kernels for minutes) and on again after it, even when the run fails."""
    calls = []
    for name in ("disable_compile", "enable_compile"):
        real = getattr(mx, name)
        monkeypatch.setattr(mx, name, lambda real=real, name=name: calls.append(name) or real())
    args = ["train-style", str(style_image), "--content", str(content_dir), "--batch", "2",
            "--size", "32", "--style-size", "48", "--width", "4", "--steps", "3",
            "--style-layers", "relu1_1,relu2_1,relu3_1", "--vgg-weights", str(tiny_vgg_file)]
    result = runner.invoke(app, [*args, "--name", "eager", "--no-compile"])
    assert result.exit_code == 0, result.output
    assert calls == ["disable_compile", "enable_compile"]
    assert read_info(style_dir() / "eager.safetensors").steps == 3
    calls.clear()
    result = runner.invoke(app, [*args, "--name", "never", "--no-compile", "--resume"])
    assert result.exit_code == 2 and "nothing to resume" in result.output  # raised in the run
    assert calls == ["disable_compile", "enable_compile"]
    calls.clear()
    result = runner.invoke(app, [*args, "--name", "compiled"])
    assert result.exit_code == 0 and calls == []

def test_minutes_from_the_cli_plan_the_steps_and_end_the_decay(tiny_vgg_file, content_dir,
                                                               style_image, monkeypatch):
    """`train-style --minutes` with no --steps: no ceiling, the run ends on its planned step
    (the clock ticks 0.05 s per step: 20 steps a second) with the learning rate decayed."""
    _ticking_clock(monkeypatch, per_step=0.05, first=0.5)
    result = runner.invoke(app, [
        "train-style", str(style_image), "--name", "timed", "--content", str(content_dir),
        "--minutes", "0.05", "--lr-decay", "0.5", "--batch", "2", "--size", "32",
        "--style-size", "48", "--width", "4", "--style-layers", "relu1_1,relu2_1",
        "--vgg-weights", str(tiny_vgg_file)])
    assert result.exit_code == 0, result.output
    assert "the first step took" not in result.output  # 0.5 s of 3
    info = read_info(style_dir() / "timed.safetensors")
    assert info.training["seconds"] == 3.0 and 40 <= info.steps <= 50  # (3 - 0.5 - 0.06) x 20
    assert info.training["steps"] == info.steps
    assert _saved_learning_rate("timed") < 0.03 * TrainSettings().learning_rate


def test_minutes_mostly_spent_compiling_say_so(tiny_vgg_file, content_dir, style_image,
                                               monkeypatch):
    """A fresh GPU may spend most of --minutes compiling the first step: the run says so (and
    that the next one will not), rather than leave a few-step style unexplained."""
    _ticking_clock(monkeypatch, per_step=0.05, first=2.0)
    result = runner.invoke(app, [
        "train-style", str(style_image), "--name", "slow", "--content", str(content_dir),
        "--minutes", "0.05", "--batch", "2", "--size", "32", "--style-size", "48", "--width", "4",
        "--style-layers", "relu1_1,relu2_1", "--vgg-weights", str(tiny_vgg_file)])
    assert result.exit_code == 0, result.output
    assert "the first step took 2 s of the 0.05 minutes" in " ".join(result.output.split())
    assert read_info(style_dir() / "slow.safetensors").steps < 20


def test_trained_style_applies_from_the_cli(tiny_vgg, tiny_vgg_file, content_dir, style_image,
                                            tmp_path):
    result = runner.invoke(app, [
        "train-style", str(style_image), "--name", "stripes", "--content", str(content_dir),
        "--steps", "4", "--batch", "2", "--size", "32", "--style-size", "48", "--width", "4",
        "--style-layers", "relu1_1, relu2_1,relu3_1", "--vgg-weights", str(tiny_vgg_file)])
    assert result.exit_code == 0, result.output
    training = read_info(style_dir() / "stripes.safetensors").training
    assert training["style_layers"] == ["relu1_1", "relu2_1", "relu3_1"]
    listed = runner.invoke(app, ["styles", "--json"])
    assert '"name": "stripes"' in listed.output
    photo = write_image(tmp_path / "photo.png", (30, 22))
    out = tmp_path / "out.png"
    applied = runner.invoke(app, ["apply", "--style", "stripes", str(photo), "-o", str(out)])
    assert applied.exit_code == 0, applied.output
    assert Image.open(out).size == (30, 22)
    folder_out = tmp_path / "outs"
    folder_out.mkdir()
    many = runner.invoke(app, ["apply", "--style", "stripes", str(content_dir), "--out-dir",
                               str(folder_out), "--strength", "0.5"])
    assert many.exit_code == 0, many.output
    assert sorted(p.name for p in folder_out.iterdir()) == [
        "p0-stripes.png", "p1-stripes.png", "p2-stripes.png"]
    more = ["train-style", str(style_image), "--content", str(content_dir), "--batch", "2",
            "--size", "32", "--style-size", "48", "--width", "4", "--style-layers",
            "relu1_1,relu2_1,relu3_1", "--vgg-weights", str(tiny_vgg_file), "--from", "stripes"]
    longer = runner.invoke(app, [*more, "--name", "stripes2", "--steps", "6", "--lr-decay", "0.5"])
    assert longer.exit_code == 0, longer.output
    assert read_info(style_dir() / "stripes2.safetensors").steps == 6
    mismatch = runner.invoke(app, [*more, "--name", "stripes3", "--steps", "6", "--tv-weight",
                                   "1"])
    assert mismatch.exit_code == 2 and "was trained with --tv-weight 10.0, not 1.0" in \
        mismatch.output
    assert len(mismatch.output.strip().splitlines()) == 1, mismatch.output  # no bar above it
    larger = runner.invoke(app, [*more, "--name", "stripes4", "--steps", "8", "--size", "64"])
    assert larger.exit_code == 0, larger.output
    assert "training" in larger.output  # the bar, once steps run
    info = read_info(style_dir() / "stripes4.safetensors")
    assert info.training["size"] == 64 and info.training["earlier"][-1]["size"] == 32


def test_a_style_keeps_its_targets_and_apply_refine_optimizes_from_its_output(
        tiny_vgg, tiny_vgg_file, content_dir, style_image, tmp_path, tiny_style_file):
    """A trained style file carries the painting's Gram matrices on its training layers;
    `apply --refine N` starts the optimizer from the network's output on the style's own loss
    and lowers that loss; a style file without targets gets a one-line error."""
    result = runner.invoke(app, [
        "train-style", str(style_image), "--name", "kept", "--content", str(content_dir),
        "--steps", "3", "--batch", "2", "--size", "32", "--style-size", "48", "--width", "4",
        "--style-layers", "relu1_1,relu2_1", "--vgg-weights", str(tiny_vgg_file)])
    assert result.exit_code == 0, result.output
    path = style_dir() / "kept.safetensors"
    targets = styles_module.load_targets(path)
    expected = train_module.style_target(tiny_vgg, [load_image(style_image).rgb], np.ones(1),
                                         ("relu1_1", "relu2_1"), 48, 1.0)
    assert sorted(targets) == ["relu1_1", "relu2_1"]
    for layer, gram in expected.items():
        assert targets[layer].shape == gram.shape
        assert np.allclose(np.array(targets[layer]), np.array(gram), rtol=2e-3, atol=1e-6)
    load_style(path)  # the network loads as before (strict: the targets are not weights)

    photo = write_image(tmp_path / "photo.png", (36, 28))
    plain, refined = tmp_path / "plain.png", tmp_path / "refined.png"
    for out, extra in ((plain, []), (refined, ["--refine", "5"])):
        applied = runner.invoke(app, ["apply", "--style", "kept", str(photo), "-o", str(out),
                                      "--vgg-weights", str(tiny_vgg_file), *extra])
        assert applied.exit_code == 0, applied.output
    info = read_info(path)
    refiner = Refiner(tiny_vgg, targets, info.training, 1)
    image = load_image(photo).rgb
    objective = make_objective(tiny_vgg, image, targets, refiner.settings)

    def loss(png):
        return objective(load_image(png).rgb)[0][0].item()
    assert loss(refined) < 0.9 * loss(plain), (loss(refined), loss(plain))
    with pytest.raises(UsageError, match="up to 2048 px"):
        refiner.check(mx.zeros((1, 2049, 16, 3)))

    bare = runner.invoke(app, ["apply", "--style", str(tiny_style_file), str(photo), "-o",
                               str(tmp_path / "x.png"), "--refine", "2", "--vgg-weights",
                               str(tiny_vgg_file)])
    assert bare.exit_code == 2 and "holds no style targets" in bare.output
    assert len(bare.output.strip().splitlines()) == 1




def test_bfloat16_training_follows_float32_and_keeps_float32_weights(tiny_vgg, style_image):
    """Mixed precision (--precision bfloat16): the same loss and gradient as float32 within
    bfloat16's rounding; the weights the optimizer updates stay float32."""
    import mlx.optimizers as optim

    from engine.io.images import load_image
    from engine.optimize import style_target
    from engine.training.style import make_train_step

    x = mx.array(np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32))
    style = load_image(style_image).rgb
    runs = {}
    for precision in ("float32", "bfloat16"):
        settings = TrainSettings(**TINY, precision=precision)
        grams = style_target(tiny_vgg, [style], np.ones(1), settings.style_layers, 48, 1.0)
        mx.random.seed(3)
        net = TransformerNet(settings.config)
        mx.eval(net.parameters())
        before = dict(tree_flatten(net.parameters()))
        step, state = make_train_step(tiny_vgg, net, optim.SGD(learning_rate=1.0), grams,
                                      settings)
        loss, terms = step(x)
        mx.eval(loss, terms, state)
        after = dict(tree_flatten(net.parameters()))
        assert all(v.dtype == mx.float32 for v in after.values())
        runs[precision] = float(loss), np.concatenate(
            [np.array(before[k] - after[k]).ravel() for k in sorted(after)])  # the gradient
    (loss32, grad32), (loss16, grad16) = runs["float32"], runs["bfloat16"]
    assert abs(loss16 - loss32) < 0.03 * loss32
    cosine = grad16 @ grad32 / (np.linalg.norm(grad16) * np.linalg.norm(grad32))
    assert cosine > 0.97 and np.linalg.norm(grad16) == pytest.approx(np.linalg.norm(grad32),
                                                                      rel=0.05)


def test_instance_norm_gradient_in_bfloat16():
    """The norm's own VJP (training on a GPU) in bfloat16: float32 statistics and sums, so it
    matches float32 autodiff of the plain formula within bfloat16's rounding."""
    from engine.nets.transformer import _instance_norm_fn

    def formula(x, w, b, eps):
        mean, var = mx.mean(x, axis=(1, 2), keepdims=True), mx.var(x, axis=(1, 2), keepdims=True)
        return (x - mean) * mx.rsqrt(var + eps) * w + b

    rng = np.random.default_rng(1)
    x = mx.array(rng.normal(2.0, 3.0, (2, 24, 24, 8)).astype(np.float32))
    w, b = mx.array(rng.normal(1, 0.3, 8).astype(np.float32)), mx.array(rng.normal(size=8))
    g = mx.array(rng.normal(size=(2, 24, 24, 8)).astype(np.float32))

    def loss(norm, x, w, b):
        return mx.sum(norm(x, w, b).astype(mx.float32) * g)

    reference = mx.grad(lambda *a: loss(lambda x, w, b: formula(x, w, b, 1e-5), *a),
                        argnums=(0, 1, 2))(x, w, b)
    half = [a.astype(mx.bfloat16) for a in (x, w, b)]
    own = mx.grad(lambda *a: loss(_instance_norm_fn(1e-5), *a), argnums=(0, 1, 2))(*half)
    for mine, theirs in zip(own, reference):
        assert mine.dtype == mx.bfloat16
        error = np.abs(np.array(mine.astype(mx.float32)) - np.array(theirs)).max()
        assert error < 0.02 * np.abs(np.array(theirs)).max() + 1e-3


def test_train_style_takes_the_machines_recipe_for_what_is_left_out(content_dir, style_image,
                                                                     tiny_vgg_file):
    """On the CPU: a warm start from the any-painting network, its layout, the CPU recipe; a
    layout option given leaves the warm start out; --recipe none keeps the plain defaults."""
    base = ["train-style", str(style_image), "--content", str(content_dir), "--steps", "1",
            "--vgg-weights", str(tiny_vgg_file)]
    for name, extra in (("auto", []), ("sized", ["--width", "8", "--net", "fast"]),
                        ("plain", ["--recipe", "none", "--size", "32", "--width", "4"])):
        result = runner.invoke(app, [*base, "--name", name, *extra])
        assert result.exit_code == 0, result.output
    auto = read_info(style_dir() / "auto.safetensors")
    assert (auto.config.arch, auto.config.width) == ("shuffle", 64)
    assert auto.training["warm_start"] == "universal" and auto.training["size"] == 192
    assert auto.training["style_layers"] == ["relu1_1", "relu2_1", "relu3_1", "relu4_1"]
    sized = read_info(style_dir() / "sized.safetensors")
    assert sized.config.width == 8 and sized.training["warm_start"] == ""
    assert sized.training["size"] == 192  # the rest of the recipe still applies
    plain = read_info(style_dir() / "plain.safetensors")
    assert plain.training["style_layers"] == list(TrainSettings().style_layers)
    assert plain.training["warm_start"] == "" and plain.config.arch == "johnson"

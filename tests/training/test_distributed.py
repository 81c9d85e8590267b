"""Data-parallel training and apply under mlx.launch: two local processes on the ring backend."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten
from PIL import Image

from engine.io.style_files import TARGETS, read_info, style_dir
from engine.nets.transformer import TransformerNet
from engine.training import distributed
from engine.training.data import ShardedContent
from engine.training.runs import run_dir
from engine.training.settings import TrainSettings
from engine.training.style import train_style

from ..conftest import write_image
from .test_style import content_dir, style_image  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[2]
# the CLI's defaults where the test does not set them, so both runs train the same network
SETTINGS = dict(size=32, style_size=48, width=4, res_blocks=5, checkpoint_every=250,
                preview_every=250)


def free_port(count: int = 2) -> int:
    """A port p with p .. p+count-1 free: the ring backend listens on one port per rank."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            probes = []
            for offset in range(count):
                probe = socket.socket()
                probes.append(probe)
                probe.bind(("127.0.0.1", port + offset))
            return port
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    raise RuntimeError("no free ports")


def launch(*args: str, processes: int = 2) -> subprocess.CompletedProcess:
    """`mlx.launch -n N --backend ring -- python -m engine ARGS` on this machine."""
    launcher = shutil.which("mlx.launch", path=str(Path(sys.executable).parent)) or \
        shutil.which("mlx.launch")
    assert launcher, "mlx.launch is installed with mlx"
    port = free_port()
    run = subprocess.run(
        [launcher, "-n", str(processes), "--backend", "ring", "--starting-port", str(port),
         "--", sys.executable, "-m", "engine", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    return run


def weights(path: Path) -> dict[str, np.ndarray]:
    """A style file's network weights (not its style targets)."""
    return {k: np.array(v) for k, v in mx.load(str(path)).items()
            if not k.startswith(TARGETS)}


def test_a_process_alone_is_a_group_of_one():
    assert distributed.size() == 1 and distributed.rank() == 0 and distributed.is_main()
    assert distributed.shard(list(range(5))) == [0, 1, 2, 3, 4]
    assert distributed.shard(list(range(5)), 1, 2) == [1, 3]
    x = mx.array([1.0, 2.0])
    assert distributed.mean(x) is x


def test_shards_split_the_photos_and_fix_each_steps_crops(content_dir):  # noqa: F811
    photos = sorted(content_dir.iterdir())
    both = ShardedContent(photos, 16, shards=2)
    one = ShardedContent(photos, 16, shards=2, held=[1])
    assert [len(both.sets[s].images) for s in (0, 1)] == [2, 1]
    np.testing.assert_array_equal(both.sets[1].sample(0, 1, 5, 2), one.sets[1].sample(0, 1, 5, 2))
    assert not np.array_equal(one.sets[1].sample(0, 1, 5, 2), one.sets[1].sample(0, 1, 6, 2))
    with pytest.raises(Exception, match="at least one photo per process"):
        ShardedContent(photos[:1], 16, shards=2)


def test_two_processes_train_the_weights_of_one_with_the_doubled_batch(
        tiny_vgg, tiny_vgg_file, content_dir, style_image, tmp_path):  # noqa: F811
    run = launch("train-style", str(style_image), "--name", "dp", "--content", str(content_dir),
                 "--steps", "4", "--batch", "1", "--size", "32", "--style-size", "48",
                 "--width", "4", "--vgg-weights", str(tiny_vgg_file), "--recipe", "none")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    output = run.stdout + run.stderr
    assert "data-parallel over 2 processes" in output
    parallel = style_dir() / "dp.safetensors"
    info = read_info(parallel)
    assert info.steps == 4 and info.training["processes"] == 2
    assert info.training["global_batch"] == 2

    # one process, batch 2 split into the same two shards, interrupted after 2 steps and resumed
    photos = sorted(content_dir.iterdir())
    train_style(tiny_vgg, style_image, "single", photos,
                TrainSettings(steps=2, batch=2, **SETTINGS), data_shards=2)
    single = train_style(tiny_vgg, style_image, "single", photos,
                         TrainSettings(steps=4, batch=2, **SETTINGS), resume=True,
                         data_shards=2)
    assert single.steps == 4
    a, b = weights(parallel), weights(single.style_path)
    assert a.keys() == b.keys()
    mx.random.seed(0)
    initial = {k: np.array(v) for k, v in tree_flatten(TransformerNet(info.config).parameters())}
    difference = np.concatenate([np.abs(a[k] - b[k]).ravel() for k in a]).astype(np.float32)
    movement = np.concatenate([np.abs(a[k] - initial[k]).ravel() for k in a]).astype(np.float32)
    # The losses along the way agree...
    parallel_losses = json.loads(mx.load(str(run_dir("dp") / "checkpoint.safetensors"),
                                         return_metadata=True)[1]["losses"])
    np.testing.assert_allclose(parallel_losses, single.losses, rtol=1e-3)
    # ...and so do the weights: gradient sums in another order can flip the sign of Adam's
    # step where a gradient is ~0 (Adam divides by its size), which moves those few weights by
    # a few learning-rate steps; the rest agree closely against how far training moved them.
    update_a = np.concatenate([(a[k] - initial[k]).ravel() for k in a]).astype(np.float32)
    update_b = np.concatenate([(b[k] - initial[k]).ravel() for k in a]).astype(np.float32)
    cosine = update_a @ update_b / np.linalg.norm(update_a) / np.linalg.norm(update_b)
    learning_rate = TrainSettings().learning_rate
    assert movement.mean() > 1e-3
    assert cosine > 0.98, cosine
    assert np.mean(difference > 2 * learning_rate) < 0.05, np.mean(difference > 2 * learning_rate)
    assert difference.mean() < 0.1 * movement.mean(), (difference.mean(), movement.mean())


def test_apply_shards_a_folder_across_processes(tiny_vgg_file, content_dir, style_image,  # noqa: F811
                                                tmp_path):
    trained = launch("train-style", str(style_image), "--name", "dp2", "--content",
                     str(content_dir), "--steps", "1", "--batch", "1", "--size", "32",
                     "--style-size", "48", "--width", "4", "--vgg-weights", str(tiny_vgg_file))
    assert trained.returncode == 0, trained.stderr[-3000:]
    photos = tmp_path / "many"
    photos.mkdir()
    for i in range(5):
        write_image(photos / f"p{i}.png", (20 + i, 16), seed=i)
    out = tmp_path / "out"
    out.mkdir()
    run = launch("apply", "--style", "dp2", str(photos), "--out-dir", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    written = sorted(p.name for p in out.iterdir())
    assert len(written) == 5
    output = run.stdout + run.stderr
    assert "process 0: wrote 3 image(s)" in output and "process 1: wrote 2 image(s)" in output
    assert Image.open(out / written[0]).size == (20, 16)


def test_a_launch_of_one_process_runs_as_one():
    # mlx.launch -n 1 hands the process an empty host file; that is a group of one, not an error
    run = launch("styles", "--json", processes=1)
    assert run.returncode == 0, run.stderr[-2000:]
    assert '"name": "starry_night"' in run.stdout


@pytest.mark.parametrize("cores", [1, 8])
def test_batches_come_in_step_order_whatever_the_threads(content_dir, monkeypatch, cores):  # noqa: F811
    """Batches made ahead on several threads come out in step order, each the step's own."""
    from engine.training import data as data_module

    monkeypatch.setattr(data_module.os, "cpu_count", lambda: cores)
    photos = sorted(content_dir.iterdir())
    data = ShardedContent(photos, 16, shards=2)
    got = list(data.batches(seed=3, per_shard=2, start=4, stop=11))
    assert len(got) == 7
    for step, batch in zip(range(4, 11), got):
        want = np.concatenate([data.sets[s].sample(3, s, step, 2) for s in (0, 1)])
        np.testing.assert_array_equal(batch, want)
    stream = data.batches(seed=3, per_shard=2, start=0, stop=100)
    first = np.concatenate([data.sets[s].sample(3, s, 0, 2) for s in (0, 1)])
    np.testing.assert_array_equal(next(stream), first)
    stream.close()  # an interrupted run: the batches not made yet are dropped

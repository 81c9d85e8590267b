"""The CPU fast path: MKL loaded ahead of MLX's reference BLAS, the fast network per style."""

import json
import os
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from typer.testing import CliRunner

import engine
from engine import blas
from engine.cli import app
from engine.io.style_files import read_info
from engine.nets.transformer import FAST
from engine.registry import style_path
from engine.stylize import Stylizer
from tests.conftest import varied_net

ROOT = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter: stylize a fixed image with the shipped fast starry network and
# time a 512^3 matrix product; prints the BLAS state, the result and the timing as JSON.
PROBE = """
import json, sys, time
import numpy as np
import engine
import mlx.core as mx
from engine.registry import style_path
from engine.stylize import Stylizer
rng = np.random.default_rng(0)
image = mx.array(rng.random((1, 64, 96, 3), dtype=np.float32))
out = Stylizer.from_file(style_path("starry", "fast"))(image)
a = mx.array(rng.standard_normal((512, 512), dtype=np.float32))
mx.eval(a @ a)
start = time.perf_counter()
for _ in range(3):
    mx.eval(a @ a)
seconds = (time.perf_counter() - start) / 3
np.save(sys.argv[1], np.array(out))
print(json.dumps({"library": engine.blas.state().library, "reason": engine.blas.state().reason,
                  "provider": engine.blas.sgemm_provider(), "seconds": seconds}))
"""


def probe(tmp_path, name, **env):
    target = tmp_path / f"{name}.npy"
    run = subprocess.run([sys.executable, "-c", PROBE, str(target)], capture_output=True,
                         text=True, env={**os.environ, **env}, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1]), np.load(target)


def test_fast_blas_is_active_when_installed_and_gives_the_same_results(tmp_path):
    fast, fast_out = probe(tmp_path, "fast")
    slow, slow_out = probe(tmp_path, "slow", ENGINE_BLAS="reference")
    assert slow["library"] is None and slow["provider"] is None
    if sys.platform.startswith("linux") and blas._mkl_library() is not None:
        # installed (the cpu extra pulls it in on x86-64 Linux): it must be what MLX runs on
        assert fast["library"] and "libmkl_rt" in fast["library"], fast
        assert fast["provider"] and "libmkl_rt" in fast["provider"], fast
    else:
        assert fast["library"] is None and fast["reason"], fast
    np.testing.assert_allclose(fast_out, slow_out, atol=2e-4)


def test_blas_state_in_this_process_matches_the_import_order():
    state = engine.blas.state()
    assert state.reason != "not loaded yet"
    if state.fast:
        assert engine.blas.sgemm_provider() == state.library


def test_blas_setting_to_a_missing_library_falls_back_cleanly(tmp_path):
    run = subprocess.run(
        [sys.executable, "-c", "import engine, mlx.core as mx; s = engine.blas.state(); "
         "print(s.library, '|', s.reason); "
         "print(float((mx.ones((4, 4)) @ mx.ones((4, 4))).sum()))"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={**os.environ, "ENGINE_BLAS": str(tmp_path / "libnothere.so")})
    assert run.returncode == 0, run.stderr
    first, second = run.stdout.strip().splitlines()
    assert first.startswith("None | could not load") and float(second) == 64.0


def test_every_shipped_style_has_a_fast_network_chosen_on_the_cpu():
    for name in ("starry", "wave", "scream", "composition", "udnie", "shipwreck", "matisse"):
        full, fast = style_path(name, "full"), style_path(name, "fast")
        assert read_info(full).config.arch == "johnson"
        assert read_info(fast).config.arch == "shuffle"
        assert fast.parent.name == "fast" and fast.name == full.name
        assert mx.default_device() == mx.cpu and style_path(name) == fast


def test_every_shipped_style_carries_its_targets_for_refine_on_either_network(monkeypatch):
    """The shipped full styles hold their painting's Gram matrices on their training layers
    (VGG16's channel counts); `apply --refine` on the fast twin (the CPU's choice) takes them
    from the full one, which matched the same painting targets."""
    from engine.io import vgg_weights
    from engine.io.style_files import load_targets
    from engine.refine import refiner_for

    monkeypatch.setattr(vgg_weights, "load_vgg", lambda path=None: None)  # not run here
    channels = {"relu1_1": 64, "relu2_1": 128, "relu3_1": 256, "relu4_1": 512, "relu5_1": 512}
    for name in ("starry", "wave", "scream", "composition", "udnie", "shipwreck", "matisse"):
        full, fast = style_path(name, "full"), style_path(name, "fast")
        targets = load_targets(full)
        assert sorted(targets) == sorted(read_info(full).training["style_layers"])
        for layer, gram in targets.items():
            assert gram.shape == (1, channels[layer], channels[layer])
            assert float(mx.min(gram)) >= 0.0 and float(mx.max(gram)) > 0.0  # ReLU features
        assert not load_targets(fast)  # kept once, in the full file
        refiner = refiner_for(name, fast, 1, None)
        assert all(mx.array_equal(refiner.targets[k], targets[k]).item() for k in targets)


def test_fast_network_stylizes_like_the_full_one():
    from PIL import Image
    from skimage import data

    photo = Image.fromarray(data.astronaut()).resize((128, 128))
    image = mx.array(np.asarray(photo, dtype=np.float32)[None] / 255.0)

    def stylized(name, net):
        return np.array(Stylizer.from_file(style_path(name, net))(image))

    def colours(x):  # a coarse colour histogram: what a painting's palette looks like
        bins = np.clip((x * 4).astype(int), 0, 3)
        codes = bins[..., 0] * 16 + bins[..., 1] * 4 + bins[..., 2]
        return np.bincount(codes.ravel(), minlength=64) / codes.size

    for name, other in (("wave", "scream"), ("starry", "udnie")):
        fast = colours(stylized(name, "fast"))
        same = np.abs(fast - colours(stylized(name, "full"))).sum()
        assert same < np.abs(fast - colours(stylized(other, "full"))).sum(), name
        assert same < np.abs(fast - colours(np.array(image))).sum(), name


def test_apply_cli_net_choice(tmp_path, photo):
    runner = CliRunner()
    outputs = {}
    for net in ("full", "fast"):
        out = tmp_path / f"{net}.png"
        result = runner.invoke(app, ["apply", str(photo), "--style", "starry", "--net", net,
                                     "-o", str(out)])
        assert result.exit_code == 0, result.output
        outputs[net] = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(out))
    assert outputs["full"].shape == outputs["fast"].shape
    assert np.abs(outputs["full"].astype(int) - outputs["fast"].astype(int)).mean() > 1
    result = runner.invoke(app, ["apply", str(photo), "--style", "starry", "--net", "tiny",
                                 "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 2 and "unknown --net" in result.output
    result = runner.invoke(app, ["apply", str(photo), "--style", "starry", "--tile", "100",
                                 "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 2 and "--tile 256" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "x.png").exists()


def test_the_cpu_takes_the_padded_layout_pass_for_the_fast_network(monkeypatch):
    """The CPU's speed comes from cpu_forward (benchmarks/bench_cpu.py measures it): the
    Stylizer must take it for the fast network, and its output is the plain network's."""
    import engine.stylize as stylize_module

    calls = []
    real = stylize_module.cpu_forward
    monkeypatch.setattr(stylize_module, "cpu_forward",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    stylizer = Stylizer.from_file(style_path("starry", "fast"))
    image = mx.random.uniform(shape=(1, 64, 64, 3))
    out = stylizer(image)
    assert calls
    plain = mx.clip(stylizer.net(image), 0.0, 1.0)
    np.testing.assert_allclose(np.array(out), np.array(plain), atol=2e-3)


# ------------------------------------------------------- the fast network's padded-layout path

def test_padded_layout_keeps_a_reflection_padded_image():
    from engine.nets.cpu_forward import Layout
    from engine.nets.ops import space_to_depth
    from engine.nets.transformer import reflect_pad

    x = mx.random.normal((1, 6, 10, 8))
    blocks = mx.random.normal((1, 12, 20, 2))
    for layout, image in ((Layout.pad(x), x),
                          (Layout.pad_s2d(blocks), space_to_depth(blocks, 2))):
        height, width, channels = image.shape[1:]
        padded = layout.buf[1:-1].reshape(height + 2, width + 2, channels)
        np.testing.assert_array_equal(np.array(padded), np.array(reflect_pad(image, 1)[0]))
        np.testing.assert_array_equal(np.array(layout.interior()), np.array(image))
        assert layout.buf.shape[0] == (height + 2) * (width + 2) + 2


def test_layer_in_the_padded_layout_is_conv_norm_relu_residual_then_padding():
    from engine.nets.cpu_forward import Layout, _layer
    from engine.nets.transformer import ConvLayer, InstanceNorm, reflect_pad

    mx.random.seed(1)
    x = mx.random.normal((1, 7, 9, 16))
    conv, norm = ConvLayer(16, 16, 3), InstanceNorm(16)
    norm.weight, norm.bias = mx.random.uniform(0.5, 1.5, (16,)), mx.random.normal((16,))
    for relu, residual in ((True, None), (False, Layout.pad(x))):
        out = _layer(conv, norm, Layout.pad(x), None, relu=relu, residual=residual)
        expected = norm(conv(x))
        expected = mx.maximum(expected, 0) if relu else expected + x
        padded = out.buf[1:-1].reshape(9, 11, 16)
        np.testing.assert_allclose(np.array(padded), np.array(reflect_pad(expected, 1)[0]),
                                   atol=2e-5)


def test_cpu_forward_is_the_network_for_odd_sizes_and_batches():
    from engine.nets.cpu_forward import cpu_forward

    net = varied_net(FAST)
    for shape in ((1, 36, 44, 3), (2, 20, 28, 3), (1, 16, 16, 3)):
        x = mx.random.uniform(shape=shape)
        np.testing.assert_allclose(np.array(cpu_forward(net, x)), np.array(net(x)), atol=2e-5)


def test_cpu_forward_records_and_replays_shared_statistics():
    from engine.nets.cpu_forward import cpu_forward
    from engine.nets.transformer import NormStats

    net = varied_net(FAST, 2)
    whole, other = mx.random.uniform(shape=(1, 32, 40, 3)), mx.random.uniform(shape=(1, 24, 24, 3))
    mine, theirs = NormStats(), NormStats()
    cpu_forward(net, whole, mine)
    net(whole, theirs)
    assert len(mine.recorded) == len(theirs.recorded) == 2 + 2 * len(net.blocks) + 1
    for (m1, v1), (m2, v2) in zip(mine.recorded, theirs.recorded):
        np.testing.assert_allclose(np.array(m1), np.array(m2), atol=1e-5)
        np.testing.assert_allclose(np.array(v1), np.array(v2), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.array(cpu_forward(net, other, NormStats(mine.recorded))),
                               np.array(net(other, NormStats(theirs.recorded))), atol=2e-5)


def test_stylizer_takes_the_padded_layout_path_for_the_fast_network(monkeypatch):
    from engine import stylize

    calls = []
    real = stylize.cpu_forward
    monkeypatch.setattr(stylize, "cpu_forward", lambda *a: calls.append(1) or real(*a))
    stylizer = Stylizer.from_file(style_path("starry", "fast"))
    image = mx.random.uniform(shape=(1, 30, 50, 3))
    out = stylizer(image)
    assert calls, "the fast network did not run through cpu_forward"
    m = stylizer.margin  # reflected on every side (none by default), then cropped away
    expected = mx.clip(stylizer.net(stylize.pad4(image, 8, m, m)), 0, 1)[:, m:m + 30, m:m + 50]
    np.testing.assert_allclose(np.array(out), np.array(expected), atol=2e-5)


def test_tiny_images_stylize_on_both_networks():
    for net in ("fast", "full"):
        stylizer = Stylizer.from_file(style_path("starry", net))
        for shape in ((1, 1, 1, 3), (1, 4, 4, 3), (1, 3, 9, 3), (2, 6, 5, 3)):
            out = stylizer(mx.random.uniform(shape=shape))
            assert out.shape == shape and bool(mx.all(mx.isfinite(out))), (net, shape)


def test_uint8_frames_in_one_compiled_pass_match_the_float_path():
    from engine.nets.ops import pad4

    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (2, 30, 42, 3), dtype=np.uint8)
    floats = mx.array(frames.astype(np.float32) / 255.0)
    for options in ({}, {"strength": 0.6}, {"preserve_color": True}):
        stylizer = Stylizer.from_file(style_path("wave", "fast"), **options)
        expected = np.array(stylizer(floats))
        m = stylizer.margin
        plain = stylizer._finish(
            mx.clip(stylizer.net(pad4(floats, 8, m, m)), 0, 1)[:, m:m + 30, m:m + 42], floats)
        np.testing.assert_allclose(expected, np.array(plain), atol=2e-5)
        out = stylizer.uint8(frames)
        assert out.dtype == np.uint8 and out.shape == frames.shape
        assert np.abs(out.astype(int) - np.round(expected * 255).astype(int)).max() <= 1, options
    wide = rng.integers(0, 256, (1, 40, 600, 3), dtype=np.uint8)  # through tiles
    stylizer = Stylizer.from_file(style_path("wave", "fast"), max_tile=256)
    expected = np.array(stylizer(mx.array(wide.astype(np.float32) / 255.0)))
    out = stylizer.uint8(wide)
    assert np.abs(out.astype(int) - np.round(expected * 255).astype(int)).max() <= 1


@pytest.mark.parametrize("net", ["full", "fast"])
def test_margin_takes_the_band_the_networks_draw_at_the_edges_out_of_the_picture(net):
    """Stylize a photo, then the photo with 48 px cut off each side: near the cut, the second
    pass can only guess what the first saw, and without a margin its outer 4 px also carry the
    band the network draws at any edge. With a 16 px margin they come out closer."""
    from engine.io import examples
    from engine.io.images import load_image

    def outer_error(stylizer, photo):
        whole = np.array(Stylizer(stylizer.net, margin=0)(photo))[0, 48:-48, 48:-48]
        inner = np.array(stylizer(photo[:, 48:-48, 48:-48]))[0]
        error = np.abs(inner - whole).mean(-1)
        return (error.sum() - error[4:-4, 4:-4].sum()) / (error.size - error[4:-4, 4:-4].size)

    for name in ("chelsea.png", "coffee.png"):
        photo = load_image(next(p for p in examples.photos() if p.name == name)).rgb
        path = style_path("starry", net)
        bare = outer_error(Stylizer.from_file(path, margin=0), photo)
        framed = outer_error(Stylizer.from_file(path, margin=16), photo)
        assert framed < 0.85 * bare, (name, framed, bare)

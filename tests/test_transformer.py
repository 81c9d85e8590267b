import mlx.core as mx
import numpy as np
import pytest

from engine.stylize import Stylizer
from engine.transformer import FULL, SLIM, InstanceNorm, NetConfig, NormStats, TransformerNet, \
    upsample2x


def test_shapes_and_configs():
    mx.random.seed(0)
    net = TransformerNet(NetConfig(8, 2))
    y = net(mx.random.uniform(shape=(2, 16, 20, 3)))
    assert y.shape == (2, 16, 20, 3)
    assert SLIM.width < FULL.width and FULL.res_blocks == 5
    assert NetConfig.from_json(FULL.to_json()) == FULL


def test_instance_norm_normalizes_each_image_and_channel():
    x = mx.random.normal((2, 5, 7, 3)) * 4 + 2
    y = np.array(InstanceNorm(3)(x))
    np.testing.assert_allclose(y.mean(axis=(1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=(1, 2)), 1, atol=1e-3)


def test_norm_stats_record_and_replay_reproduce_the_forward_pass():
    net = TransformerNet(NetConfig(4, 1))
    x = mx.random.uniform(shape=(1, 12, 12, 3))
    recorder = NormStats()
    a = net(x, recorder)
    assert len(recorder.recorded) == 3 + 2 * 1 + 2
    b = net(x, NormStats(recorder.recorded))
    np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-5)


def test_upsample_is_nearest_neighbour():
    x = mx.array(np.arange(4, dtype=np.float32).reshape(1, 2, 2, 1))
    y = np.array(upsample2x(x))[0, ..., 0]
    np.testing.assert_array_equal(y, [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])


@pytest.mark.parametrize("size", [(13, 17), (16, 16), (5, 9)])
def test_stylizer_any_size(size):
    stylizer = Stylizer(TransformerNet(NetConfig(4, 1)), dtype=mx.float32)
    out = stylizer(mx.random.uniform(shape=(2, *size, 3)))
    assert out.shape == (2, *size, 3)
    values = np.array(out)
    assert values.min() >= 0 and values.max() <= 1


def test_strength_blends_with_the_input():
    net = TransformerNet(NetConfig(4, 1))
    x = mx.random.uniform(shape=(1, 16, 16, 3))
    full = np.array(Stylizer(net, dtype=mx.float32)(x))
    none = np.array(Stylizer(net, dtype=mx.float32, strength=0.0)(x))
    half = np.array(Stylizer(net, dtype=mx.float32, strength=0.5)(x))
    np.testing.assert_allclose(none, np.array(x), atol=1e-6)
    np.testing.assert_allclose(half, 0.5 * full + 0.5 * np.array(x), atol=1e-5)


def test_tiles_with_shared_statistics_match_the_whole_image():
    mx.random.seed(3)
    net = TransformerNet(NetConfig(4, 1))
    smooth = np.cumsum(np.random.default_rng(0).normal(size=(1, 64, 96, 3)), axis=2)
    x = mx.array((smooth - smooth.min()) / (smooth.max() - smooth.min()), dtype=mx.float32)
    whole = np.array(net(x))
    tiler = Stylizer(net, dtype=mx.float32, max_tile=48, overlap=12, stats_size=96)
    shared = np.array(tiler._tiled(x))
    independent = np.array(tiler._tiled(x, shared_stats=False))
    assert shared.shape == whole.shape
    shared_error = np.abs(shared - whole).mean()
    assert shared_error < 0.5 * np.abs(independent - whole).mean()
    assert shared_error < 0.2 * np.abs(whole).mean()  # small tiles: seams are everywhere
    big = Stylizer(net, dtype=mx.float32, max_tile=48, overlap=12)(x)  # the tiled path via call
    assert big.shape == x.shape

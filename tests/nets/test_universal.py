"""The any-painting network: the conditional pass is the materialized network's, codes blend."""

import mlx.core as mx
import numpy as np
import pytest

from engine.nets.config import NetConfig
from engine.nets.cpu_forward import cpu_forward
from engine.nets.universal import (
    UniversalConfig,
    UniversalNet,
    norm_layers,
    style_statistics,
)
from engine.painting import blend

CHANNELS = (4, 8, 8, 8)  # the tiny VGG's first width per block


def tiny_model(seed: int = 0) -> UniversalNet:
    mx.random.seed(seed)
    model = UniversalNet(UniversalConfig(NetConfig(8, 2, "shuffle"), 16, 6, CHANNELS))
    # offsets away from zero, so that a wrong norm order or a dropped offset shows
    weight = model.predictor.to_affine.weight
    model.predictor.to_affine.weight = mx.random.normal(weight.shape) * 0.3
    mx.eval(model.parameters())
    return model


def features(batch: int, seed: int) -> dict[str, mx.array]:
    mx.random.seed(seed)
    return {layer: mx.random.uniform(shape=(batch, 6, 6, c)) * 4 for layer, c in
            zip(("relu1_1", "relu2_1", "relu3_1", "relu4_1"), CHANNELS)}


def test_conditional_pass_matches_the_materialized_network_per_image():
    model = tiny_model()
    codes = model.code(features(3, 1))
    photos = mx.random.uniform(shape=(3, 16, 20, 3))
    together = model(photos, codes)
    for index in range(3):
        net = model.materialize(codes[index:index + 1])
        alone = net(photos[index:index + 1])
        assert np.allclose(np.array(together[index]), np.array(alone[0]), atol=1e-5)
        # and the CPU's padded-layout pass of that network
        assert np.allclose(np.array(cpu_forward(net, photos[index:index + 1])),
                           np.array(alone), atol=1e-5)
    # different paintings give different networks
    assert float(mx.abs(together[0] - together[1]).mean()) > 1e-4


def test_materialized_norms_are_the_predicted_ones():
    model = tiny_model()
    code = model.code(features(1, 2))
    net = model.materialize(code)
    for norm, (scale, shift) in zip(norm_layers(net), model.affines(code)):
        assert np.allclose(np.array(norm.weight), np.array(scale[0]))
        assert np.allclose(np.array(norm.bias), np.array(shift[0]))


def test_statistics_are_per_image_and_finite_for_black_images():
    stats = style_statistics({k: mx.zeros_like(v) for k, v in features(2, 3).items()})
    assert stats.shape == (2, 2 * sum(CHANNELS))
    assert bool(mx.all(mx.isfinite(stats)))


def test_blend_is_the_weighted_mean_of_codes():
    a, b = mx.array([[1.0, 0.0]]), mx.array([[0.0, 4.0]])
    assert np.allclose(np.array(blend([a, b], [3.0, 1.0])), [[0.75, 1.0]])
    assert np.allclose(np.array(blend([a], [2.0])), [[1.0, 0.0]])


def test_config_bounds():
    with pytest.raises(ValueError, match="fast"):
        UniversalConfig(NetConfig(8, 1, "johnson")).check()
    with pytest.raises(ValueError, match="statistics"):
        UniversalConfig(stats_channels=(4, 8)).check()

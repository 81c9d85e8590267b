import mlx.core as mx
import numpy as np
import pytest

from engine.errors import ImageError, UsageError
from engine.optimize import OptimizeSettings, level_sizes, optimize, preserve_color

SMALL = dict(content_layers=("relu2_2",), style_layers=("relu1_1", "relu2_1", "relu3_1"),
             style_weight=1e4, tv_weight=1.0)


def _images(seed=0, size=(24, 20)):
    rng = np.random.default_rng(seed)
    content = mx.array(rng.random((1, size[1], size[0], 3)), dtype=mx.float32)
    style = mx.array(rng.random((1, 16, 16, 3)) ** 3, dtype=mx.float32)
    return content, style


@pytest.mark.parametrize("method", ["lbfgs", "lbfgsb", "adam"])
def test_loss_falls(tiny_vgg, method):
    content, style = _images()
    losses = []
    settings = OptimizeSettings(iterations=12, method=method, learning_rate=0.05, **SMALL)
    result = optimize(tiny_vgg, content, [style], settings, lambda step: losses.append(step.loss))
    assert len(losses) >= 10
    assert losses[-1] < 0.7 * losses[0]
    assert result.image.shape == content.shape
    assert result.loss == pytest.approx(min(losses), rel=1e-4)
    pixels = np.array(result.image)
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0


def test_noise_start_is_seeded(tiny_vgg):
    content, style = _images()
    settings = OptimizeSettings(iterations=2, init="noise", seed=5, **SMALL)
    a = optimize(tiny_vgg, content, [style], settings).image
    b = optimize(tiny_vgg, content, [style], settings).image
    settings.seed = 6
    c = optimize(tiny_vgg, content, [style], settings).image
    np.testing.assert_array_equal(np.array(a), np.array(b))
    assert not np.allclose(np.array(a), np.array(c))


def test_coarse_to_fine_levels(tiny_vgg):
    assert level_sizes(1500, 1000, 640) == [(375, 250), (750, 500), (1500, 1000)]
    assert level_sizes(512, 300, 640) == [(512, 300)]
    content, style = _images(size=(40, 24))
    levels = set()
    settings = OptimizeSettings(iterations=2, coarse_size=10, **SMALL)
    result = optimize(tiny_vgg, content, [style], settings, lambda s: levels.add(s.levels))
    assert levels == {3} and result.image.shape == content.shape  # 10x6, 20x12, 40x24
    assert result.iterations == 6
    assert level_sizes(64, 20, 10, minimum=16) == [(64, 20)]  # never below the VGG minimum


def test_too_small_content_is_refused(tiny_vgg):
    content, style = _images(size=(12, 8))
    with pytest.raises(ImageError, match="at least 4 px|at least"):
        optimize(tiny_vgg, content, [style], OptimizeSettings(
            iterations=1, style_layers=("relu5_1",), content_layers=("relu4_2",)))


def test_blend_weights_move_the_result_between_styles(tiny_vgg):
    content, style_a = _images(1)
    style_b = 1.0 - style_a
    runs = {}
    for blend in ((1.0, 0.0), (0.0, 1.0), (0.5, 0.5)):
        settings = OptimizeSettings(iterations=8, style_blend=blend, **SMALL)
        runs[blend] = np.array(optimize(tiny_vgg, content, [style_a, style_b], settings).image)
    assert not np.allclose(runs[(1.0, 0.0)], runs[(0.0, 1.0)], atol=1e-3)
    with pytest.raises(UsageError, match="one weight per style"):
        optimize(tiny_vgg, content, [style_a, style_b], OptimizeSettings(style_blend=[1.0]))


def test_interrupt_returns_the_best_image_so_far(tiny_vgg):
    content, style = _images()
    seen = []

    def stop_at_five(step):
        seen.append(step.loss)
        if step.iteration == 5:
            raise KeyboardInterrupt

    settings = OptimizeSettings(iterations=50, **SMALL)
    result = optimize(tiny_vgg, content, [style], settings, stop_at_five)
    assert result.interrupted and result.image.shape == content.shape
    assert result.loss <= min(seen) + 1e-6


@pytest.mark.parametrize("bad", [dict(method="sgd"), dict(init="zeros"), dict(iterations=0),
                                 dict(style_weight=-1.0), dict(style_scale=0.0)])
def test_bad_settings(tiny_vgg, bad):
    content, style = _images()
    with pytest.raises(UsageError):
        optimize(tiny_vgg, content, [style], OptimizeSettings(**bad))


def test_preserve_color_keeps_content_chroma():
    rng = np.random.default_rng(0)
    content = mx.array(rng.random((1, 8, 8, 3)) * 0.5 + 0.25, dtype=mx.float32)
    stylized = mx.array(rng.random((1, 8, 8, 3)) * 0.5 + 0.25, dtype=mx.float32)
    out = np.array(preserve_color(stylized, content))[0]
    to_yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    out_yiq, content_yiq = out @ to_yiq.T, np.array(content)[0] @ to_yiq.T
    stylized_yiq = np.array(stylized)[0] @ to_yiq.T
    np.testing.assert_allclose(out_yiq[..., 0], stylized_yiq[..., 0], atol=1e-4)
    np.testing.assert_allclose(out_yiq[..., 1:], content_yiq[..., 1:], atol=1e-4)

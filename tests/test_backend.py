"""The one backend switch, and the generic path (what Apple silicon takes) run on this CPU and
checked against the CPU's own paths."""

import engine  # noqa: F401 - first, so that its BLAS is loaded before mlx.core
import mlx.core as mx
import numpy as np
import pytest

from engine import backend
from engine.registry import style_path
from engine.stylize import Stylizer


def test_the_switch_follows_the_device_and_can_be_forced():
    expected = "cpu" if mx.default_device() == mx.cpu else (
        "cuda" if mx.cuda.is_available() else "generic")
    assert backend.backend() == expected
    with backend.forced("generic"):
        assert backend.backend() == "generic"
        assert not backend.on_cpu() and not backend.uses_cuda_kernels()
    assert backend.backend() == expected
    with pytest.raises(ValueError, match="unknown backend"):
        with backend.forced("metal"):
            pass


@pytest.mark.parametrize("net", ["full", "fast"])
def test_the_generic_path_matches_the_cpu_path(net, monkeypatch):
    """Under `generic` the stylizer runs the network's plain MLX ops (no fused CUDA pass, no
    CPU layout), in float16 by default: the same picture as the CPU's path."""
    image = mx.random.uniform(shape=(2, 40, 52, 3), key=mx.random.key(1))
    on_cpu = np.array(Stylizer.from_file(style_path("starry", net))(image))
    import engine.stylize as stylize_module

    taken = []
    for name in ("fused_forward", "cpu_forward"):
        real = getattr(stylize_module, name)
        monkeypatch.setattr(stylize_module, name, lambda *a, real=real, name=name, **k: (
            taken.append(name) or real(*a, **k)))
    with backend.forced("generic"):
        exact = np.array(Stylizer.from_file(style_path("starry", net), dtype=mx.float32)(image))
        half = Stylizer.from_file(style_path("starry", net))
        assert half.dtype == mx.float16
        rounded = np.array(half(image))
    assert not taken, taken
    np.testing.assert_allclose(exact, on_cpu, atol=2e-3)
    assert np.abs(rounded - on_cpu).mean() < 4e-3 and np.abs(rounded - on_cpu).max() < 0.08


def test_a_training_step_on_the_generic_path_matches_the_cpu(tiny_vgg):
    """The training graph under `generic` (the GPU-style ops with their MLX stand-ins) gives
    the CPU path's loss and gradient."""
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    from engine.nets.transformer import NetConfig, TransformerNet
    from engine.optimize import style_target
    from engine.training.settings import TrainSettings
    from engine.training.style import framed_forward, training_loss

    settings = TrainSettings(size=32, style_size=32, width=4, style_layers=("relu1_2",))
    x = mx.random.uniform(shape=(2, 32, 32, 3), key=mx.random.key(2))
    grams = style_target(tiny_vgg, [x[:1]], np.ones(1), settings.style_layers, 32, 1.0)
    mx.random.seed(4)
    net = TransformerNet(NetConfig(4, 1))
    mx.eval(net.parameters())

    def loss(model, batch):
        return training_loss(tiny_vgg, grams, settings, batch, framed_forward(model, batch, 0))[0]

    results = []
    for name in ("cpu", "generic"):
        with backend.forced(name):
            value, grads = nn.value_and_grad(net, loss)(net, x)
            results.append((float(value), dict(tree_flatten(grads))))
    (cpu_loss, cpu_grads), (generic_loss, generic_grads) = results
    assert generic_loss == pytest.approx(cpu_loss, rel=1e-4)
    for key, grad in cpu_grads.items():
        np.testing.assert_allclose(np.array(generic_grads[key]), np.array(grad), rtol=2e-3,
                                   atol=1e-5, err_msg=key)


def test_a_short_cuda_run_takes_mlx_ops_in_float32_not_the_kernels(monkeypatch):
    """On CUDA, `apply` of a few images skips the CUDA kernels (compiled anew in every process)
    for MLX's own ops in float32: the same picture as the CPU's path, no fused pass taken."""
    import engine.stylize as stylize_module
    from engine.stylize import KERNEL_BREAK_EVEN, kernels_pay_off

    assert not kernels_pay_off(1) and not kernels_pay_off(KERNEL_BREAK_EVEN - 1)
    assert kernels_pay_off(KERNEL_BREAK_EVEN) and kernels_pay_off(None)
    image = mx.random.uniform(shape=(1, 40, 52, 3), key=mx.random.key(2))
    on_cpu = np.array(Stylizer.from_file(style_path("starry", "full"))(image))
    taken = []
    real = stylize_module.fused_forward
    monkeypatch.setattr(stylize_module, "fused_forward",
                        lambda *a, **k: taken.append(1) or real(*a, **k))
    with backend.forced("cuda"):
        stylizer = Stylizer.from_file(style_path("starry", "full"), kernels=False)
        assert stylizer.dtype == mx.float32 and not stylizer.kernels
        out = np.array(stylizer(image))
    assert taken == []
    np.testing.assert_allclose(out, on_cpu, atol=2e-3)

"""The fused inference path (engine.fused, engine.kernels) against plain formulas.

On a machine without a GPU the kernels' plain-MLX stand-ins run; on a GPU the CUDA kernels
themselves are checked against those stand-ins (the last test).
"""

import mlx.core as mx
import numpy as np
import pytest

from engine.nets import fused
from engine.nets.fused import fused_forward
from engine.nets.kernels import (
    fold_pad,
    half_moments,
    half_sums,
    moments_from_sums,
    pad_affine,
    product_sums,
    reference_fold_pad,
    reference_moments,
    reference_pad_affine,
    reference_product_sums,
    reference_sums,
    sums_from_moments,
)
from engine.nets.ops import depth_to_space
from engine.nets.transformer import NetConfig, NormStats, conv_blocked
from tests.conftest import varied_net

# On a GPU, float32 convolutions run on TF32 tensor cores (10-bit mantissa): two ways of
# computing the same network agree to ~1e-3 relative there, ~1e-6 on the CPU.
ON_GPU = mx.default_device() != mx.cpu
NET_TOL = {"rtol": 2e-3, "atol": 2e-5} if ON_GPU else {"rtol": 1e-4, "atol": 1e-6}
CONV_TOL = {"rtol": 1e-2, "atol": 0.1} if ON_GPU else {"rtol": 1e-4, "atol": 1e-3}


def _numpy_pad_affine(y, weight, bias, pad, up, relu, residual, rp):
    """Instance norm of y (its own statistics), then residual, ReLU, upsampling, reflection."""
    mean, var = y.mean(axis=(1, 2), keepdims=True), y.var(axis=(1, 2), keepdims=True)
    x = (y - mean) / np.sqrt(var + 1e-5) * weight + bias
    if residual is not None:
        x = x + residual[:, rp:residual.shape[1] - rp, rp:residual.shape[2] - rp]
    if relu:
        x = np.maximum(x, 0)
    x = x.repeat(up, axis=1).repeat(up, axis=2)
    return np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)], mode="reflect")


@pytest.mark.parametrize("pad,up,relu,residual", [(1, 1, True, False), (4, 1, True, False),
                                                  (1, 2, True, False), (1, 1, False, True),
                                                  (1, 2, False, True)])
def test_pad_affine_is_norm_relu_residual_upsample_pad(pad, up, relu, residual):
    rng = np.random.default_rng(0)
    y = (rng.normal(size=(2, 6, 7, 8)) * 3 + 1).astype(np.float32)
    weight = rng.uniform(0.5, 2, size=8).astype(np.float32)
    bias = rng.normal(size=8).astype(np.float32)
    res = rng.normal(size=(2, 8, 9, 8)).astype(np.float32) if residual else None
    got = pad_affine(mx.array(y), half_sums(mx.array(y)), mx.array(weight), mx.array(bias), pad,
                     up, relu, None if res is None else mx.array(res), 1 if residual else 0)
    want = _numpy_pad_affine(y, weight, bias, pad, up, relu, res, 1)
    np.testing.assert_allclose(np.array(got), want, rtol=1e-4, atol=1e-4)


def test_pad_affine_reads_sub_pixel_groups_and_repeats_edges():
    """`phases`: y is a sub-pixel convolution's (B, H/2, W/2, 4C), read as depth_to_space(y);
    `edge`: edge pixels repeated instead of reflected."""
    rng = np.random.default_rng(1)
    y4 = rng.normal(size=(2, 3, 4, 32)).astype(np.float32)
    image = np.array(depth_to_space(mx.array(y4), 2))
    weight = rng.uniform(0.5, 2, size=8).astype(np.float32)
    bias = rng.normal(size=8).astype(np.float32)
    got = pad_affine(mx.array(y4), half_sums(mx.array(image)), mx.array(weight), mx.array(bias),
                     2, relu=True, edge=True, phases=True)
    normed = _numpy_pad_affine(image, weight, bias, 0, 1, True, None, 0)
    want = np.pad(normed, [(0, 0), (2, 2), (2, 2), (0, 0)], mode="edge")
    np.testing.assert_allclose(np.array(got), want, rtol=1e-4, atol=1e-4)


def test_sums_and_moments_convert_both_ways():
    x = (mx.random.normal((2, 9, 11, 16)) * 5 + 3).astype(mx.float16)
    sums = half_sums(x)
    x32 = np.array(x.astype(mx.float32))
    assert sums.dtype == mx.float32 and sums.shape == (2, 16, 2)
    np.testing.assert_allclose(np.array(sums[..., 0]), x32.sum(axis=(1, 2)), rtol=1e-4)
    np.testing.assert_allclose(np.array(sums[..., 1]), np.square(x32).sum(axis=(1, 2)), rtol=1e-4)
    mean, var = moments_from_sums(sums, 99)
    np.testing.assert_allclose(np.array(sums_from_moments(mean, var, 99)), np.array(sums),
                               rtol=1e-4)


def test_half_moments_are_the_float32_mean_and_variance():
    x = (mx.random.normal((2, 9, 11, 16)) * 30 + 7).astype(mx.float16)
    mean, var = half_moments(x)
    x32 = np.array(x.astype(mx.float32))
    assert mean.dtype == mx.float32 and mean.shape == (2, 1, 1, 16)
    np.testing.assert_allclose(np.array(mean), x32.mean(axis=(1, 2), keepdims=True), rtol=1e-4,
                               atol=1e-3)
    np.testing.assert_allclose(np.array(var), x32.var(axis=(1, 2), keepdims=True), rtol=1e-4)


@pytest.mark.parametrize("blocks", [1, 3])
def test_fused_forward_is_the_network(blocks):
    net = varied_net(NetConfig(8, blocks), 1)
    x = mx.random.uniform(shape=(2, 20, 28, 3))
    want = net(x)
    np.testing.assert_allclose(np.array(fused_forward(net, x)), np.array(want), **NET_TOL)
    # recorded statistics replay in the same order (tiles share the whole image's)
    recorded = NormStats()
    net(x, recorded)
    part = x[:, :12]
    np.testing.assert_allclose(np.array(fused_forward(net, part, NormStats(recorded.recorded))),
                               np.array(net(part, NormStats(recorded.recorded))), **NET_TOL)


def test_prepared_sub_pixel_weights_follow_the_network_weights():
    """fused.prepare works out the upsampling layers' sub-pixel weights once; weights changed
    afterwards are used, not the prepared ones."""
    net = varied_net(NetConfig(8, 1), 2)
    x = mx.random.uniform(shape=(1, 16, 20, 3))
    fused.prepare(net)
    np.testing.assert_allclose(np.array(fused_forward(net, x)), np.array(net(x)), **NET_TOL)
    net.up[1].conv.weight = net.up[1].conv.weight * 1.5
    np.testing.assert_allclose(np.array(fused_forward(net, x)), np.array(net(x)), **NET_TOL)


@pytest.mark.parametrize("pad,edge,h,w", [(1, False, 5, 7), (4, False, 6, 9), (4, False, 12, 11),
                                          (1, True, 5, 7), (1, True, 2, 3)])
def test_fold_pad_is_the_gradient_of_padding(pad, edge, h, w):
    """Each pixel gets the padded gradient of every pixel that copies it (reflections, where
    the two margins' mirrors may overlap, or repeated edges)."""
    x = mx.random.normal((2, h, w, 8))
    g = mx.random.normal((2, h + 2 * pad, w + 2 * pad, 8))
    mode = "edge" if edge else "reflect"
    want = np.array(mx.vjp(lambda t: mx.pad(t, [(0, 0), (pad, pad), (pad, pad), (0, 0)],
                                            mode=mode), [x], [g])[1][0])
    for fold in (fold_pad, reference_fold_pad):
        np.testing.assert_allclose(np.array(fold(g, pad, edge)), want, rtol=1e-5, atol=1e-5)


def test_product_sums_are_the_sums_of_y_and_y_times_x():
    rng = np.random.default_rng(1)
    y, x = (rng.normal(size=(2, 5, 6, 16)).astype(np.float32) for _ in range(2))
    want = np.stack([y.sum(axis=(1, 2)), (y * x).sum(axis=(1, 2))], axis=-1)
    for sums in (product_sums, reference_product_sums):
        np.testing.assert_allclose(np.array(sums(mx.array(y), mx.array(x))), want, rtol=1e-5,
                                   atol=1e-4)


@pytest.mark.parametrize("cin,cout", [(3, 32), (32, 3), (5, 6)])
def test_convolution_on_space_to_depth_blocks_is_the_convolution(cin, cout):
    x = mx.random.normal((2, 12 + 8, 16 + 8, cin))
    weight = mx.random.normal((cout, 9, 9, cin))
    np.testing.assert_allclose(np.array(conv_blocked(x, weight)),
                               np.array(mx.conv2d(x, weight)), **CONV_TOL)


def test_fused_forward_with_blocked_end_layers_is_the_network(monkeypatch):
    monkeypatch.setattr(fused, "BLOCKED_FROM", 0)
    net = varied_net(NetConfig(8, 2), 1)
    x = mx.random.uniform(shape=(2, 20, 28, 3))
    np.testing.assert_allclose(np.array(fused_forward(net, x)), np.array(net(x)), **NET_TOL)


@pytest.mark.skipif(not mx.cuda.is_available(),
                    reason="the CUDA kernels need a GPU; their CPU stand-ins are tested above")
def test_gpu_kernels_match_their_stand_ins():
    mx.set_default_device(mx.gpu)
    y = mx.random.normal((2, 30, 41, 32)).astype(mx.float16)
    sums = reference_sums(y)
    weight, bias = mx.random.uniform(0.5, 2, (32,)), mx.random.normal((32,))
    res = mx.random.normal((2, 32, 43, 32)).astype(mx.float16)
    # sizes and options are runtime parameters of one compiled kernel: each combination checked
    for pad, up, relu, residual in ((1, 1, True, None), (2, 2, True, None), (4, 1, True, None),
                                    (1, 2, False, res), (1, 1, False, res), (4, 1, False, None)):
        rp = 1 if residual is not None else 0
        got = pad_affine(y, sums, weight, bias, pad, up, relu, residual, rp)
        want = reference_pad_affine(y, sums, weight, bias, pad, up, relu, residual, rp)
        np.testing.assert_allclose(np.array(got.astype(mx.float32)),
                                   np.array(want.astype(mx.float32)), atol=2e-2)
    # a sub-pixel convolution's output (4 channel groups), read as the 2x larger image
    y4 = mx.random.normal((2, 15, 20, 128)).astype(mx.float16)
    sums4 = reference_sums(depth_to_space(y4, 2))
    for pad, edge, phases, residual in ((1, True, False, res), (1, True, True, None),
                                        (4, False, True, None), (1, False, True, None)):
        source, totals = (y4, sums4) if phases else (y, sums)
        rp = 1 if residual is not None else 0
        got = pad_affine(source, totals, weight, bias, pad, 1, True, residual, rp, edge, phases)
        want = reference_pad_affine(source, totals, weight, bias, pad, 1, True, residual, rp,
                                    edge, phases)
        np.testing.assert_allclose(np.array(got.astype(mx.float32)),
                                   np.array(want.astype(mx.float32)), atol=2e-2)
    for shape in ((2, 300, 200, 32), (1, 17, 9, 64), (3, 64, 64, 128), (8, 5, 7, 8)):
        big = (mx.random.normal(shape) * 20 + 5).astype(mx.float16)
        np.testing.assert_allclose(np.array(half_sums(big)), np.array(reference_sums(big)),
                                   rtol=1e-4, atol=1e-1)
        for a, b in zip(half_moments(big), reference_moments(big)):
            np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-3, atol=1e-3)
        other = (mx.random.normal(shape) * 3 - 1).astype(mx.float16)
        np.testing.assert_allclose(np.array(product_sums(big, other)),
                                   np.array(reference_product_sums(big, other)),
                                   rtol=1e-3, atol=2.0)
    # the padding gradients, in both training precisions, margins overlapping or not
    for dtype in (mx.bfloat16, mx.float32):
        for shape, pad, edge in (((2, 40, 30, 32), 1, False), ((3, 14, 13, 64), 4, False),
                                 ((2, 6, 7, 8), 4, False), ((2, 17, 12, 128), 1, True),
                                 ((1, 3, 2, 16), 1, True)):
            g = mx.random.normal((shape[0], shape[1] + 2 * pad, shape[2] + 2 * pad, shape[3]))
            g = g.astype(dtype)
            np.testing.assert_allclose(np.array(fold_pad(g, pad, edge).astype(mx.float32)),
                                       np.array(reference_fold_pad(g, pad, edge)
                                                .astype(mx.float32)), rtol=2e-2, atol=5e-2)

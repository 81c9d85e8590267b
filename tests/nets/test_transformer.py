import mlx.core as mx
import numpy as np
import pytest

from engine.errors import UsageError
from engine.nets import transformer
from engine.nets.ops import depth_to_space, space_to_depth, upsample2x
from engine.nets.transformer import (
    FAST,
    FULL,
    InstanceNorm,
    NetConfig,
    NormStats,
    TransformerNet,
    conv2d_cpu,
    conv_out_rows,
    reflect_pad,
)
from engine.stylize import Stylizer


def test_shapes_and_configs():
    mx.random.seed(0)
    net = TransformerNet(NetConfig(8, 2))
    y = net(mx.random.uniform(shape=(2, 16, 20, 3)))
    assert y.shape == (2, 16, 20, 3)
    assert FULL.res_blocks == 5 and FAST.arch == "shuffle"
    assert NetConfig.from_json(FULL.to_json()) == FULL
    assert NetConfig.from_json(FAST.to_json()) == FAST
    # files written before the fast network existed have no "arch": they are Johnson networks
    assert NetConfig.from_json('{"width": 32, "res_blocks": 5}') == FULL
    with pytest.raises(ValueError, match="architecture"):
        NetConfig.from_json('{"width": 32, "res_blocks": 5, "arch": "unet"}')


def test_fast_network_any_multiple_of_four_and_batch():
    net = TransformerNet(NetConfig(8, 2, "shuffle"))
    y = net(mx.random.uniform(shape=(3, 12, 20, 3)))
    assert y.shape == (3, 12, 20, 3)
    recorder = NormStats()
    a = net(mx.random.uniform(shape=(1, 8, 8, 3)), recorder)
    assert len(recorder.recorded) == 2 + 2 * 2 + 1 and a.shape == (1, 8, 8, 3)


def test_space_to_depth_round_trip_keeps_each_block_together():
    x = mx.random.uniform(shape=(2, 8, 12, 3))
    packed = space_to_depth(x, 4)
    assert packed.shape == (2, 2, 3, 48)
    np.testing.assert_array_equal(np.array(packed[0, 1, 2]).reshape(4, 4, 3),
                                  np.array(x[0, 4:8, 8:12]))
    np.testing.assert_array_equal(np.array(depth_to_space(packed, 4)), np.array(x))


@pytest.mark.parametrize("batch,cin,cout,k,h,w", [(1, 3, 5, 9, 11, 14), (2, 6, 4, 3, 7, 5),
                                                  (3, 8, 8, 3, 4, 9)])
def test_cpu_convolution_matches_mx_conv2d(batch, cin, cout, k, h, w):
    x = mx.random.normal((batch, h, w, cin))
    weight = mx.random.normal((cout, k, k, cin))
    padded = reflect_pad(x, k // 2)
    reference = mx.pad(x, [(0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)], mode="reflect")
    np.testing.assert_array_equal(np.array(padded), np.array(reference))
    np.testing.assert_allclose(np.array(conv2d_cpu(padded, weight)),
                               np.array(mx.conv2d(reference, weight)), rtol=1e-4, atol=1e-4)
    spare = reflect_pad(x, k // 2, spare_row=True)
    np.testing.assert_array_equal(np.array(spare[:, :-1]), np.array(reference))
    np.testing.assert_allclose(np.array(conv2d_cpu(spare, weight, spare_row=True)),
                               np.array(mx.conv2d(reference, weight)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("batch,dilation", [(1, 2), (2, 3)])
def test_dilated_cpu_convolution_matches_mx_conv2d(batch, dilation):
    x = mx.random.normal((batch, 9, 13, 6))
    weight = mx.random.normal((5, 3, 3, 6))
    reference = mx.conv2d(reflect_pad(x, dilation), weight, dilation=dilation)
    assert reference.shape == (batch, 9, 13, 5)
    np.testing.assert_allclose(np.array(conv2d_cpu(reflect_pad(x, dilation), weight,
                                                   dilation=dilation)),
                               np.array(reference), rtol=1e-4, atol=1e-4)
    spare = reflect_pad(x, dilation, spare_row=True)
    np.testing.assert_allclose(np.array(conv2d_cpu(spare, weight, True, dilation)),
                               np.array(reference), rtol=1e-4, atol=1e-4)


def test_dilated_blocks_start_as_the_identity_and_widen_the_reach():
    """Dilated blocks added to a trained network leave its output as it was until they learn;
    the reach (receptive field) is what a pixel's change can touch."""
    mx.random.seed(5)
    plain = TransformerNet(NetConfig(8, 2))
    wide_config = NetConfig(8, 2, dilations=(2, 4))
    wide = TransformerNet(wide_config)
    assert len(wide.blocks) == 4 and wide.blocks[3].conv1.pad == 4
    wide.update(plain.parameters())
    x = mx.random.uniform(shape=(1, 96, 96, 3))
    np.testing.assert_array_equal(np.array(wide(x)), np.array(plain(x)))
    assert NetConfig.from_json(wide_config.to_json()) == wide_config
    assert "dilations" not in FULL.to_json()  # plain files read the same as before
    assert (FULL.reach, NetConfig(32, 5, dilations=(2, 4)).reach) == (109, 205)
    assert wide_config.least_side == 20 and FULL.least_side == 8

    # the reach, measured: one pixel changed moves outputs up to reach // 2 away, not further
    # (with the norms' statistics held fixed: through them every pixel touches every other)
    for block in wide.blocks[2:]:
        block.norm2.weight = mx.ones_like(block.norm2.weight)
    x = mx.random.uniform(shape=(1, 256, 256, 3))
    moved = x.at[0, 128, 128].add(1.0)
    recorder = NormStats()
    before = wide(x, recorder)
    after = wide(moved, NormStats(recorder.recorded))
    changed = np.abs(np.array(after - before))[0].max(axis=-1).max(axis=0) > 0
    columns = np.flatnonzero(changed)
    reach = NetConfig(8, 2, dilations=(2, 4)).reach
    assert columns.min() >= 128 - reach // 2 and columns.max() <= 128 + reach // 2
    assert columns.max() - columns.min() > TransformerNet(NetConfig(8, 2)).config.reach
    with pytest.raises(ValueError, match="Johnson network only"):
        NetConfig(8, 2, "shuffle", (2,))
    with pytest.raises(ValueError, match="positive"):
        NetConfig(8, 2, dilations=(0,))


def test_cpu_convolution_gradients_match_mx_conv2d():
    x = mx.random.normal((2, 6, 7, 4))
    weight = mx.random.normal((3, 3, 3, 4))
    ours = mx.grad(lambda x, w: (conv2d_cpu(x, w) ** 2).sum(), argnums=(0, 1))(x, weight)
    theirs = mx.grad(lambda x, w: (mx.conv2d(x, w) ** 2).sum(), argnums=(0, 1))(x, weight)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-3)



@pytest.mark.parametrize("p,h,w", [(1, 6, 5), (4, 11, 9), (4, 5, 6), (1, 2, 2)])
def test_reflection_padding_gradient_matches_mx_pad(p, h, w):
    """reflect_pad's own gradient (the margins folded back) against autodiff of mx.pad's
    reflect mode, plain and compiled."""
    x = mx.random.normal((2, h, w, 3))
    cotangent = mx.random.normal((2, h + 2 * p, w + 2 * p, 3))
    widths = [(0, 0), (p, p), (p, p), (0, 0)]
    theirs = mx.grad(lambda x: (mx.pad(x, widths, mode="reflect") * cotangent).sum())(x)
    ours = mx.grad(lambda x: (reflect_pad(x, p) * cotangent).sum())
    for fn in (ours, mx.compile(ours)):
        np.testing.assert_allclose(np.array(fn(x)), np.array(theirs), rtol=1e-5, atol=1e-5)

def test_few_output_channel_convolution_by_rows_matches_mx_conv2d():
    x = mx.random.normal((2, 14, 17, 6))
    weight = mx.random.normal((3, 9, 9, 6))
    np.testing.assert_allclose(np.array(conv_out_rows(x, weight)),
                               np.array(mx.conv2d(x, weight)), rtol=1e-4, atol=1e-3)
    ours = mx.grad(lambda x, w: (conv_out_rows(x, w) ** 2).sum(), argnums=(0, 1))(x, weight)
    theirs = mx.grad(lambda x, w: (mx.conv2d(x, w) ** 2).sum(), argnums=(0, 1))(x, weight)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-3, atol=1e-2)


def test_gpu_layer_path_gives_the_cpu_path_result(monkeypatch):
    """The GPU branch of the network (slice padding, the output layer by rows), run here on
    the CPU, against the CPU branch: the same function of the same weights."""
    mx.random.seed(3)
    net = TransformerNet(NetConfig(8, 2, dilations=(2,)))
    net.blocks[2].norm2.weight = mx.ones_like(net.blocks[2].norm2.weight)  # not the identity
    x = mx.random.uniform(shape=(2, 20, 24, 3))
    on_cpu = np.array(net(x))
    monkeypatch.setattr(transformer, "on_cpu", lambda: False)
    np.testing.assert_allclose(np.array(net(x)), on_cpu, rtol=1e-4, atol=1e-4)



@pytest.mark.parametrize("h, w", [(4, 6), (7, 5)])
def test_convolution_after_upsampling_as_subpixel_convolutions_is_the_same(h, w):
    mx.random.seed(4)
    layer = transformer.ConvLayer(12, 5, 3)
    x = mx.random.normal((2, h, w, 12))
    np.testing.assert_allclose(np.array(layer.after_upsample(x)),
                               np.array(layer(upsample2x(x))), rtol=1e-5, atol=1e-5)


def test_low_resolution_forms_give_the_network_and_its_gradients(monkeypatch):
    """On a GPU the 9x9 layers run on space-to-depth blocks and the upsampling convolutions as
    sub-pixel convolutions (LOW_RES_FORMS): same output, same weight gradients as the plain
    forms (run here on the CPU through the GPU branch)."""
    from mlx import nn
    from mlx.utils import tree_flatten

    mx.random.seed(5)
    monkeypatch.setattr(transformer, "on_cpu", lambda: False)
    net = TransformerNet(NetConfig(8, 2))
    x = mx.random.uniform(shape=(2, 24, 20, 3))
    cotangent = mx.random.normal((2, 24, 20, 3))
    loss_and_grad = nn.value_and_grad(net, lambda t: (net(t) * cotangent).sum())
    results = {}
    for low in (False, True):
        monkeypatch.setattr(transformer, "LOW_RES_FORMS", low)
        loss, grads = loss_and_grad(x)
        results[low] = net(x), loss, dict(tree_flatten(grads))
    (plain, plain_loss, plain_grads), (low, low_loss, low_grads) = results[False], results[True]
    np.testing.assert_allclose(np.array(low), np.array(plain), rtol=1e-4, atol=1e-6)
    assert abs(low_loss.item() - plain_loss.item()) <= 1e-4 * abs(plain_loss.item())
    checked = 0
    for key, value in plain_grads.items():
        scale = float(mx.abs(value).max())
        if scale < 1e-6:
            continue  # a shift the next instance norm takes out: zero up to rounding
        checked += 1
        np.testing.assert_allclose(np.array(low_grads[key]), np.array(value),
                                   atol=1e-4 * scale, err_msg=key)
    assert checked > len(plain_grads) // 2

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


@pytest.mark.parametrize("config", [NetConfig(8, 2, dilations=(2,)), NetConfig(8, 1, "shuffle")])
@pytest.mark.parametrize("gpu_branch", [False, True])
def test_biases_before_norms_are_skipped_without_changing_the_network(config, gpu_branch,
                                                                      monkeypatch):
    """With the norms' own statistics the convolutions before them skip their biases: the same
    output as with them (the biased path of recorded statistics), and zero gradients for those
    biases alone."""
    from mlx import nn
    from mlx.utils import tree_flatten, tree_unflatten

    mx.random.seed(6)
    monkeypatch.setattr(transformer, "on_cpu", lambda: not gpu_branch)
    net = TransformerNet(config)
    net.update(tree_unflatten([(k, mx.random.normal(v.shape) * 3) for k, v
                               in tree_flatten(net.parameters()) if k.endswith("conv.bias")]))
    x = mx.random.uniform(shape=(2, 24, 20, 3))
    recorder = NormStats()
    biased = net(x, recorder)
    assert len(recorder.recorded) > 0
    np.testing.assert_allclose(np.array(net(x)), np.array(biased), rtol=1e-4, atol=1e-5)
    replayed = net(x, NormStats(recorder.recorded))
    np.testing.assert_allclose(np.array(replayed), np.array(biased), rtol=1e-5, atol=1e-6)
    _, grads = nn.value_and_grad(net, lambda t: (net(t) ** 2).sum())(x)
    for key, value in tree_flatten(grads):
        if key.endswith("conv.bias"):
            assert (float(mx.abs(value).max()) > 0) == key.startswith("out."), key


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



def test_margin_is_reflection_around_the_image_cropped_after():
    """margin=m gives, on the picture, what the bare network (margin 0) gives on the picture with
    m reflected pixels on every side; on the whole and the tiled path alike."""
    mx.random.seed(5)
    net = TransformerNet(NetConfig(4, 1))
    x = mx.random.uniform(shape=(2, 21, 30, 3))
    bare = Stylizer(net, dtype=mx.float32, margin=0)
    framed = mx.pad(x, [(0, 0), (6, 6), (6, 6), (0, 0)], mode="reflect")
    expected = np.array(bare(framed))[:, 6:-6, 6:-6]
    out = np.array(Stylizer(net, dtype=mx.float32, margin=6)(x))
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert np.abs(out - np.array(bare(x))).max() > 1e-3  # a margin changes the picture
    tiled = Stylizer(net, dtype=mx.float32, margin=6, max_tile=24, overlap=6)
    bare_tiled = Stylizer(net, dtype=mx.float32, margin=0, max_tile=24, overlap=6)
    expected = np.array(bare_tiled(framed[:1]))[:, 6:-6, 6:-6]
    np.testing.assert_allclose(np.array(tiled(x[:1])), expected, atol=1e-5)
    tiny = Stylizer(net, dtype=mx.float32, margin=16)(mx.random.uniform(shape=(1, 3, 2, 3)))
    assert tiny.shape == (1, 3, 2, 3) and bool(mx.all(mx.isfinite(tiny)))  # margin > size
    with pytest.raises(UsageError, match="margin"):
        Stylizer(net, margin=-1)

def test_whole_image_limit_depends_on_the_device():
    stylizer = Stylizer(TransformerNet(NetConfig(8, 1)))
    assert stylizer.max_tile == (2048 if mx.default_device() == mx.cpu else 4096)
    assert Stylizer(TransformerNet(NetConfig(8, 1)), max_tile=96, overlap=16).max_tile == 96
    with pytest.raises(UsageError, match="overlap"):
        Stylizer(TransformerNet(NetConfig(8, 1)), max_tile=96)  # overlap 64: no room for a step


def test_instance_norm_gradient_on_the_gpu_path_matches_autodiff(monkeypatch):
    """The GPU's float32 norm (its own VJP from one pass of sums) against autodiff of the
    formula."""
    monkeypatch.setattr(transformer, "on_cpu", lambda: False)
    norm = InstanceNorm(5)
    norm.weight, norm.bias = mx.random.normal((5,)), mx.random.normal((5,))
    x = mx.random.normal((3, 7, 6, 5)) * 3 + 1
    cotangent = mx.random.normal(x.shape)

    def formula(x, weight, bias):
        mean, var = mx.mean(x, axis=(1, 2), keepdims=True), mx.var(x, axis=(1, 2), keepdims=True)
        return (x - mean) * mx.rsqrt(var + norm.eps) * weight + bias

    def gpu_path(x, weight, bias):
        norm.weight, norm.bias = weight, bias
        return norm(x)

    theirs = mx.grad(lambda *a: (formula(*a) * cotangent).sum(), argnums=(0, 1, 2))(
        x, norm.weight, norm.bias)
    ours = mx.grad(lambda *a: (gpu_path(*a) * cotangent).sum(), argnums=(0, 1, 2))(
        x, norm.weight, norm.bias)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-4)


def test_edge_padding_gradient_matches_autodiff_of_its_slices():
    x = mx.random.normal((2, 5, 4, 8))
    cotangent = mx.random.normal((2, 7, 6, 8))
    ours = mx.vjp(transformer.edge_pad1, [x], [cotangent])[1][0]
    theirs = mx.vjp(transformer._edge_slices, [x], [cotangent])[1][0]
    np.testing.assert_allclose(np.array(ours), np.array(theirs), rtol=1e-5, atol=1e-5)


def test_a_shape_runs_op_by_op_first_and_compiled_from_its_second_call(monkeypatch):
    """One photo does not pay for a compilation it never reuses (on a fresh GPU, 55 s against
    14 s op by op); a shape seen again, and every call after, takes the compiled pass."""
    traced = []
    real_compile = mx.compile

    def counting_compile(function, *args, **kwargs):
        def traced_function(*inputs):
            traced.append(inputs[0].shape)
            return function(*inputs)
        return real_compile(traced_function, *args, **kwargs)

    monkeypatch.setattr(mx, "compile", counting_compile)
    stylizer = Stylizer(TransformerNet(NetConfig(4, 1)), dtype=mx.float32)
    small, large = mx.random.uniform(shape=(1, 16, 16, 3)), mx.random.uniform(shape=(2, 20, 24, 3))
    first = np.array(stylizer(small))
    assert traced == []  # op by op
    second = np.array(stylizer(small))
    assert traced == [(1, 16, 16, 3)]  # compiled now (traced once)
    np.testing.assert_allclose(first, second, atol=1e-5)
    stylizer(small)
    stylizer(large)
    assert traced == [(1, 16, 16, 3)]  # the compiled trace reused; a new shape op by op again
    stylizer(large)
    assert traced == [(1, 16, 16, 3), (2, 20, 24, 3)]
    frames = (np.array(small) * 255).astype(np.uint8)
    np.testing.assert_allclose(stylizer.uint8(frames).astype(int),
                               stylizer.uint8(frames).astype(int), atol=1)
    assert len(traced) == 3  # the uint8 pass: op by op, then compiled

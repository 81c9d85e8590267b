"""Style files: the safetensors writer and what it writes."""


import mlx.core as mx

from engine.io import style_files as styles_module


def test_our_safetensors_writer_round_trips_every_dtype(tmp_path):
    """save_atomic writes through our own safetensors writer (it runs off the MLX thread): mx.load
    reads back every array bit for bit, bfloat16, scalars and empty arrays included, with the
    metadata."""
    arrays = {"f32": mx.random.normal((3, 5)),
              "f16": mx.random.normal((2, 2, 3)).astype(mx.float16),
              "bf16": mx.random.normal((7,)).astype(mx.bfloat16),
              "step": mx.array(12, mx.uint64), "i32": mx.arange(-3, 3, dtype=mx.int32),
              "flags": mx.array([True, False]), "empty": mx.zeros((0, 4))}
    path = tmp_path / "w.safetensors"
    styles_module.save_atomic(path, arrays, {"format": "x", "note": "\u00fc"})
    loaded, metadata = mx.load(str(path), return_metadata=True)
    assert metadata == {"format": "x", "note": "\u00fc"}
    assert sorted(loaded) == sorted(arrays)
    for key, value in arrays.items():
        assert loaded[key].dtype == value.dtype and loaded[key].shape == value.shape, key
        assert mx.array_equal(loaded[key], value).item(), key
    assert path.stat().st_mode & 0o777 == 0o644

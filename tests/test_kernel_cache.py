"""The shipped CUDA kernels: packed from a cache folder, seeded into an empty one once, never
over a file already there, only for the MLX version and GPU they were built for."""

import io
import tarfile

from engine import kernel_cache


def _cache(folder, files):
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return folder


def test_pack_then_seed_adds_the_missing_kernels_once(tmp_path):
    long = "Ju8IAddABKf4IAsTypeJLf4IMaximumDEMf4" * 6 + "_5881389824232743715.ptx"  # 240 chars
    built = _cache(tmp_path / "built", {"binary_Add_float32.ptx": b"ptx a", long: b"fused",
                                        "binary_Add_float32.txt": b"kernels a",
                                        "Compiled_9f3a.ptx": b"ptx b"})
    archive = kernel_cache.pack(built, tmp_path / "shipped", "0.32.4", "sm_90")
    assert archive.name == "mlx-0.32.4-sm_90.tar.xz"
    again = kernel_cache.pack(built, tmp_path / "again", "0.32.4", "sm_90")
    assert again.read_bytes() == archive.read_bytes()  # the same files, the same archive

    user = _cache(tmp_path / "user", {"Compiled_9f3a.ptx": b"the user's own"})
    assert kernel_cache.seed(user, tmp_path / "shipped", "0.32.4", "sm_90") == 3
    assert (user / "binary_Add_float32.ptx").read_bytes() == b"ptx a"
    assert (user / long).read_bytes() == b"fused"
    assert (user / "Compiled_9f3a.ptx").read_bytes() == b"the user's own"  # never overwritten
    (user / "binary_Add_float32.ptx").unlink()
    assert kernel_cache.seed(user, tmp_path / "shipped", "0.32.4", "sm_90") == 0  # stamped
    assert not (user / "binary_Add_float32.ptx").exists()
    assert not [p for p in user.iterdir() if p.name.endswith(".part")]


def test_seed_needs_the_same_mlx_and_gpu(tmp_path):
    built = _cache(tmp_path / "built", {"k.ptx": b"ptx"})
    kernel_cache.pack(built, tmp_path / "shipped", "0.32.4", "sm_90")
    for version, arch in (("0.33.0", "sm_90"), ("0.32.4", "sm_80"), ("0.32.4", "")):
        assert kernel_cache.seed(tmp_path / f"user-{version}-{arch}", tmp_path / "shipped",
                                 version, arch) == 0
        assert not (tmp_path / f"user-{version}-{arch}" / "k.ptx").exists()


def test_seed_writes_plain_names_inside_the_folder_only(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for name in ("../escape.ptx", "/abs.ptx", "sub/dir.ptx", ".hidden", "ok.ptx"):
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
        link = tarfile.TarInfo("link.ptx")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    (tmp_path / "shipped").mkdir()
    (tmp_path / "shipped" / "mlx-0.32.4-sm_90.tar.xz").write_bytes(buffer.getvalue())
    cache = tmp_path / "deep" / "cache"
    assert kernel_cache.seed(cache, tmp_path / "shipped", "0.32.4", "sm_90") == 1
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".shipped")) == \
        ["ok.ptx"]
    assert not (tmp_path / "deep" / "escape.ptx").exists()


def test_a_broken_archive_costs_the_compilation_only(tmp_path, monkeypatch):
    (tmp_path / "shipped").mkdir()
    (tmp_path / "shipped" / "mlx-0.32.4-sm_90.tar.xz").write_bytes(b"not an archive")
    monkeypatch.setattr(kernel_cache, "_seeded", False)
    monkeypatch.setattr(kernel_cache, "shipped_folder", lambda: tmp_path / "shipped")
    monkeypatch.setattr(kernel_cache, "cache_folder", lambda: tmp_path / "cache")
    monkeypatch.setattr(kernel_cache, "device", lambda: ("0.32.4", "sm_90"))
    assert kernel_cache.seed_once() == 0
    assert kernel_cache.seed_once() == 0  # once a process

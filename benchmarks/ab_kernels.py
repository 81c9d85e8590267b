"""This tree's fused GPU apply (engine.fused, engine.kernels) against an earlier commit's, in one
process, alternating: ms per frame of fused_forward (random full network with nonzero biases,
float16) at several sizes, and the largest difference between the two outputs. For the GPU
machine.

    python benchmarks/ab_kernels.py bf1c0e0 [--sizes 512x512,1920x1080] [--batches 1,8]
    python benchmarks/ab_kernels.py path/to/old/engine ...   (a copy of the package)

The earlier commit's engine package is unpacked (git archive) under another name, its kernels
renamed (engine_ -> engineold_) so that MLX compiles both versions.
"""

import argparse  # noqa: I001 - engine before mlx.core, below
import json
import shutil
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

import engine  # noqa: F401 - first: its BLAS loads before mlx.core
import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from profile_gpu import mlx_ms  # the same timing as the profiles

from engine.nets import fused
from engine.nets.transformer import FULL, TransformerNet


def load_old(commit: str, folder: Path):
    """The engine package at `commit` (or in the folder `commit` names, for a machine without
    the repository's history), importable as engine_old."""
    package = folder / "engine_old"
    if Path(commit).is_dir():
        shutil.copytree(Path(commit), package)
    else:
        archive = subprocess.run(["git", "archive", commit, "engine"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
        (folder / "engine").rename(package)
    kernels = package / "kernels.py"
    kernels.write_text(kernels.read_text().replace('name="engine_"', 'name="engineold_"'))
    sys.path.insert(0, str(folder))
    import engine_old.fused
    import engine_old.transformer

    return engine_old


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("commit", help="the earlier commit, e.g. bf1c0e0, or a copy of its engine/")
    parser.add_argument("--sizes", default="512x512,1920x1080")
    parser.add_argument("--batches", default="1,8")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        old = load_old(args.commit, Path(folder))
        mx.random.seed(0)
        for size in args.sizes.split(","):
            width, height = map(int, size.split("x"))
            for batch in map(int, args.batches.split(",")):
                net = TransformerNet(FULL)
                for layer in [*net.down, *net.up, net.out,
                              *(c for b in net.blocks for c in (b.conv1, b.conv2))]:
                    layer.conv.bias = mx.random.normal(layer.conv.bias.shape) * 0.1
                net.set_dtype(mx.float16)
                earlier = old.transformer.TransformerNet(FULL)
                earlier.update(net.parameters())
                x = mx.random.uniform(shape=(batch, height, width, 3)).astype(mx.float16)
                for module, network in ((old.fused, earlier), (fused, net)):
                    if hasattr(module, "prepare"):  # derived weights, worked out once
                        module.prepare(network)
                runs = {"old": mx.compile(partial(old.fused.fused_forward, earlier)),
                        "new": mx.compile(partial(fused.fused_forward, net))}
                row = {"size": size, "batch": batch}
                for k in range(3):
                    for name, run in runs.items():
                        row[f"{name}{k}_ms_per_frame"] = round(
                            mlx_ms(run, x, repeats=20 if batch == 8 else 60) / batch, 4)
                a, b = (runs[name](x).astype(mx.float32) for name in ("old", "new"))
                row["max_diff"] = float(mx.abs(a - b).max())
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

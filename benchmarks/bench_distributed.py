"""Data-parallel training: steps/s and scaling efficiency from one process to N under mlx.launch.

    python benchmarks/bench_distributed.py --processes 1,2 --backend ring   # CPU processes
    python benchmarks/bench_distributed.py --processes 1,2 --backend nccl   # one GPU each

Each run is `mlx.launch -n N --backend B -- python bench_distributed.py --worker ...`: every
process trains with the same per-process --batch (weak scaling: the global batch grows with N),
so the efficiency is (N-process images/s) / (N x one-process images/s). Steps after --warmup are
timed. Prints one JSON line per N, then the efficiencies.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(args) -> None:
    sys.path.insert(0, str(ROOT))
    import engine  # noqa: F401 - first: its BLAS loads before mlx.core
    from engine.io import examples
    from engine.io.vgg_weights import load_vgg
    from engine.nets.transformer import NETWORKS
    from engine.training import distributed
    from engine.training.settings import TrainSettings
    from engine.training.style import train_style

    preset = NETWORKS[args.net]
    settings = TrainSettings(steps=args.warmup + args.steps, batch=args.batch, size=args.size,
                             style_size=args.size, width=preset.width,
                             res_blocks=preset.res_blocks, arch=preset.arch,
                             checkpoint_every=10**9, preview_every=0)
    photos = examples.photos()
    times = []
    train_style(load_vgg(path=args.vgg_weights), photos[0], f"bench-{distributed.size()}",
                photos, settings, on_step=lambda step: times.append(time.perf_counter()))
    if distributed.is_main():
        timed = times[args.warmup:]
        seconds = (timed[-1] - timed[0]) / (len(timed) - 1)
        print(json.dumps({"processes": distributed.size(), "batch_per_process": args.batch,
                          "size": args.size, "net": args.net, "steps_per_second": 1 / seconds,
                          "images_per_second": args.batch * distributed.size() / seconds}),
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--backend", default="ring")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--net", choices=("full", "fast"), default="fast")
    parser.add_argument("--vgg-weights")
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    launcher = shutil.which("mlx.launch", path=str(Path(sys.executable).parent)) or \
        shutil.which("mlx.launch")
    results = {}
    for count in map(int, args.processes.split(",")):
        forwarded = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                     if k not in ("worker", "processes", "backend") and v is not None]
        with tempfile.TemporaryDirectory() as home:
            run = subprocess.run(
                [launcher, "-n", str(count), "--backend", args.backend, "--",
                 sys.executable, __file__, "--worker", *forwarded] if count > 1 else
                [sys.executable, __file__, "--worker", *forwarded],
                capture_output=True, text=True, check=False, timeout=3600,
                env={**os.environ, "ENGINE_HOME": home})
        lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
        if run.returncode or not lines:
            print(json.dumps({"processes": count, "error": run.stderr.strip()[-300:]}), flush=True)
            continue
        print(lines[-1], flush=True)
        results[count] = json.loads(lines[-1])["images_per_second"]
    if 1 in results:
        for count, rate in results.items():
            print(json.dumps({"processes": count, "scaling_efficiency":
                              rate / (count * results[1])}), flush=True)


if __name__ == "__main__":
    main()

"""The whole training loop, not the bare step: ms per step of `train_style` on real photos
(crops made on the background thread, progress, checkpoints, previews), against the bare
compiled step of bench_train.py. Run it with another engine tree first on PYTHONPATH to compare
loops (benchmarks/README.md).

    python benchmarks/bench_train_loop.py --style STYLE.jpg --content DIR [--steps 1000]
        [--batch 8] [--size 256] [--precision bfloat16] [--checkpoint-every 250]
        [--style-weight 3e5] [--style-layers relu1_1,...] [--learning-rate 1e-3] [--lr-decay 0.3]
        [--vgg-weights W] [--label NAME] [--out results.jsonl]

Prints one JSON line: the crops' cost on this CPU (ms per batch, one thread), the steady ms
per step (from step 20 to the end: checkpoints and previews included) and the run's wall time.
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import mlx.core as mx

import engine  # first: its BLAS loads before mlx.core
from engine.io.vgg_weights import load_vgg
from engine.training.data import ContentSet
from engine.training.settings import TrainSettings
from engine.training.style import train_style

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--style", required=True)
    parser.add_argument("--content", required=True)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--precision", default="bfloat16")
    parser.add_argument("--checkpoint-every", type=int, default=250)
    parser.add_argument("--style-weight", type=float, default=None)
    parser.add_argument("--style-layers", default=None, help="comma-separated, as train-style's")
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--lr-decay", type=float, default=None)
    parser.add_argument("--vgg-weights", default=None)
    parser.add_argument("--label", default="")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    photos = sorted(p for p in Path(args.content).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    crops = ContentSet(photos[:40], args.size)
    started = time.perf_counter()
    for step in range(20):
        crops.sample(0, 0, step, args.batch)
    crop_ms = (time.perf_counter() - started) * 1000 / 20

    vgg = load_vgg(path=args.vgg_weights)
    objective = {key: value for key, value in (
        ("style_weight", args.style_weight), ("learning_rate", args.learning_rate),
        ("lr_decay", args.lr_decay),
        ("style_layers", tuple(args.style_layers.split(",")) if args.style_layers else None))
        if value is not None}  # the train-style defaults otherwise
    settings = TrainSettings(steps=args.steps, batch=args.batch, size=args.size,
                             precision=args.precision, checkpoint_every=args.checkpoint_every,
                             preview_every=args.checkpoint_every, **objective)
    times = {}
    with tempfile.TemporaryDirectory() as home:
        os.environ["ENGINE_HOME"] = home
        started = time.perf_counter()
        train_style(vgg, Path(args.style), "loop", photos, settings,
                    on_step=lambda s: times.setdefault(s.step, time.perf_counter()))
        wall = time.perf_counter() - started
    first = 20
    steady = (times[args.steps] - times[first]) * 1000 / (args.steps - first)
    row = {"label": args.label, "engine": str(Path(engine.__file__).parent),
           "device": str(mx.default_device()), "steps": args.steps, "batch": args.batch,
           "size": args.size, "precision": args.precision,
           "checkpoint_every": args.checkpoint_every, "objective": objective,
           "crop_ms_per_batch": round(crop_ms, 2),
           "steady_ms_per_step": round(steady, 2), "wall_s": round(wall, 1),
           "first_step_s": round(times[1] - started, 1)}
    print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "a") as out:
            out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

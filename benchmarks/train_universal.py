"""How the shipped any-painting network is trained: `engine train-universal` through its Python
function, with a log line every few hundred steps (the CLI's progress bar needs a terminal).

    python benchmarks/train_universal.py --content DIR --paintings DIR [--vgg-weights F]
        [--steps N] [--minutes M] [--lr-decay F] [--learning-rate F] [--precision bfloat16]
        [--resume | --from NETWORK.safetensors] [--out FILE]

The shipped network was trained on ../shared/data/content (692 photos) and on
../shared/data/{paintings,textures,styles} less the held-out paintings of
universal_holdout.txt (1039 images), each resized to 448 px on its longest side.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import environment  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--content", type=Path, required=True)
    parser.add_argument("--paintings", type=Path, required=True)
    parser.add_argument("--vgg-weights", type=Path)
    parser.add_argument("--name", default="universal")
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--minutes", type=float, default=0.0)
    parser.add_argument("--lr-decay", type=float, default=0.3)
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--from", dest="start_from", type=Path,
                        help="go on training this painting network file")
    parser.add_argument("--out", type=Path, help="where to write the network")
    args = parser.parse_args()

    from engine.io.images import find_images
    from engine.io.vgg_weights import load_vgg
    from engine.training.settings import UniversalSettings
    from engine.training.universal import train_universal

    settings = UniversalSettings(steps=args.steps, seconds=args.minutes * 60,
                                 lr_decay=args.lr_decay, learning_rate=args.learning_rate,
                                 precision=args.precision,
                                 batch=args.batch, checkpoint_every=2000, preview_every=2000)
    started = time.perf_counter()

    def on_step(step) -> None:
        if step.step % args.every == 0:
            terms = " ".join(f"{k} {v:.3g}" for k, v in step.terms.items())
            print(f"step {step.step}/{step.steps} loss {step.loss:.4g} {terms} "
                  f"{step.images_per_second / args.batch:.1f} it/s "
                  f"{time.perf_counter() - started:.0f} s", flush=True)

    def on_ready(step: int) -> None:
        print(f"ready at step {step} after {time.perf_counter() - started:.1f} s", flush=True)

    print(environment(), flush=True)
    result = train_universal(load_vgg(path=args.vgg_weights), args.name,
                             find_images(args.content), find_images(args.paintings), settings,
                             resume=args.resume, on_step=on_step, on_ready=on_ready,
                             start_from=args.start_from, out=args.out)
    print(f"{'interrupted' if result.interrupted else 'done'} at step {result.steps}; first "
          f"step {result.first_step_seconds:.1f} s; total {time.perf_counter() - started:.0f} s; "
          f"-> {result.style_path}", flush=True)


if __name__ == "__main__":
    main()

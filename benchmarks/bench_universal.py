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
    args = parser.parse_args()

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
                result = timed(lambda: stylizer(frames), repeats=args.repeats)
                emit({"what": f"{name} {width}x{height} batch {batch}", **result,
                      "ms_per_frame": round(result["median_s"] * 1000 / batch, 2)})


if __name__ == "__main__":
    main()

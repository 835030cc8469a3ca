"""How long ``dissect doctor`` and a ``dissect describe`` that cannot start take to name
everything missing, offline, on a fresh machine (issue 17: under 3 s).

Each try is a fresh interpreter (``python -m dissect_core ...``), as a user runs it, in an
empty working folder, with empty torch hub and Hugging Face caches, with the reference
tool's documented command: CUDA, the concept file, Broden, the ResNet-18 weights and the
CLIP weights are all missing. Prints each try's wall time and the median.

    python benchmarks/bench_prerequisites.py [--tries 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--target_model", "resnet18", "--target_layers", "layer2,layer3,layer4", "--d_probe", "broden",
         "--concept_set", "data/20k.txt", "--clip_model", "ViT-B/16"]


def one_try(command: str, folder: Path) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TORCH_HOME": str(folder / "torch"),
           "HF_HOME": str(folder / "hf"), "CUDA_VISIBLE_DEVICES": ""}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "dissect_core", command, *FLAGS], cwd=folder, env=env,
                          capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    assert done.returncode != 0, "everything was there: this measures a machine that lacks it all"
    return seconds, done.stdout + done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=5)
    args = parser.parse_args()
    for command in ("doctor", "describe"):
        times = []
        for _ in range(args.tries):
            with tempfile.TemporaryDirectory() as folder:
                seconds, output = one_try(command, Path(folder))
            times.append(seconds)
        missing = output.count("✗") if command == "doctor" else output.count("\n- ")
        print(f"dissect {command}: {missing} missing items named; wall time per try "
              f"{', '.join(f'{t:.2f}' for t in times)} s; median {statistics.median(times):.2f} s")


if __name__ == "__main__":
    main()

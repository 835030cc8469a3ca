"""Benchmark: soft-WPMI at Broden scale, dense (reference-style) against dissect_core.

    .venv/bin/python benchmarks/bench_soft_wpmi.py            # 63,305 × 20,000 × 512 units, d=512
    .venv/bin/python benchmarks/bench_soft_wpmi.py --quick    # small sizes, a few seconds
    .venv/bin/python benchmarks/bench_soft_wpmi.py --activations iid --repeats 3

Each variant runs in its own child process (this script with ``--variant``), so its
peak resident memory (``ru_maxrss``) is its own. Reported per variant:

* wall and CPU time of the similarity call alone (best of ``--repeats`` runs; other
  work on the machine inflates wall time, CPU time less so);
* peak RSS of the whole child process, and the part above the RSS it had once the
  inputs existed (the interpreter with torch imported is ~0.7 GB by itself here);

then the speed-up (dense wall / ours wall), the share of units whose argmax label
agrees, max |Δscore| and the largest |Δscore| relative to the unit's largest |score|.
Both are also compared with the exact scores: the same formula in float64
(``dense_reference.exact_soft_wpmi``, run once, untimed), so a label that differs
between the two float32 results can be traced to the one that strays from it.

Seeded random data (``--seed``, default 0), float32:

* CLIP image features N×d and text features M×d: standard normal (raw, unnormalised;
  both implementations normalise the rows).
* Activations N×K, ``--activations``:
  - ``correlated`` (default): relu(Z·W/√32 + 0.5·E) · g with Z (N×32), W (32×K),
    E (N×K) and z (N×1) standard normal and a per-image gain g = exp(0.25·z). Units
    share latent features and some images drive many units, as in real layers, so the
    units' top-k sets overlap: |U| ≈ 14k of 63k images at the default sizes (the
    union is printed).
  - ``iid``: relu of standard normal. The top-k sets are nearly independent, the worst
    case for the union (|U| ≈ 35k of 63k images at the default sizes).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.dense_reference import dense_soft_wpmi, exact_soft_wpmi  # noqa: E402
from dissect_core.engine.similarity import similarity_matrix  # noqa: E402

BRODEN = {"images": 63305, "concepts": 20000, "units": 512, "dim": 512}
QUICK = {"images": 6000, "concepts": 2000, "units": 128, "dim": 512}
TOP_K = 100


def make_data(images: int, concepts: int, units: int, dim: int, activations: str, seed: int):
    """Seeded inputs, generated in place so the generation peak stays near their size."""
    generator = torch.Generator().manual_seed(seed)
    image_features = torch.randn(images, dim, generator=generator)
    text_features = torch.randn(concepts, dim, generator=generator)
    if activations == "iid":
        acts = torch.randn(images, units, generator=generator).relu_()
    else:
        rank = 32
        latent = torch.randn(images, rank, generator=generator)
        loadings = torch.randn(rank, units, generator=generator) / rank ** 0.5
        acts = torch.randn(images, units, generator=generator).mul_(0.5)
        acts.addmm_(latent, loadings).relu_()
        acts.mul_(torch.randn(images, 1, generator=generator).mul_(0.25).exp_())
    return image_features, text_features, acts


def _rss_now_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_child(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    image_features, text_features, acts = make_data(
        args.images, args.concepts, args.units, args.dim, args.activations, args.seed)
    union = torch.unique(torch.topk(acts, TOP_K, dim=0).indices).numel()
    base = _rss_now_bytes()
    wall, cpu = time.perf_counter(), time.process_time()
    if args.variant == "dense":
        scores = dense_soft_wpmi(image_features, text_features, acts)
    elif args.variant == "exact":
        scores = exact_soft_wpmi(image_features, text_features, acts)
    else:
        scores = similarity_matrix("soft_wpmi", image_features, text_features, acts)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    torch.save(scores, args.out)
    print(json.dumps({"wall": wall, "cpu": cpu, "peak": peak, "base": base, "union": union}))


def run_parent(args: argparse.Namespace) -> None:
    sizes = f"{args.images:,} images × {args.concepts:,} concepts × {args.units} units, d={args.dim}"
    print(f"soft_wpmi benchmark: {sizes}, {args.activations} activations, seed {args.seed}, "
          f"torch {torch.__version__}, {args.threads or torch.get_num_threads()} threads")
    results, scores = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in ("dense", "ours", "exact"):
            out = Path(tmp) / f"{variant}.pt"
            runs = []
            for _ in range(args.repeats if variant != "exact" else 1):
                command = [sys.executable, __file__, "--variant", variant, "--out", str(out),
                           "--images", str(args.images), "--concepts", str(args.concepts),
                           "--units", str(args.units), "--dim", str(args.dim),
                           "--activations", args.activations, "--seed", str(args.seed),
                           "--threads", str(args.threads)]
                done = subprocess.run(command, check=True, capture_output=True, text=True)
                runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            results[variant] = {
                "wall": min(r["wall"] for r in runs), "cpu": min(r["cpu"] for r in runs),
                "walls": [r["wall"] for r in runs], "peak": max(r["peak"] for r in runs),
                "base": max(r["base"] for r in runs), "union": runs[0]["union"],
            }
            scores[variant] = torch.load(out)
    gib = 1024 ** 3
    print(f"union of top-{TOP_K} sets |U| = {results['ours']['union']:,} images "
          f"({results['ours']['union'] / args.images:.0%} of N)")
    for variant in ("dense", "ours"):
        r = results[variant]
        walls = ", ".join(f"{w:.2f}" for w in r["walls"])
        print(f"{variant:>5}: wall {r['wall']:6.2f} s (runs: {walls}), cpu {r['cpu']:6.2f} s, "
              f"peak RSS {r['peak'] / gib:5.2f} GiB ({(r['peak'] - r['base']) / gib:5.2f} GiB above the inputs)")
    print(f"speed-up (wall, best runs): {results['dense']['wall'] / results['ours']['wall']:.2f}×, "
          f"(cpu): {results['dense']['cpu'] / results['ours']['cpu']:.2f}×")
    exact = scores["exact"]
    print(f"scores (exact) in [{exact.min().item():.3g}, {exact.max().item():.3g}]")
    for first, second in (("ours", "dense"), ("dense", "exact"), ("ours", "exact")):
        a, b = scores[first].double(), scores[second].double()
        differ = int((a.argmax(dim=1) != b.argmax(dim=1)).sum())
        delta = (a - b).abs()
        unit_relative = (delta.max(dim=1).values / b.abs().max(dim=1).values).max().item()
        print(f"{first} vs {second}: labels agree on {1 - differ / args.units:.3%} of units ({differ} differ); "
              f"max |Δscore| = {delta.max().item():.3g}, relative to the unit's max |score|: {unit_relative:.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int)
    parser.add_argument("--concepts", type=int)
    parser.add_argument("--units", type=int)
    parser.add_argument("--dim", type=int)
    parser.add_argument("--quick", action="store_true", help="small sizes (6,000 × 2,000 × 128)")
    parser.add_argument("--activations", choices=("correlated", "iid"), default="correlated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="runs per variant; the best time is kept")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--variant", choices=("dense", "ours", "exact"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    for key, value in (QUICK if args.quick else BRODEN).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.variant:
        run_child(args)
    else:
        run_parent(args)


if __name__ == "__main__":
    main()

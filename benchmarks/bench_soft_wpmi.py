"""Benchmark: soft-WPMI, dense (the reference's formulation) against dissect_core, size by size.

    .venv/bin/python benchmarks/bench_soft_wpmi.py --preset standard   # 1,000 × 2,000, 128/256/512/1,000 units
    .venv/bin/python benchmarks/bench_soft_wpmi.py --preset broden     # 63,305 × 20,000 × 512 units
    .venv/bin/python benchmarks/bench_soft_wpmi.py --preset quick      # 6,000 × 2,000 × 128, a few seconds
    .venv/bin/python benchmarks/bench_soft_wpmi.py --images 20000 --concepts 20000 --units 512 --activations iid

Presets (features d=512):

* ``standard``: the standard comparison's sizes on a 1,000-image probe with 2,000
  concepts: ResNet-18's layer2, layer3, layer4 and fc (128, 256, 512 and 1,000 units).
* ``broden``: Broden's 63,305 images, the 20,000 words of english_20k, 512 units.
* ``quick``: 6,000 × 2,000 × 128.

Variants, each run in its own child process (this script with ``--variant``), so its
peak resident memory (``ru_maxrss``) is its own:

* ``dense``: ``dense_reference.dense_soft_wpmi`` with ``index_select`` (the fastest dense
  form: the full images × concepts softmax, then each unit's top rows, logs and sums);
* ``ours``: ``similarity_matrix("soft_wpmi", ...)``;
* ``exact``: the same formula in float64 (``dense_reference.exact_soft_wpmi``), run
  once, untimed: the labels both float32 results are checked against.

A child runs its variant ``--repeats`` times on the same inputs; the parent starts the
dense and our children in turn, ``--rounds`` times, and keeps the best wall time (other
work on the machine only ever adds time) and the CPU time of that run. Reported per
size: wall and CPU seconds, peak RSS of the child and the part above what it held once
the inputs existed (the interpreter with torch imported is ~0.7 GB by itself), the
speed-up, and for each pair of results the share of units whose label (argmax over
concepts) agrees and the largest |Δscore|. The last lines check the issue's targets.

Seeded random data (``--seed``, default 0), float32:

* CLIP image features N×d and text features M×d: standard normal (raw, unnormalised;
  both implementations normalise the rows).
* Activations N×K, ``--activations``:
  - ``correlated`` (default): relu(Z·W/√32 + 0.5·E) · g with Z (N×32), W (32×K),
    E (N×K) and z (N×1) standard normal and a per-image gain g = exp(0.25·z). Units
    share latent features and some images drive many units, as in real layers, so the
    units' top-k sets overlap: |U| ≈ 14k of 63k images at Broden's size (the union is
    printed).
  - ``iid``: relu of standard normal. The top-k sets are nearly independent, the worst
    case for the union (|U| ≈ 35k of 63k images at Broden's size).
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

PRESETS = {
    "standard": {"images": 1000, "concepts": 2000, "units": [128, 256, 512, 1000], "dim": 512},
    "broden": {"images": 63305, "concepts": 20000, "units": [512], "dim": 512},
    "quick": {"images": 6000, "concepts": 2000, "units": [128], "dim": 512},
}
# Kept for the other benchmarks that draw the same data.
BRODEN = {key: (value[0] if key == "units" else value) for key, value in PRESETS["broden"].items()}
QUICK = {key: (value[0] if key == "units" else value) for key, value in PRESETS["quick"].items()}
TOP_K = 100
GB = 1e9
BRODEN_TARGETS = {"speed-up": 2.0, "peak GB": 2.0}


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
    runs = []
    for _ in range(args.repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        if args.variant == "dense":
            scores = dense_soft_wpmi(image_features, text_features, acts)
        elif args.variant == "exact":
            scores = exact_soft_wpmi(image_features, text_features, acts)
        else:
            scores = similarity_matrix("soft_wpmi", image_features, text_features, acts)
        runs.append((time.perf_counter() - wall, time.process_time() - cpu))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    torch.save(scores, args.out)
    print(json.dumps({"runs": runs, "peak": peak, "base": base, "union": union,
                      "threads": torch.get_num_threads()}))


def _child(args: argparse.Namespace, variant: str, units: int, out: Path, repeats: int) -> dict:
    command = [sys.executable, __file__, "--variant", variant, "--out", str(out),
               "--images", str(args.images), "--concepts", str(args.concepts), "--units", str(units),
               "--dim", str(args.dim), "--activations", args.activations, "--seed", str(args.seed),
               "--threads", str(args.threads), "--repeats", str(repeats)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _labels(first: torch.Tensor, second: torch.Tensor) -> str:
    differ = int((first.argmax(dim=1) != second.argmax(dim=1)).sum())
    delta = (first.double() - second.double()).abs().max().item()
    return f"{differ} of {first.shape[0]} labels differ, max |Δscore| {delta:.2g}"


def measure(args: argparse.Namespace, units: int) -> dict:
    """Time both variants at one size, compute the exact scores, print a block; return the figures."""
    results, scores = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for variant in ("dense", "ours"):
                out = Path(tmp) / f"{variant}.pt"
                child = _child(args, variant, units, out, args.repeats)
                best = results.get(variant)
                results[variant] = child if best is None else {
                    **best, "runs": best["runs"] + child["runs"], "peak": max(best["peak"], child["peak"]),
                    "base": max(best["base"], child["base"])}
                scores[variant] = torch.load(out)
        _child(args, "exact", units, Path(tmp) / "exact.pt", 1)
        scores["exact"] = torch.load(Path(tmp) / "exact.pt")
    union = results["ours"]["union"]
    print(f"\n{args.images:,} images × {args.concepts:,} concepts × {units:,} units: union of the top-{TOP_K} "
          f"sets {union:,} images ({union / args.images:.0%}), {results['ours']['threads']} threads; "
          f"load average {os.getloadavg()[0]:.1f} at the end (other jobs on the machine inflate wall times)")
    for variant in ("dense", "ours"):
        r = results[variant]
        wall, cpu = min(r["runs"])
        walls = ", ".join(f"{w:.3g}" for w, _ in r["runs"])
        r["wall"], r["cpu"] = wall, cpu
        print(f"  {variant:>5}: wall {wall:7.3f} s, cpu {cpu:7.3f} s (all walls: {walls}); peak RSS "
              f"{r['peak'] / GB:5.2f} GB ({(r['peak'] - r['base']) / GB:5.2f} GB above the inputs)")
    speed_up = results["dense"]["wall"] / results["ours"]["wall"]
    print(f"  speed-up: {speed_up:.2f}× wall, {results['dense']['cpu'] / results['ours']['cpu']:.2f}× cpu")
    for first, second in (("ours", "exact"), ("dense", "exact"), ("ours", "dense")):
        print(f"  {first} vs {second}: {_labels(scores[first], scores[second])}")
    exact_labels = scores["exact"].argmax(dim=1)
    return {"units": units, "speed_up": speed_up, "peak": results["ours"]["peak"],
            "ours_exact": bool((scores["ours"].argmax(dim=1) == exact_labels).all()),
            "dense_exact": int((scores["dense"].argmax(dim=1) == exact_labels).sum())}


def run_parent(args: argparse.Namespace) -> None:
    print(f"soft_wpmi benchmark: d={args.dim}, {args.activations} activations, seed {args.seed}, "
          f"torch {torch.__version__}, best of {args.rounds} round(s) × {args.repeats} run(s)")
    figures = [measure(args, units) for units in args.units]
    print("\ntargets:")
    for f in figures:
        print(f"  {f['units']:>5} units: ours at least as fast as dense: {'yes' if f['speed_up'] >= 1 else 'NO'} "
              f"({f['speed_up']:.2f}×); ours' labels = exact on every unit: {'yes' if f['ours_exact'] else 'NO'} "
              f"(dense: {f['dense_exact']} of {f['units']})")
    if args.images >= PRESETS["broden"]["images"]:
        for f in figures:
            print(f"  Broden size, {f['units']} units: at least {BRODEN_TARGETS['speed-up']:.0f}× dense: "
                  f"{'yes' if f['speed_up'] >= BRODEN_TARGETS['speed-up'] else 'NO'} ({f['speed_up']:.2f}×); "
                  f"peak at most {BRODEN_TARGETS['peak GB']:.0f} GB: "
                  f"{'yes' if f['peak'] <= BRODEN_TARGETS['peak GB'] * GB else 'NO'} ({f['peak'] / GB:.2f} GB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="broden")
    parser.add_argument("--images", type=int)
    parser.add_argument("--concepts", type=int)
    parser.add_argument("--units", help="units per layer, comma-separated (one size each)")
    parser.add_argument("--dim", type=int)
    parser.add_argument("--activations", choices=("correlated", "iid"), default="correlated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, help="runs per child (default: 5 under 10,000 images, else 1)")
    parser.add_argument("--rounds", type=int, default=1, help="dense and ours children started in turn")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--variant", choices=("dense", "ours", "exact"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    for key in ("images", "concepts", "dim"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    if args.variant:
        args.units = int(args.units)
        run_child(args)
        return
    args.units = [int(units) for units in args.units.split(",")] if args.units else preset["units"]
    if args.repeats is None:
        args.repeats = 5 if args.images < 10000 else 1
    run_parent(args)


if __name__ == "__main__":
    main()

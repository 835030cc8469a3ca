"""Benchmark: the label-quality figures at Broden scale, against the similarity step itself.

    .venv/bin/python benchmarks/bench_quality.py                 # 63,305 × 20,000 × 512 units, d=512
    .venv/bin/python benchmarks/bench_quality.py --quick         # small sizes, seconds
    .venv/bin/python benchmarks/bench_quality.py --activations iid --resamples 20

One child process (this script with ``--child``) runs, on the same seeded data as
``bench_soft_wpmi.py`` (see its docstring), first ``similarity_matrix("soft_wpmi")``
(the similarity step) and then ``quality.layer_quality`` with default settings (20
bootstrap resamples plus the fit/held-out split, top-5 candidates per unit). Reported:
wall and CPU time of each, their ratio, the candidates' count and the union of the
top-D image sets, and the child's peak RSS measured separately for the quality step
(``ru_maxrss`` after the similarity step is reset by running the quality step in a
second child). Timings on a shared machine are noisy: use the best of ``--repeats``.
"""
from __future__ import annotations

import argparse
import json
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

from benchmarks.bench_soft_wpmi import BRODEN, QUICK, make_data  # noqa: E402
from dissect_core.engine.label_quality import QualitySettings, layer_quality  # noqa: E402
from dissect_core.engine.similarity import similarity_matrix  # noqa: E402


def run_child(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    image_features, text_features, acts = make_data(
        args.images, args.concepts, args.units, args.dim, args.activations, args.seed)
    result = {}
    if args.step == "similarity":
        wall, cpu = time.perf_counter(), time.process_time()
        scores = similarity_matrix("soft_wpmi", image_features, text_features, acts)
        result.update(wall=time.perf_counter() - wall, cpu=time.process_time() - cpu)
        values, indices = torch.topk(scores, 5, dim=1)
        torch.save({"values": values, "indices": indices}, args.best)
    else:
        import pandas as pd

        best = torch.load(args.best)
        names = [f"c{i}" for i in range(args.concepts)]
        descriptions = pd.DataFrame({"unit": range(args.units),
                                     "description": [names[i] for i in best["indices"][:, 0].tolist()],
                                     "similarity": best["values"][:, 0].numpy()})
        settings = QualitySettings(resamples=args.resamples)
        wall, cpu = time.perf_counter(), time.process_time()
        quality = layer_quality("layer", descriptions, best["values"], best["indices"], names, image_features,
                                text_features, acts, "soft_wpmi", {}, settings)
        result.update(wall=time.perf_counter() - wall, cpu=time.process_time() - cpu,
                      candidates=int(torch.unique(best["indices"]).numel()),
                      stable_share=quality.stable_share, mean_correlation=quality.mean_correlation,
                      distinct=[quality.distinct, quality.distinct_low, quality.distinct_high])
    result["peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(result))


def run_parent(args: argparse.Namespace) -> None:
    print(f"label-quality benchmark: {args.images:,} images × {args.concepts:,} concepts × {args.units} units, "
          f"d={args.dim}, {args.activations} activations, {args.resamples} resamples, seed {args.seed}, "
          f"torch {torch.__version__}, {args.threads or torch.get_num_threads()} threads")
    best_path = Path(tempfile.gettempdir()) / f"bench_quality_best_{args.images}_{args.units}_{args.activations}.pt"
    results = {"similarity": [], "quality": []}
    for _ in range(args.repeats):
        for step in ("similarity", "quality"):
            command = [sys.executable, __file__, "--child", "--step", step, "--best", str(best_path),
                       "--images", str(args.images), "--concepts", str(args.concepts), "--units", str(args.units),
                       "--dim", str(args.dim), "--activations", args.activations, "--seed", str(args.seed),
                       "--threads", str(args.threads), "--resamples", str(args.resamples)]
            done = subprocess.run(command, check=True, capture_output=True, text=True)
            results[step].append(json.loads(done.stdout.strip().splitlines()[-1]))
    best_path.unlink(missing_ok=True)
    gib = 1024 ** 3
    sim = min(results["similarity"], key=lambda r: r["wall"])
    qual = min(results["quality"], key=lambda r: r["wall"])
    print(f"similarity step : wall {sim['wall']:.1f} s (runs {[round(r['wall'], 1) for r in results['similarity']]}), "
          f"cpu {sim['cpu']:.1f} s, peak RSS {sim['peak'] / gib:.2f} GiB")
    print(f"quality figures : wall {qual['wall']:.1f} s (runs {[round(r['wall'], 1) for r in results['quality']]}), "
          f"cpu {qual['cpu']:.1f} s, peak RSS {max(r['peak'] for r in results['quality']) / gib:.2f} GiB")
    print(f"ratio quality / similarity (wall): {qual['wall'] / sim['wall']:.2f}×")
    print(f"candidates (union of top-5): {qual['candidates']}; stable share {qual['stable_share']:.2f}, "
          f"mean correlation {qual['mean_correlation']:.3f}, distinct {qual['distinct']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--activations", choices=("correlated", "iid"), default="correlated")
    parser.add_argument("--resamples", type=int, default=QualitySettings.resamples)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--step", choices=("similarity", "quality"), help=argparse.SUPPRESS)
    parser.add_argument("--best", help=argparse.SUPPRESS)
    for key, value in BRODEN.items():
        parser.add_argument(f"--{key}", type=int, default=None)
    args = parser.parse_args()
    sizes = QUICK if args.quick else BRODEN
    for key, value in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.child:
        run_child(args)
    else:
        run_parent(args)


if __name__ == "__main__":
    main()

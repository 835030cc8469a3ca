"""Compare similarity functions for labelled probes on the built-in demo (docs/labelled_scores.md).

    flock /work/bench.lock .venv/bin/python benchmarks/compare_label_scores.py [--threads 1]

Dissects the demo's two committed networks (dissect_core/demo_data: the small CNN trained
on Fashion-MNIST and the same network untrained) over its 1,000 probe images with the
labels concept source, once per scoring below, through the project's own pipeline
(activations computed once, then served from the cache), and prints one Markdown table
per network with, per layer:

* ``majority``: units whose label is the most frequent label among their top 100 images
  (the run's majority check, ``RunManifest.majority_check``), and the median share of a
  unit's top 100 images that carry the unit's own label;
* ``stable``: units whose label is kept in at least 80 % of 20 bootstrap resamples;
* ``held-out``: units whose label chosen on a random half of the images is the full run's;
* ``corr``: mean Pearson correlation, on the other half, between a unit's activation and
  its fit-half label's indicator (dissect_core.quality's simulation correlation);
* ``distinct``: distinct labels in the layer;
* for ``fc``, ``output``: units i labelled with class i, in the classifier's output order.

``stable``, ``held-out`` and ``corr`` are dissect_core.quality's figures, averaged over
``--seeds`` seeds of its resamples and split (a run computes them with seed 0), from
the run's cached activations; the rest come from the run folders the pipeline writes.
"""
from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from dissect_core.engine.activations import LayerActivations  # noqa: E402
from dissect_core.engine.cache import FeatureCache  # noqa: E402
from dissect_core.engine.concept_sources import labelled_probe  # noqa: E402
from dissect_core.engine.demo_build import dissect  # noqa: E402
from dissect_core.engine.label_quality import QualitySettings, layer_quality  # noqa: E402
from dissect_core.engine.probe_sets import image_folder  # noqa: E402
from dissect_core.runs import demo_runs as demo  # noqa: E402

SCORINGS = [
    ("soft_wpmi, λ = 1 (the method's)", "soft_wpmi", {}),
    ("soft_wpmi, λ = 0.5", "soft_wpmi", {"lam": 0.5}),
    ("soft_wpmi, λ = 0.25", "soft_wpmi", {"lam": 0.25}),
    ("soft_wpmi, λ = 0", "soft_wpmi", {"lam": 0.0}),
    ("precision_at_k, k = 100", "precision_at_k", {}),
    ("iou, k = 100", "iou", {}),
    ("auprc", "auprc", {}),
]


def cpu_name() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Model name")),
                "unknown CPU")


def commit() -> str:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()
    return result.stdout.strip() + (" (with uncommitted changes)" if dirty else "")


def seeded_quality(run, cache: FeatureCache, seeds: int) -> dict[str, tuple[float, float, float]]:
    """Per layer: stable units, held-out agreements and mean correlation, each averaged over
    ``seeds`` seeds of the quality figures' resamples and split."""
    labelled = labelled_probe(image_folder(demo.DEMO_DIR / demo.PROBE_DIR))
    concepts = list(labelled.concepts.concepts)
    figures = {}
    for layer in run.layers:
        entry = cache.load(LayerActivations, run.manifest.cache_keys.activations[layer])
        top = run.top_concepts[run.top_concepts["layer"] == layer].sort_values(["unit", "rank"])
        n_units = int(top["unit"].max()) + 1
        top_values = torch.tensor(top["score"].to_numpy(), dtype=torch.float32).view(n_units, -1)
        top_indices = torch.tensor([concepts.index(c) for c in top["concept"]]).view(n_units, -1)
        descriptions = run.units(layer)[["unit", "description", "similarity"]].reset_index(drop=True)
        stable, held, corr = [], [], []
        for seed in range(seeds):
            quality = layer_quality(layer, descriptions, top_values, top_indices, concepts,
                                    labelled.image_features[entry.image_indices], labelled.text_features,
                                    entry.pooled, run.manifest.similarity_fn, run.manifest.similarity_params,
                                    QualitySettings(seed=seed))
            units = quality.units
            stable.append(float((units["stability"] >= 0.8).sum()))
            held.append(float((units["heldout_label"] == units["description"]).sum()))
            corr.append(quality.mean_correlation)
        figures[layer] = (sum(stable) / seeds, sum(held) / seeds, sum(corr) / seeds)
    return figures


def layer_rows(run, cache: FeatureCache, seeds: int) -> dict[str, dict]:
    """Per layer, the figures the table shows."""
    rows = {}
    majority = {check.layer: check for check in run.manifest.majority_check}
    checks = {check["layer"]: check for check in run.manifest.output_check}
    quality = seeded_quality(run, cache, seeds)
    for layer in run.layers:
        check = majority[layer]
        own_share = torch.tensor(check.label_count, dtype=torch.float64) / check.top_k
        stable, held, corr = quality[layer]
        rows[layer] = {
            "units": check.units,
            "majority": f"{check.agreeing}/{check.units}",
            "label share": f"{float(own_share.median()):.2f}",
            "stable": f"{stable:.1f}/{check.units}",
            "held-out": f"{held:.1f}/{check.units}",
            "corr": f"{corr:.3f}",
            "distinct": str(run.descriptions[run.descriptions['layer'] == layer]['description'].nunique()),
            "output": (f"{round(checks[layer]['top1'] * checks[layer]['units'])}/{checks[layer]['units']}"
                       if layer in checks else ""),
        }
    return rows


COLUMNS = ["majority", "label share", "stable", "held-out", "corr", "distinct", "output"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--seeds", type=int, default=5, help="seeds of the quality figures to average over")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict[str, dict[str, dict]] = {}
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        dissect(demo.DEMO_DIR, Path(scratch))  # the activations, into the cache
        cache = FeatureCache(Path(scratch) / "saved_activations")
        for label, name, params in SCORINGS:
            started = time.perf_counter()
            runs = dissect(demo.DEMO_DIR, Path(scratch), similarity_fn=name, similarity_params=params)
            seconds[label] = time.perf_counter() - started
            for key, result in zip(demo.MODELS, runs):
                results.setdefault(key, {})[label] = layer_rows(result.run, cache, args.seeds)
    print(f"Figures from benchmarks/compare_label_scores.py, {date.today().isoformat()}, commit {commit()}, "
          f"{cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s); stable, held-out "
          f"and corr averaged over {args.seeds} seeds.\n")
    for key, by_scoring in results.items():
        print(f"### {demo.MODELS[key].run_name}\n")
        layers = list(next(iter(by_scoring.values())))
        print("| scoring | layer | " + " | ".join(COLUMNS) + " |")
        print("|---|---|" + "---|" * len(COLUMNS))
        for label, by_layer in by_scoring.items():
            for layer in layers:
                row = by_layer[layer]
                print(f"| {label} | {layer} ({row['units']}) | " + " | ".join(row[c] for c in COLUMNS) + " |")
        print()
    print("Seconds per scoring (both networks: similarity, quality figures, run folders; activations cached): "
          + ", ".join(f"{label} {value:.1f}" for label, value in seconds.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Figures of many runs at once (a sweep of models, or of one network's checkpoints): how
concepts change with depth and along the sweep. Torch-free; the sweep page draws these.

Runs are given in sweep order (the spec's order, checkpoints by training step). Depth is
relative, so networks of different lengths share one axis: a run's ``i``-th of ``n`` layers
sits at ``i / (n - 1)`` (0 for a single layer).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import pandas as pd

from dissect_core.runs.analysis import unique_concept_counts
from dissect_core.runs.categories import category_mix
from dissect_core.runs.quality_tables import STABLE_THRESHOLD
from dissect_core.runs.run import Run


@dataclass(frozen=True)
class SweepPoint:
    """One run of a sweep, at its place: ``position`` in sweep order, ``step`` the training
    step of a checkpoint where the sweep knows it."""

    position: int
    run: Run
    step: Optional[int] = None


def relative_depths(layers: Sequence[str]) -> dict[str, float]:
    last = max(len(layers) - 1, 1)
    return {layer: index / last for index, layer in enumerate(layers)}


def depth_profile(points: Sequence[SweepPoint]) -> pd.DataFrame:
    """Per run and layer: relative depth, units and distinct concepts (one row per layer)."""
    rows = []
    for point in points:
        depths = relative_depths(point.run.layers)
        for layer, frame in point.run.descriptions.groupby("layer", sort=False):
            rows.append({"position": point.position, "model": point.run.label, "step": point.step,
                         "layer": layer, "depth": depths[layer], "units": len(frame),
                         "distinct_concepts": frame["description"].nunique()})
    return pd.DataFrame(rows, columns=["position", "model", "step", "layer", "depth", "units", "distinct_concepts"])


def category_share_by_depth(points: Sequence[SweepPoint]) -> pd.DataFrame:
    """Per run, layer and concept category: the share of the layer's units, with its depth."""
    frames = []
    for point in points:
        mix = category_mix(point.run.descriptions)
        if mix.empty:
            continue
        depths = relative_depths(point.run.layers)
        frames.append(mix.assign(position=point.position, model=point.run.label, step=point.step,
                                 depth=mix["layer"].map(depths)))
    if not frames:
        return pd.DataFrame(columns=["position", "model", "step", "layer", "depth", "category", "units", "share"])
    return pd.concat(frames, ignore_index=True)[["position", "model", "step", "layer", "depth", "category",
                                                 "units", "share"]]


def concept_changes(points: Sequence[SweepPoint]) -> pd.DataFrame:
    """Along the sweep, the concepts that appear in a run (absent from the run before it) and
    those that vanish (present before, absent now), over all its layers, with unit counts."""
    rows = []
    previous: Optional[pd.Series] = None
    for point in points:
        counts = point.run.descriptions["description"].value_counts()
        if previous is not None:
            for concept in counts.index.difference(previous.index):
                rows.append({"position": point.position, "model": point.run.label, "step": point.step,
                             "change": "appears", "concept": concept, "units": int(counts[concept])})
            for concept in previous.index.difference(counts.index):
                rows.append({"position": point.position, "model": point.run.label, "step": point.step,
                             "change": "vanishes", "concept": concept, "units": int(previous[concept])})
        previous = counts
    return pd.DataFrame(rows, columns=["position", "model", "step", "change", "concept", "units"])


def sweep_table(points: Sequence[SweepPoint]) -> pd.DataFrame:
    """One row per run: its figures, for a sortable table. The stable-unit share and the
    output-layer check are empty where a run has no such figures (never zero in their place)."""
    rows = []
    for point in points:
        run = point.run
        stable = None
        if run.label_quality is not None and not run.label_quality.empty:
            stable = float((run.label_quality["stability"] >= STABLE_THRESHOLD).mean())
        checks = [check for check in (run.manifest.output_check if run.manifest is not None else [])
                  if isinstance(check, dict) and isinstance(check.get("top1"), (int, float))]
        top1 = float(checks[-1]["top1"]) if checks else None  # the classifier: the last layer checked
        rows.append({"position": point.position, "model": run.label, "step": point.step,
                     "method": run.method, "layers": len(run.layers), "units": len(run.descriptions),
                     "distinct_concepts": unique_concept_counts(run.descriptions).overall,
                     "stable_share": stable, "output_top1": top1})
    return pd.DataFrame(rows, columns=["position", "model", "step", "method", "layers", "units",
                                       "distinct_concepts", "stable_share", "output_top1"])

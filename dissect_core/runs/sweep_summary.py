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
        mix = category_mix(point.run.descriptions, own_classes=point.run.labelled)
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


def one_network(points: Sequence[SweepPoint]) -> bool:
    """Whether every run is of one network with the same layers (a training sweep): its units
    are then the same units from run to run, and can be followed along the sweep."""
    first = points[0].run if points else None
    return first is not None and all(point.run.target_model == first.target_model
                                     and point.run.layers == first.layers for point in points)


def unit_labels_along(points: Sequence[SweepPoint], layer: str) -> pd.DataFrame:
    """Each unit's label in every run of a training sweep (``one_network``), for one layer."""
    frames = [point.run.units(layer)[["unit", "description", "similarity"]].assign(
        position=point.position, model=point.run.label, step=point.step) for point in points]
    columns = ["position", "model", "step", "unit", "description", "similarity"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def sweep_table(points: Sequence[SweepPoint]) -> pd.DataFrame:
    """One row per run: its figures, for a sortable table. The stable-unit share, the
    output-layer check and the top-k majority check are empty where a run has no such
    figures (never zero in their place)."""
    rows = []
    for point in points:
        run = point.run
        rows.append({"position": point.position, "model": run.label, "step": point.step,
                     "method": run.method_name, "layers": len(run.layers), "units": len(run.descriptions),
                     "distinct_concepts": unique_concept_counts(run.descriptions).overall,
                     "stable_share": _stable_share(run), "output_top1": _output_top1(run),
                     "majority_share": _majority_share(run)})
    return pd.DataFrame(rows, columns=["position", "model", "step", "method", "layers", "units",
                                       "distinct_concepts", "stable_share", "output_top1", "majority_share"])


# The figures that say how far a run's labels hold, as figures_along names them.
FIGURES = {"stable_share": "stable under resampling", "output_top1": "output-layer check",
           "majority_share": "top-image majority"}


def figures_along(points: Sequence[SweepPoint]) -> pd.DataFrame:
    """The sweep_table's shares in long form (one row per run and figure present), to draw
    how far the labels hold along the sweep: over training, they rise as concepts form."""
    table = sweep_table(points)
    long = table.melt(id_vars=["position", "model", "step"], value_vars=list(FIGURES), var_name="figure",
                      value_name="share").dropna(subset=["share"])
    long["figure"] = long["figure"].map(FIGURES)
    return long.sort_values(["figure", "position"], ignore_index=True)


def _stable_share(run: Run) -> Optional[float]:
    if run.label_quality is None or run.label_quality.empty:
        return None
    return float((run.label_quality["stability"] >= STABLE_THRESHOLD).mean())


def _output_top1(run: Run) -> Optional[float]:
    checks = [check for check in (run.manifest.output_check if run.manifest is not None else [])
              if isinstance(check, dict) and isinstance(check.get("top1"), (int, float))]
    return float(checks[-1]["top1"]) if checks else None  # the classifier: the last layer checked


def _majority_share(run: Run) -> Optional[float]:
    """Labelled runs: the share of units whose label is the most frequent among their top images."""
    checks = run.manifest.majority_check if run.manifest is not None else []
    units = sum(check.units for check in checks)
    return sum(check.agreeing for check in checks) / units if units else None

"""Label-quality figures in the pages: the stable-units toggle, the per-layer table, the
output-layer check and why a run has no figures (never zeros in their place)."""
from __future__ import annotations

from typing import Sequence

import pandas as pd
import streamlit as st

from dissect_app.pickers import persistent
from dissect_app.text import md
from dissect_core.runs import analysis
from dissect_core.runs.quality_tables import STABLE_THRESHOLD
from dissect_core.runs.run import Run

STABLE_KEY = "stable_only"


def stable_toggle(runs: Sequence[Run]) -> bool:
    """The shared "leave out unstable units" toggle; notes the runs it cannot filter."""
    stable_only = persistent(
        st.toggle, f"Leave out unstable units (stability below {STABLE_THRESHOLD:.0%})", key=STABLE_KEY,
        default=False,
        help="Stability: the share of bootstrap resamples of the probe images that give a unit the same label.",
    )
    if stable_only:
        for run in runs:
            reason = run.quality_absent_reason()
            if reason:
                st.caption(f"{md(run.label)}: all units kept, no stability figures ({md(reason)})")
    return stable_only


def descriptions_for(run: Run, stable_only: bool) -> pd.DataFrame:
    """The run's descriptions, only its stable units when asked and known."""
    if not stable_only or run.label_quality is None:
        return run.descriptions
    return analysis.only_stable(run.descriptions, run.label_quality, STABLE_THRESHOLD)


def count_moves(runs: Sequence[Run], layers: Sequence[str]) -> pd.DataFrame:
    """Per model and layer: units and distinct concepts with all units and with stable ones only."""
    rows = []
    for run in runs:
        if run.label_quality is None:
            continue
        stable = analysis.only_stable(run.descriptions, run.label_quality, STABLE_THRESHOLD)
        for layer in layers:
            every = run.descriptions[run.descriptions["layer"] == layer]
            kept = stable[stable["layer"] == layer]
            if not every.empty:
                rows.append((run.label, layer, len(every), len(kept), every["description"].nunique(),
                             kept["description"].nunique()))
    return pd.DataFrame(rows, columns=["model", "layer", "units", "stable_units", "distinct_concepts",
                                       "distinct_stable"])


def quality_table(runs: Sequence[Run], layers: Sequence[str]) -> pd.DataFrame:
    """Per model and layer: stable share, mean held-out correlation, distinct concepts with interval."""
    rows = []
    for run in runs:
        if run.layer_quality is None:
            continue
        for row in run.layer_quality[run.layer_quality["layer"].isin(list(layers))].itertuples():
            rows.append((run.label, row.layer, row.units, row.stable_share, row.mean_correlation,
                         f"{row.distinct} [{row.distinct_low}–{row.distinct_high}]"))
    return pd.DataFrame(rows, columns=["model", "layer", "units", "stable_share", "mean_correlation",
                                       "distinct_concepts"])


def output_checks(runs: Sequence[Run]) -> pd.DataFrame:
    """CLIP-Dissect's output-layer check for runs that dissected a classifier with its class names."""
    rows = [(run.label, check.get("layer"), check.get("units"), check.get("top1"), check.get("top5"))
            for run in runs for check in ((run.manifest.output_check if run.manifest else [])) if isinstance(check, dict)]
    return pd.DataFrame(rows, columns=["model", "layer", "units", "top1", "top5"])


def absent_notes(runs: Sequence[Run]) -> None:
    """One line per reason, naming the runs without quality figures for it (with eight
    imported CSVs, eight copies of one sentence buried the page)."""
    by_reason: dict[str, list[str]] = {}
    for run in runs:
        reason = run.quality_absent_reason()
        if reason:
            by_reason.setdefault(reason, []).append(run.label)
    for reason, labels in by_reason.items():
        st.caption(f"{'; '.join(md(label) for label in labels)}: no label-quality figures: {md(reason)}")

"""The runs a sweep page shows, and opening two of them in Model differences."""
from __future__ import annotations

import streamlit as st

from dissect_app.frame import Frame
from dissect_app.navigation import MODEL_DIFFERENCES_PAGE
from dissect_app.pickers import MODELS_KEY
from dissect_core.runs.sweep_summary import SweepPoint


def sweep_points(frame: Frame) -> list[SweepPoint]:
    """Every loaded run, in the order its sources give them (a sweep's folders in sweep order)."""
    return [SweepPoint(position, run) for position, run in enumerate(frame.runs.values())]


def open_differences(label_a: str, label_b: str) -> None:
    """Pick the two runs (sidebar, A and B) and go to Model differences."""
    for key, value in ((MODELS_KEY, [label_a, label_b]), ("model_a", label_a), ("model_b", label_b)):
        st.session_state[f"_{key}"] = value  # the shadow keys persistent() seeds widgets from
    st.switch_page(MODEL_DIFFERENCES_PAGE)

"""The runs a sweep page shows, and opening two of them in Model differences."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from dissect_app.frame import Frame
from dissect_app.navigation import MODEL_DIFFERENCES_PAGE
from dissect_app.pickers import MODELS_KEY
from dissect_core.common.errors import DissectError
from dissect_core.runs.demo_runs import DEMO_DIR, SWEEP_DIR
from dissect_core.runs.sweep_index import SWEEP_FILE, read_sweep_entries
from dissect_core.runs.sweep_summary import SweepPoint

ALL_RUNS = "every loaded run, in the order loaded"
DEMO_SWEEP = "the built-in demo's training"


def sweep_points(frame: Frame) -> list[SweepPoint]:
    """The runs of a sweep (``dissect sweep``'s ``sweep.json``: spec order, checkpoints by
    training step), picked in the sidebar when several are loaded; without one, every loaded run."""
    by_folder: dict[Path, dict[str, str]] = {}  # sweep folder -> {run folder name: label}
    for label, run in frame.runs.items():
        if run.path is not None and (run.path.parent / SWEEP_FILE).is_file():
            by_folder.setdefault(run.path.parent, {})[run.path.name] = label
    choices = {str(folder): folder for folder in by_folder}
    demo = (DEMO_DIR / SWEEP_DIR).resolve()

    def shown(option: str) -> str:
        if option not in choices:
            return option
        if choices[option].resolve() == demo:  # inside the installed package: its path says nothing
            return DEMO_SWEEP
        # The folder's name first, then where it is: the sidebar's box cuts a long path at
        # its end, which is where the sweep's own name was.
        return f"{choices[option].name} · {choices[option].parent}"

    picked = frame.controls.selectbox("Sweep", [*choices, ALL_RUNS], key="sweep_folder",
                                      format_func=shown) if choices else ALL_RUNS
    if picked == ALL_RUNS:
        return [SweepPoint(position, run) for position, run in enumerate(frame.runs.values())]
    folder = choices[picked]
    try:
        entries = read_sweep_entries(folder)
    except DissectError as error:
        st.error(str(error), icon=":material/error:")
        return []
    labels = by_folder[folder]
    return [SweepPoint(entry.position, frame.runs[labels[entry.folder]], entry.step)
            for entry in entries if entry.folder in labels]


def open_differences(label_a: str, label_b: str) -> None:
    """Pick the two runs (sidebar, A and B) and go to Model differences."""
    for key, value in ((MODELS_KEY, [label_a, label_b]), ("model_a", label_a), ("model_b", label_b)):
        st.session_state[f"_{key}"] = value  # the shadow keys persistent() seeds widgets from
    st.switch_page(MODEL_DIFFERENCES_PAGE)

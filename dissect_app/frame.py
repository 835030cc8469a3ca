"""The page frame: page config, run sources and the model picker."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from dissect_app.demo_banner import demo_banner, demo_runs_to_show, describes_the_demo, offer_demo
from dissect_app.download_buttons import share_section
from dissect_app.hosted_mode import hosted
from dissect_app.navigation import RUN_PAGE
from dissect_app.naming import MAX_NAME, clean_name, key_is_kept, rename, run_key, saved_names
from dissect_app.pickers import MODELS_KEY, default_selection, persistent
from dissect_app.sources import (
    PENDING_SELECT_KEY, RESULTS_ENV, UPLOADED_RUNS_KEY, load_folder_runs, notes_section, results_dir,
    sources_section, store_uploads,
)
from dissect_app.text import code, md
from dissect_core.runs.run import Run, make_labels_unique

APP_NAME = "CLIP-Dissect explorer"
LABELS_KEY = "run_labels"  # {run key: its label in the last script run}
# Widgets whose values are run labels (the sidebar's model picker, Model differences' A
# and B, the Unit explorer's model): they follow a run when its label changes.
RUN_PICKER_KEYS = (MODELS_KEY, "model_a", "model_b", "unit_model")


@dataclass
class Frame:
    """What every page gets from ``page_frame``."""

    runs: dict[str, Run]           # every loaded run, by its unique label, in source order
    selected: list[Run]            # the model picker's choice, in picked order
    controls: DeltaGenerator       # sidebar slot below the model picker for page controls

    @property
    def frames(self) -> dict[str, pd.DataFrame]:
        """The selected runs' descriptions by label (input of ``analysis.summarize_models``)."""
        return {run.label: run.descriptions for run in self.selected}


def page_frame(title: str) -> Frame:
    """Set up a page: config, run sources and the model picker (``st.navigation`` in the
    entry script draws the sidebar navigation above them).

    Draws ``title`` as the page title. The model picker (key ``"models"``) lists every
    loaded run; its choice persists across pages.
    """
    st.set_page_config(page_title=f"{title} · {APP_NAME}", layout="wide")
    picker_slot = st.sidebar.container()
    controls = st.sidebar.container()
    errors = st.sidebar.container()

    folder_runs, problems = load_folder_runs()
    added = store_uploads(sources_section(problems, errors), errors)
    store: dict[str, Run] = st.session_state.get(UPLOADED_RUNS_KEY, {})
    # Copies: labels are made unique on them without touching the session's stored runs.
    uploaded = {digest: dataclasses.replace(run) for digest, run in store.items()}
    # The demo's own re-descriptions (Run page) are shown beside it; anything else replaces it.
    described = [run for run in folder_runs if describes_the_demo(run)]
    demo = demo_runs_to_show(other_runs_loaded=len(described) < len(folder_runs) or bool(uploaded))
    all_runs = folder_runs + list(uploaded.values()) + demo
    # Every run has a key, the demo's included: renaming looks its run up by it.
    keys = ([run_key(run) for run in folder_runs] + [run_key(run, digest) for digest, run in uploaded.items()]
            + [run_key(run, demo=True) for run in demo])
    names = saved_names()
    for run, key in zip(all_runs, keys):
        run.label = names.get(key, run.label)
    make_labels_unique(all_runs)
    _follow_new_labels(dict(zip(keys, (run.label for run in all_runs))))
    notes_section(all_runs)
    runs = {run.label: run for run in all_runs}

    labels = list(runs)
    new_labels = [uploaded[d].label for d in added]
    pending = set(st.session_state.pop(PENDING_SELECT_KEY, []))
    new_labels += [r.label for r in folder_runs if r.path and str(r.path.resolve()) in pending]
    default = default_selection(all_runs)
    if new_labels:  # freshly uploaded or computed runs join the current choice
        current = st.session_state.get(f"_{MODELS_KEY}", default)
        st.session_state[f"_{MODELS_KEY}"] = list(dict.fromkeys(current + new_labels))
    chosen = persistent(
        picker_slot.multiselect, "Models", key=MODELS_KEY, default=default,
        sanitize=lambda value: [lbl for lbl in value if lbl in runs],
        options=labels, placeholder="Pick models to show",
        help="Runs from --results folders, the result folder and uploaded result files. "
             "Labels made by NetDissect or MILAN say so in the name.",
    )
    selected = [runs[label] for label in chosen]
    _rename_section(runs, dict(zip((run.label for run in all_runs), keys)), errors)
    if not hosted():  # building a bundle draws images with the model: not for a hosted demo
        share_section(selected)
    st.title(title)
    if demo:
        demo_banner(len(described))
    return Frame(runs=runs, selected=selected, controls=controls)


def _rename_section(runs: dict[str, Run], keys: dict[str, str], errors: DeltaGenerator) -> None:
    """Sidebar form to rename a loaded run; the picker keeps the run picked under its new name."""
    if not runs:
        return
    with st.sidebar.expander("Rename a model", icon=":material/edit:"):
        with st.form("rename_form", border=False):
            old = st.selectbox("Model", list(runs), key="rename_model")
            new = st.text_input("New name", key="rename_name", max_chars=MAX_NAME)
            submitted = st.form_submit_button("Rename")
    if not submitted or old is None:
        return
    name = clean_name(new)
    if name is None:
        errors.error(f"A name needs 1 to {MAX_NAME} characters, without control characters.", icon=":material/error:")
        return
    if name != old and name in runs:
        errors.error(f"Another model is already called {md(name)}.", icon=":material/error:")
        return
    key = keys[old]
    rename(key, name, persist=key_is_kept(key))
    _relabel_pickers({old: name})
    st.session_state[LABELS_KEY][key] = name
    st.rerun()


def _relabel_pickers(moved: dict[str, str]) -> None:
    """Keep runs picked when their labels change (``moved``: old label → new label)."""
    for key in RUN_PICKER_KEYS:
        shadow = f"_{key}"
        value = st.session_state.get(shadow)
        if isinstance(value, list):
            st.session_state[shadow] = [moved.get(label, label) for label in value]
        elif isinstance(value, str):
            st.session_state[shadow] = moved.get(value, value)


def _follow_new_labels(labels: dict[str, str]) -> None:
    """Carry the pickers over when a run's label changed since the last script run: a new
    run of the same name made both names longer (``make_labels_unique``)."""
    previous: dict[str, str] = st.session_state.get(LABELS_KEY, {})
    moved = {old: labels[key] for key, old in previous.items() if key in labels and labels[key] != old}
    st.session_state[LABELS_KEY] = labels
    if moved:
        _relabel_pickers(moved)


def require_models(frame: Frame, minimum: int) -> list[Run]:
    """The selected runs, or stop the page with a hint when fewer than ``minimum`` are picked."""
    if len(frame.selected) >= minimum:
        return frame.selected
    if not frame.runs:
        how_to_get_results()
    elif minimum == 1:
        st.info("Pick a model in the sidebar.", icon=":material/arrow_back:")
    else:
        st.info(f"Pick at least {minimum} models in the sidebar to compare them.", icon=":material/arrow_back:")
    st.stop()


def how_to_get_results() -> None:
    """Short instructions for loading results, shown while no runs are loaded."""
    st.info("No CLIP-Dissect results are loaded yet.", icon=":material/info:")
    if hosted():
        st.markdown(
            "**Upload** one or more `descriptions.csv` files (columns `layer,unit,description,similarity`, "
            "as CLIP-Dissect writes them), or a results bundle (.zip) exported from this app, under "
            "*Add results* in the sidebar. They stay in your browser session."
        )
        offer_demo()
        return
    st.markdown(
        "**Three ways to get results in:**\n"
        "1. **Upload** result files under *Add results* in the sidebar: CLIP-Dissect's `descriptions.csv` "
        "(`layer,unit,description,similarity`), NetDissect-Lite's per-layer `MODEL_LAYER.csv` files "
        "(`unit,category,label,score,…`; all of a model's layers at once) or MILAN's "
        "`layer,unit,description`.\n"
        "2. **Point the app at a folder**: `dissect app --results DIR` "
        "loads every such file under `DIR`, at any depth; a run's `args.txt` names it.\n"
        f"3. **Compute a run** on the *Run CLIP-Dissect* page; runs are saved in {code(results_dir())} "
        f"(set `{RESULTS_ENV}` to change it) and appear here automatically."
    )
    st.page_link(RUN_PAGE, label="Run CLIP-Dissect", icon=":material/play_arrow:")
    offer_demo()

"""The built-in demo as the app's default: shown on every page while nothing else is loaded.

The demo (``dissect_core.runs.demo_runs``) is two precomputed runs with stored thumbnails and
activation maps, and the training sweep between them (one run per checkpoint, which the Sweep
page shows), so showing it reads a few small files and imports no torch. A banner says it is
a demo; one click puts it away for the session, and the "no results yet" hints offer it back.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from dissect_app.pickers import MODELS_KEY
from dissect_core.common.errors import DissectError
from dissect_core.runs.run import Run
from dissect_core.runs.run_folders import load_run
from dissect_core.runs.unit_evidence import FOLDER_LABELS

DEMO_HIDDEN_KEY = "demo_hidden"


@st.cache_data(show_spinner=False)
def cached_demo() -> tuple[list[Run], dict]:
    """The demo's runs (the two networks, then the training sweep's) and demo.json, read once
    per server (the files never change)."""
    from dissect_core.runs.demo_runs import demo_info, demo_runs, demo_sweep_runs

    return [load_run(folder) for folder in demo_runs() + demo_sweep_runs()], demo_info()


def describes_the_demo(run: Run) -> bool:
    """Whether ``run`` is one of the demo's networks described with a list of labels and formulas
    (the Run page's "New concepts"): such runs are shown beside the demo, not instead of it."""
    from dissect_core.runs.demo_runs import DEMO_DIR, WEIGHTS_DIR

    manifest = run.manifest
    if manifest is None or not run.labelled or manifest.concept_set.source == FOLDER_LABELS:
        return False
    checkpoint = manifest.config.get("target_checkpoint")
    return isinstance(checkpoint, str) and Path(checkpoint).parent.resolve() == (DEMO_DIR / WEIGHTS_DIR).resolve()


def demo_runs_to_show(other_runs_loaded: bool) -> list[Run]:
    """The demo's runs when nothing else is loaded (but its own re-descriptions, ``describes_the_demo``)
    and the visitor has not put it away."""
    if other_runs_loaded or st.session_state.get(DEMO_HIDDEN_KEY):
        return []
    try:
        runs, _ = cached_demo()
    except DissectError:  # an installation without the demo files simply has no demo
        return []
    return runs


def _set_hidden(hidden: bool) -> None:
    st.session_state[DEMO_HIDDEN_KEY] = hidden
    if not hidden:  # back with its runs: the picker's default pair again (while away it held none)
        st.session_state.pop(f"_{MODELS_KEY}", None)


def demo_banner(described: int = 0) -> None:
    """Say that the pages show the demo, what it is, and offer to put it away; ``described``
    runs of the demo's networks with formulas are shown beside it."""
    _, info = cached_demo()
    figures = info.get("figures", {})
    accuracy = figures.get("test_accuracy", {})
    lead = ("Nothing else is loaded, so every page shows the built-in demo" if not described else
            f"Every page shows the built-in demo, beside the {described} run{'s' if described > 1 else ''} you "
            "described it with on the Run page")
    st.info(
        f"**Demo.** {lead}: a small CNN "
        f"that this project trained on Fashion-MNIST (test accuracy {accuracy.get('trained', float('nan')):.1%}) "
        f"against the same network untrained ({accuracy.get('untrained', float('nan')):.1%}), dissected over "
        f"{info.get('probe_images', '?')} labelled test images with their ten class names as concepts "
        f"(the labelled-probe concept source). The *Sweep* page follows {len(info.get('checkpoint_steps', []))} "
        "checkpoints of its training, from the initial weights to the end. "
        "Load your own results under *Add results* in the sidebar.",
        icon=":material/school:",
    )
    # Under the banner at its own width: in a narrow column beside it the label was cut ("Put the demo …").
    st.button("Put the demo away", key="demo_hide", on_click=_set_hidden, args=(True,), icon=":material/close:")


def offer_demo() -> None:
    """A button that brings the demo back (for the "no results yet" hints)."""
    if st.session_state.get(DEMO_HIDDEN_KEY):
        st.button("Show the built-in demo", key="demo_show", on_click=_set_hidden, args=(False,),
                  icon=":material/school:")

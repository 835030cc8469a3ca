"""Running dissections from the app: progress bars and the status box around ``describe``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from app_ui.sources import select_after_rerun
from dissect_core.progress import WARNING_STAGE
from app_ui.text import md

CACHE_ENV = "DISSECT_CACHE_DIR"
DEFAULT_CACHE_DIR = "saved_activations"


def cache_dir() -> Path:
    """Where computed stages are cached (``$DISSECT_CACHE_DIR`` or ``saved_activations``)."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR)


class StreamlitProgress:
    """A dissect_core progress callback that draws one progress bar per stage."""

    def __init__(self, container: DeltaGenerator):
        self.container = container
        self.bars: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage.startswith(WARNING_STAGE):
            return  # warnings are shown with the run's summary when it ends
        fraction = min(done / total, 1.0) if total else 1.0
        text = f"{stage}: {done:,} / {total:,}"
        if stage not in self.bars:
            self.bars[stage] = self.container.progress(fraction, text=md(text))
        else:
            self.bars[stage].progress(fraction, text=md(text))


def run_dissection(config: Any, title: str, widgets: Optional[dict[str, str]] = None) -> Optional[Any]:
    """Run ``dissect_core.pipeline.describe`` inside a status box with per-stage progress.

    Returns the result, or ``None`` after showing the error (nothing computed is lost:
    finished stages stay in the cache), its settings named by ``widgets`` (field → label).
    """
    from dissect_core.errors import DissectError, in_words
    from dissect_core.pipeline import describe

    with st.status(md(title), expanded=True) as status:
        try:
            result = describe(config, StreamlitProgress(st.container()))
        except DissectError as exc:
            status.update(label=md(f"{title}: failed"), state="error")
            st.error(md(in_words(exc, widgets or {})), icon=":material/error:")
            return None
        for line in result.summary():
            if line.warning:
                st.warning(md(line.text))
            else:
                st.text(line.text)
        status.update(label=md(f"{title}: done in {sum(result.timings.values()):.1f} s"), state="complete")
    select_after_rerun(result.run_dir)
    return result

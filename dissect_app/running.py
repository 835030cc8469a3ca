"""Running dissections from the app: progress bars and the status box around ``describe``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from dissect_app.sources import results_dir, select_after_rerun
from dissect_app.text import md, message
from dissect_core.runs.demo_runs import is_demo_run
from dissect_core.runs.run import Run
from dissect_core.runs.unit_images import has_thumbnails

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
        fraction = min(done / total, 1.0) if total else 1.0
        text = f"{stage}: {done:,} / {total:,}"
        if stage not in self.bars:
            self.bars[stage] = self.container.progress(fraction, text=md(text))
        else:
            self.bars[stage].progress(fraction, text=md(text))


def run_dissection(configs: Sequence[Any], title: str, widgets: Optional[dict[str, str]] = None
                   ) -> Optional[list[Any]]:
    """Run ``dissect_core.engine.pipeline.describe_together`` (several models over one probe
    pass) inside a status box with per-stage progress.

    Returns the results, or ``None`` after showing the error (nothing computed is lost:
    finished stages stay in the cache), its settings named by ``widgets`` (field → label).
    """
    from dissect_core.common.errors import DissectError, in_words, name_settings
    from dissect_core.engine.pipeline import describe_together

    status = st.status(md(title), expanded=True)
    try:
        with status:
            results = describe_together(configs, StreamlitProgress(st.container()))
    except DissectError as exc:
        status.update(label=md(f"{title}: failed (the reason is below)"), state="error", expanded=True)
        # Outside the status box, so the reason shows without a click.
        st.error(message(in_words(exc, widgets or {})), icon=":material/error:")
        return None
    with status:
        for result in results:
            if len(results) > 1:
                st.markdown(f"**{md(result.run.target_model)}**")
            for line in result.summary():
                if line.kind == "warning":
                    st.warning(md(line.text))
                elif line.kind == "skipped":  # an optional stage left out: why, and what to do
                    st.info(md(name_settings(line.text, widgets or {})), icon=":material/skip_next:")
                else:
                    st.text(line.text)
        seconds = max(sum(result.timings.values()) for result in results)
        status.update(label=md(f"{title}: done in {seconds:.1f} s"), state="complete")
    for result in results:
        select_after_rerun(result.run_dir)
    return results


def redescribe_blocker(run: Run) -> Optional[str]:
    """Why ``run`` cannot get new concepts on this machine, in plain words, or None when it can.

    New concepts reuse the run's cached activations, or recompute them from its
    probe images and weights, so both must be here. Runs imported from bundles or
    CSVs are read-only: their manifests name another machine's folders. The demo is
    a bundled run too, but computed by the CLI: it gets its own reason.
    """
    if run.from_reference_tool or run.path is None:
        return (f"it was read from a {run.method} result file, which holds its labels only: there are no "
                "activations to describe again. Dissect the model on the New dissection tab instead.")
    if is_demo_run(run.path):
        return ("it is the built-in demo: computed by this project's pipeline and shipped read-only with the "
                "app, and its concepts are its probe images' labels (the Fashion-MNIST classes), not a concept "
                "list. `python -m dissect_core demo OUT` dissects the demo networks again on this machine, "
                "into the folder OUT.")
    imported = results_dir().resolve() / "imported"
    if has_thumbnails(run.path) or run.path.resolve().is_relative_to(imported):
        return ("it was imported from a results bundle, which carries its labels and images but not its "
                "activations: bundled runs are read-only. Re-describe it where it was computed.")
    if run.labelled:
        return ("its concepts are its probe images' labels, so there is no concept list to replace. "
                "For concept lists, dissect the model with CLIP concepts on the New dissection tab.")
    sources = run.sources
    for root in _probe_roots(sources.probe_spec or {}):
        if not Path(root).is_dir():
            return "its probe images are not on this machine (the folder it was computed on is gone)."
    checkpoint = sources.target_checkpoint
    if checkpoint and not Path(checkpoint).is_file():
        return "its weights file is not on this machine (the file it was computed with is gone)."
    return None


def _probe_roots(spec: dict) -> list[str]:
    """The folders a probe spec reads (``probe_sets.open_probe_spec``'s kinds)."""
    roots = [spec[key] for key in ("root", "data_dir") if isinstance(spec.get(key), str)]
    for part in spec.get("parts") or []:
        if isinstance(part, dict):
            roots += _probe_roots(part)
    return roots

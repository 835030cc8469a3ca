"""Running dissections from the app: progress bars and the status box around ``describe``."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from dissect_app.sources import results_dir, select_after_rerun
from dissect_app.text import md, message
from dissect_core.common.errors import DissectError
from dissect_core.runs.demo_runs import demo_run_inputs, is_demo_run
from dissect_core.runs.run import Run
from dissect_core.runs.unit_images import has_thumbnails

CACHE_ENV = "DISSECT_CACHE_DIR"
DEFAULT_CACHE_DIR = "saved_activations"

# The demo's examples (Fashion-MNIST's footwear; shirts that are not T-shirts), as in docs/method.md.
DEMO_FORMULAS = ("Sandal OR Sneaker OR Ankle boot", "Shirt AND NOT T-shirt or top")
DEMO_FORMULAS_LABELS = ("Sandal", "Sneaker", "Ankle boot", "Shirt", "T-shirt or top")
_OPERATORS = {"AND", "OR", "NOT"}
# A concept list typed on the Run page (ConceptSet.source), and how much of its first line names its runs.
TYPED_SOURCE = "typed in the app"
MAX_FIRST_LINE = 40


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
    from dissect_core.common.errors import in_words, name_settings
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
    CSVs are read-only: their manifests name another machine's folders. The built-in
    demo is a bundle too, but its weights and probe images ship with the package, so it
    is recomputed from those (``demo_runs.demo_run_inputs``). A labelled run takes a list
    of labels and formulas over them.
    """
    if run.from_reference_tool or run.path is None:
        return (f"it was read from a {run.method} result file, which holds its labels only: there are no "
                "activations to describe again. Dissect the model on the New dissection tab instead.")
    if is_demo_run(run.path):
        try:
            demo_run_inputs(run.path)
        except DissectError as exc:
            return f"the built-in demo's files are incomplete in this installation: {exc}"
        return None
    imported = results_dir().resolve() / "imported"
    if run.imported or has_thumbnails(run.path) or run.path.resolve().is_relative_to(imported):
        return ("it was imported from a results bundle, which carries its labels and images but not its "
                "activations: bundled runs are read-only. Re-describe it where it was computed.")
    sources = run.sources
    for root in _probe_roots(sources.probe_spec or {}):
        if not Path(root).is_dir():
            return "its probe images are not on this machine (the folder it was computed on is gone)."
    checkpoint = sources.target_checkpoint
    if checkpoint and not Path(checkpoint).is_file():
        return "its weights file is not on this machine (the file it was computed with is gone)."
    labels_csv = run.manifest.config.get("probe_labels")
    if run.labelled and isinstance(labels_csv, str) and not Path(labels_csv).is_file():
        return "its labels file is not on this machine (the CSV it was computed with is gone)."
    return None


def redescribe_config(run: Run, concepts: Any) -> Any:
    """The configuration that describes ``run`` (``redescribe_blocker`` None) with ``concepts``
    (a ConceptSet), written to the result folder. The built-in demo's stages are cached in the
    app's cache folder; other runs reuse the cache they were computed with.

    A list typed on the Run page (source ``TYPED_SOURCE``) has no file name to tell its runs
    apart, so the new run is named after the original and the list's first line."""
    from dissect_core.engine.pipeline import config_from_run

    overrides = {"result_dir": str(results_dir())}
    if is_demo_run(run.path):  # its manifest names the demo build's folders
        overrides["activation_dir"] = str(cache_dir())
    if concepts is not None and concepts.source == TYPED_SOURCE and concepts.concepts:
        first = concepts.concepts[0]
        first = first if len(first) <= MAX_FIRST_LINE else first[:MAX_FIRST_LINE - 1] + "…"
        more = ", …" if len(concepts) > 1 else ""
        base = (run.manifest.config.get("run_name") or run.label) if run.manifest else run.label
        overrides["run_name"] = f"{base} · {concepts.name} ({first}{more})"
    return config_from_run(run, concept_set=concepts, **overrides)


@st.cache_data(show_spinner="Reading the run's labels…", max_entries=16)
def run_label_names(run_key: str, _run: Run) -> tuple[str, ...]:
    """The labels of a labelled run's probe images (what its formulas may name), read once per
    ``run_key`` (its folder and creation time)."""
    from dissect_core.engine.pipeline import probe_label_names

    return probe_label_names(redescribe_config(_run, None))


def example_formulas(labels: Sequence[str]) -> list[str]:
    """Two formulas over ``labels`` to show as examples: the demo's own for its classes."""
    if set(DEMO_FORMULAS_LABELS) <= set(labels):
        return list(DEMO_FORMULAS)
    names = [_quoted(label) for label in labels[:3]]
    if len(names) < 2:
        return [f"NOT {names[0]}"] if names else []
    return [" OR ".join(names), f"NOT ({names[0]} OR {names[1]})"]


def _quoted(label: str) -> str:
    """``label`` as a formula writes it: in double quotes when it holds an operator word,
    a parenthesis or a quote (``label_formulas``)."""
    if _OPERATORS & set(label.split()) or any(char in label for char in '()"'):
        return json.dumps(label, ensure_ascii=False)
    return label


def _probe_roots(spec: dict) -> list[str]:
    """The folders a probe spec reads (``probe_sets.open_probe_spec``'s kinds)."""
    roots = [spec[key] for key in ("root", "data_dir") if isinstance(spec.get(key), str)]
    for part in spec.get("parts") or []:
        if isinstance(part, dict):
            roots += _probe_roots(part)
    return roots

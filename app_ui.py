"""The one shared UI module of the app: page frame, run sources, pickers, downloads.

Every page starts with ``frame = page_frame("Title")``. The frame sets the page
config, draws the sidebar (navigation, model picker, upload of CSVs) and returns
a ``Frame`` with all loaded runs and the selected ones. Pages then add their own
controls (``pick_layers``, ``persistent``) and draw with ``show_table`` /
``show_chart``.

Runs come from three sources, merged in this order:

* every ``descriptions.csv`` under each ``--results DIR`` given after ``--`` on
  the ``streamlit run`` command line;
* runs computed by this project in the result folder (``results/``, or the
  ``DISSECT_RESULTS_DIR`` environment variable);
* CSVs uploaded in the sidebar, kept in ``st.session_state`` for the session.

Security: labels, layer and concept names come from users' files. They are only
shown as text (dataframes, chart data, widget options, ``st.text``) or, in
markdown-rendering elements, through ``md()``; ``unsafe_allow_html`` is never used.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional
from urllib.parse import urlencode

import altair as alt
import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from dissect_core.charts import chart_to_png, chart_to_svg
from dissect_core.errors import InvalidInputError
from dissect_core.results import (
    ARGS_FILE, DESCRIPTIONS_FILE, MANIFEST_FILE, TOP_CONCEPTS_FILE, TOP_IMAGES_FILE,
    UNIT_STATS_FILE, Run, find_runs, make_labels_unique, read_descriptions,
)

APP_NAME = "CLIP-Dissect explorer"
RESULTS_ENV = "DISSECT_RESULTS_DIR"
DEFAULT_RESULTS_DIR = "results"

HOME_PAGE = "streamlit_app.py"
UNIT_EXPLORER_PAGE = "pages/4_Unit_explorer.py"
# URL path of the Unit explorer: Streamlit's legacy pages/ router drops the "4_" prefix.
UNIT_EXPLORER_URL = "Unit_explorer"
PAGES = (
    (HOME_PAGE, "Overview", ":material/bar_chart:"),
    ("pages/2_Shared_concepts.py", "Shared concepts", ":material/stacked_bar_chart:"),
    ("pages/3_Model_differences.py", "Model differences", ":material/compare_arrows:"),
    (UNIT_EXPLORER_PAGE, "Unit explorer", ":material/grid_view:"),
    ("pages/5_Run.py", "Run CLIP-Dissect", ":material/play_arrow:"),
)

# Session-state keys shared by all pages (widget keys; each has a "_"-prefixed shadow).
MODELS_KEY = "models"
LAYERS_KEY = "layers"
LAYERS_SEEN_KEY = "layers_seen"         # every layer the layer picker has offered so far
UPLOAD_KEY = "upload_files"
UPLOADED_RUNS_KEY = "uploaded_runs"      # {sha256 of the file: Run}
BUNDLE_UPLOAD_KEY = "bundle_file"
IMPORTED_BUNDLES_KEY = "imported_bundles"  # sha256 of each bundle imported in this session
BUNDLE_KEY = "bundle_zip"                  # the last bundle built for download
PENDING_SELECT_KEY = "pending_select"    # run folders to add to the model picker on the next run

# CommonMark lets a backslash escape any ASCII punctuation; escaping all of it keeps
# emphasis, links, images, HTML tags, LaTeX ($) and Streamlit's :color[...] directives inert.
_MARKDOWN_SPECIAL = re.compile(r"([!-/:-@\[-`{-~])")


def md(text: object) -> str:
    """``text`` escaped so that markdown-rendering elements show it literally."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text))


def safe_filename(text: str) -> str:
    """A file-name stem built from ``text`` (letters, digits, ``-_.`` only)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "download"


# --------------------------------------------------------------------------- persistent widgets

def _remember(key: str) -> None:
    st.session_state[f"_{key}"] = st.session_state[key]


def persistent(
    widget: Callable[..., Any],
    label: str,
    *,
    key: str,
    default: Any,
    sanitize: Callable[[Any], Any] = lambda value: value,
    **kwargs: Any,
) -> Any:
    """Create ``widget`` whose value survives visits to pages that lack it.

    Streamlit drops a widget's state when a page without it runs, so the value is
    kept in the shadow key ``_<key>`` and re-seeded before the widget is drawn.
    ``sanitize`` maps a remembered value that no longer fits the options (a run was
    removed, say) to a valid one. Do not pass ``index``/``value``/``default`` to the
    widget: the value comes from session state.

    Example: ``persistent(st.selectbox, "Layer", key="layer", default=layers[0],
    sanitize=lambda v: v if v in layers else layers[0], options=layers)``.
    """
    shadow = f"_{key}"
    value = sanitize(st.session_state.get(shadow, default))
    st.session_state[shadow] = value
    st.session_state[key] = value
    return widget(label, key=key, on_change=_remember, args=(key,), **kwargs)


# --------------------------------------------------------------------------- run sources

def cli_results_dirs(argv: Optional[list[str]] = None) -> list[str]:
    """The ``--results DIR`` values given after ``--`` on the ``streamlit run`` line.

    Other arguments are ignored, so the app also runs under pytest or AppTest.
    """
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    parser.add_argument("--results", action="append", default=[])
    try:
        known, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    except (argparse.ArgumentError, SystemExit):  # "--results" without a folder
        return []
    return known.results


def results_dir() -> Path:
    """The folder where this project writes its runs (``$DISSECT_RESULTS_DIR`` or ``results``)."""
    return Path(os.environ.get(RESULTS_ENV) or DEFAULT_RESULTS_DIR)


def _folder_signature(root: Path) -> str:
    """A digest of the names, sizes and mtimes of every run file under ``root``.

    It changes whenever a run is added, removed or rewritten, so the cached scan
    below is keyed by strings rather than by file contents.
    """
    names = (DESCRIPTIONS_FILE, ARGS_FILE, MANIFEST_FILE, TOP_CONCEPTS_FILE, TOP_IMAGES_FILE, UNIT_STATS_FILE)
    parts = []
    for csv_path in sorted(root.rglob(DESCRIPTIONS_FILE)):
        for name in names:
            try:
                stat = (csv_path.parent / name).stat()
            except OSError:
                continue
            parts.append(f"{csv_path.parent / name}\t{stat.st_size}\t{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


@st.cache_data(show_spinner="Reading result folders…", max_entries=64)
def _scan_folder(root: str, signature: str) -> tuple[list[Run], list[tuple[str, str]]]:
    """``find_runs(root)``, cached per (folder, signature of its run files)."""
    del signature  # only part of the cache key
    runs, problems = find_runs(root)
    return runs, [(str(path), reason) for path, reason in problems]


def load_folder_runs() -> tuple[list[Run], list[tuple[str, str]]]:
    """Runs from every ``--results`` folder and the result folder, and files that failed.

    A missing ``--results`` folder is reported as a problem; a missing default result
    folder is normal (nothing computed yet). A run folder reachable from two sources
    is listed once.
    """
    runs: list[Run] = []
    problems: list[tuple[str, str]] = []
    seen: set[Path] = set()
    sources = [(Path(d), True) for d in cli_results_dirs()] + [(results_dir(), False)]
    for root, required in sources:
        if not root.is_dir():
            if required:
                problems.append((str(root), "--results folder not found."))
            continue
        folder_runs, folder_problems = _scan_folder(str(root.resolve()), _folder_signature(root))
        for run in folder_runs:
            where = run.path.resolve() if run.path else None
            if where not in seen:
                seen.add(where)
                runs.append(run)
        problems.extend(folder_problems)
    return runs, list(dict.fromkeys(problems))  # a file under two sources is reported once


def _uploaded_label(file_name: str) -> str:
    return f"{Path(file_name).stem} (uploaded)"


def _store_uploads(files: Iterable[Any], errors: DeltaGenerator) -> list[str]:
    """Parse newly uploaded CSVs into the session's runs; show an error for each bad file.

    Returns the keys of runs added in this script run. A bad file adds nothing.
    """
    store: dict[str, Run] = st.session_state.setdefault(UPLOADED_RUNS_KEY, {})
    added = []
    for uploaded in files:
        digest = hashlib.sha256(uploaded.getvalue()).hexdigest()
        if digest in store:
            continue
        uploaded.seek(0)
        try:
            descriptions = read_descriptions(uploaded)
        except InvalidInputError as exc:
            errors.error(md(exc), icon=":material/error:")
            continue
        store[digest] = Run(label=_uploaded_label(uploaded.name), descriptions=descriptions)
        added.append(digest)
    return added


def default_selection(runs: list[Run]) -> list[str]:
    """The default model pair: ImageNet ResNet-18 and Places ResNet-18 if loaded, else the first two.

    Among several Places runs, one with the ImageNet run's probe set and concept set wins.
    """
    imagenet = next((r for r in runs if r.target_model == "resnet18"), None)
    places = [r for r in runs if r.target_model.startswith("resnet18_places")]
    if imagenet and places:
        setup = (imagenet.probe_name, imagenet.concept_set_name)
        same_setup = [r for r in places if (r.probe_name, r.concept_set_name) == setup]
        return [imagenet.label, (same_setup or places)[0].label]
    return [r.label for r in runs[:2]]


def select_after_rerun(run_dir: Path) -> None:
    """Add the run in ``run_dir`` to the model picker on the next script run.

    For the Run page: call this after writing a run, then ``st.rerun()``. The label
    is resolved on the next run, after the result folder has been rescanned.
    """
    st.session_state.setdefault(PENDING_SELECT_KEY, []).append(str(Path(run_dir).resolve()))


# --------------------------------------------------------------------------- frame

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


def _navigation() -> None:
    for path, label, icon in PAGES:
        st.sidebar.page_link(path, label=label, icon=icon)
    st.sidebar.divider()


def _import_bundle(uploaded: Any, errors: DeltaGenerator) -> None:
    """Unpack an uploaded results bundle into the result folder (once per session), then rescan."""
    from dissect_core.bundle import import_bundle

    digest = hashlib.sha256(uploaded.getvalue()).hexdigest()
    imported: set[str] = st.session_state.setdefault(IMPORTED_BUNDLES_KEY, set())
    if digest in imported:
        return
    try:
        folders = import_bundle(uploaded, results_dir() / "imported")
    except InvalidInputError as exc:
        errors.error(md(exc), icon=":material/error:")
        return
    imported.add(digest)
    for folder in folders:
        select_after_rerun(folder)
    st.rerun()


def _sources_section(folder_problems: list[tuple[str, str]], errors: DeltaGenerator) -> list[Any]:
    """The upload widgets and scan problems at the bottom of the sidebar; returns the uploaded CSVs."""
    with st.sidebar.expander("Add results", icon=":material/upload_file:"):
        files = st.file_uploader(
            "descriptions.csv files (layer, unit, description, similarity)",
            type=["csv"], accept_multiple_files=True, key=UPLOAD_KEY,
        )
        bundle = st.file_uploader("A results bundle (.zip) exported from this app", type=["zip"],
                                  key=BUNDLE_UPLOAD_KEY)
    if bundle is not None:
        _import_bundle(bundle, errors)
    if folder_problems:
        with st.sidebar.expander(f"⚠️ {len(folder_problems)} result file(s) could not be read"):
            for path, reason in folder_problems:
                st.text(f"{path}\n{reason}")
    return files or []


def page_frame(title: str) -> Frame:
    """Set up a page: config, sidebar navigation, run sources and the model picker.

    Draws ``title`` as the page title. The model picker (key ``"models"``) lists every
    loaded run; its choice persists across pages.
    """
    st.set_page_config(page_title=f"{title} · {APP_NAME}", layout="wide")
    _navigation()
    picker_slot = st.sidebar.container()
    controls = st.sidebar.container()
    errors = st.sidebar.container()

    folder_runs, problems = load_folder_runs()
    added = _store_uploads(_sources_section(problems, errors), errors)
    store: dict[str, Run] = st.session_state.get(UPLOADED_RUNS_KEY, {})
    # Copies: labels are made unique on them without touching the session's stored runs.
    uploaded = {digest: dataclasses.replace(run) for digest, run in store.items()}
    all_runs = folder_runs + list(uploaded.values())
    make_labels_unique(all_runs)
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
        help="Runs from --results folders, the result folder and uploaded CSVs.",
    )
    selected = [runs[label] for label in chosen]
    _share_section(selected)
    st.title(title)
    return Frame(runs=runs, selected=selected, controls=controls)


def _share_section(selected: list[Run]) -> None:
    """Build a results bundle of the selected models, to import elsewhere or host as a demo."""
    with st.sidebar.expander("Share these models", icon=":material/share:"):
        st.caption("A zip with the descriptions, run manifests, top-image thumbnails and activation "
                   "maps of the models picked above. Import it under *Add results*, on any machine.")
        if st.button("Build bundle", key="bundle_build", disabled=not selected, width="stretch"):
            from dissect_core.bundle import export_bundle

            with st.spinner("Drawing thumbnails and activation maps…"):
                st.session_state[BUNDLE_KEY] = export_bundle(selected, progress=StreamlitProgress(st.container()))
        if st.session_state.get(BUNDLE_KEY):
            st.download_button("Download bundle", st.session_state[BUNDLE_KEY], file_name="dissect_bundle.zip",
                               mime="application/zip", key="bundle_download", icon=":material/download:",
                               on_click="ignore", width="stretch")


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
    st.markdown(
        "**Three ways to get results in:**\n"
        "1. **Upload** one or more `descriptions.csv` files (columns `layer,unit,description,similarity`, "
        "as CLIP-Dissect writes them) under *Add results* in the sidebar.\n"
        "2. **Point the app at a folder**: `streamlit run streamlit_app.py -- --results DIR` "
        "loads every `descriptions.csv` under `DIR`, at any depth; a run's `args.txt` names it.\n"
        f"3. **Compute a run** on the *Run CLIP-Dissect* page; runs are saved in `{md(results_dir())}` "
        f"(set `{RESULTS_ENV}` to change it) and appear here automatically."
    )
    st.page_link("pages/5_Run.py", label="Run CLIP-Dissect", icon=":material/play_arrow:")


def pick_layers(frame: Frame, runs: Optional[list[Run]] = None) -> list[str]:
    """Layer multiselect (key ``"layers"``) in the sidebar over the runs' layers, in file order.

    Defaults to every layer; the choice persists across pages. A layer seen for the
    first time (a newly picked or uploaded model) starts out selected, while layers
    the user removed stay removed.
    """
    runs = frame.selected if runs is None else runs
    options = list(dict.fromkeys(layer for run in runs for layer in run.layers))
    seen = st.session_state.get(LAYERS_SEEN_KEY, [])
    new = set(options) - set(seen)
    st.session_state[LAYERS_SEEN_KEY] = list(dict.fromkeys(seen + options))

    def sanitize(value: list[str]) -> list[str]:
        kept = [layer for layer in options if layer in value or layer in new]
        # Everything picked has vanished (other models): start again from all layers.
        return kept if kept or not value else options

    return persistent(
        frame.controls.multiselect, "Layers", key=LAYERS_KEY, default=options,
        sanitize=sanitize, options=options,
    )


def require_layers(frame: Frame) -> list[str]:
    """The picked layers (``pick_layers``), or stop the page with a hint when none is picked."""
    layers = pick_layers(frame)
    if not layers:
        st.info("Pick at least one layer in the sidebar.", icon=":material/arrow_back:")
        st.stop()
    return layers


# --------------------------------------------------------------------------- output helpers

def _display_name(column: str) -> str:
    return column.replace("n_units", "units").replace("_", " ").capitalize()


def show_table(
    frame: pd.DataFrame,
    *,
    key: str,
    file_name: str,
    column_config: Optional[Mapping[str, Any]] = None,
    height: Any = "auto",
) -> None:
    """A dataframe with readable headers plus a lazily built CSV download (``key``: the button's key)."""
    config = {column: _display_name(column) for column in frame.columns}
    config.update(column_config or {})
    st.dataframe(frame, hide_index=True, column_config=config, height=height)
    st.download_button(
        "CSV", data=lambda: frame.to_csv(index=False), file_name=f"{safe_filename(file_name)}.csv",
        mime="text/csv", key=key, icon=":material/download:", on_click="ignore",
    )


def show_chart(chart: alt.TopLevelMixin, *, key: str, file_name: str) -> None:
    """An Altair chart plus PNG and SVG downloads, rendered only when clicked."""
    st.altair_chart(chart)
    stem = safe_filename(file_name)
    row = st.container(horizontal=True)
    row.download_button("PNG", data=lambda: chart_to_png(chart), file_name=f"{stem}.png", mime="image/png",
                        key=f"{key}_png", icon=":material/download:", on_click="ignore")
    row.download_button("SVG", data=lambda: chart_to_svg(chart), file_name=f"{stem}.svg", mime="image/svg+xml",
                        key=f"{key}_svg", icon=":material/download:", on_click="ignore")


# --------------------------------------------------------------------------- Unit explorer links

def unit_link_params(model: str, layer: str, unit: int) -> dict[str, str]:
    """Query parameters of a deep link to one unit in the Unit explorer."""
    return {"model": model, "layer": layer, "unit": str(int(unit))}


def unit_link_url(model: str, layer: str, unit: int) -> str:
    """Relative URL of the Unit explorer showing one unit (for ``LinkColumn``)."""
    return f"{UNIT_EXPLORER_URL}?{urlencode(unit_link_params(model, layer, unit))}"


def parse_unit_link(params: Mapping[str, str]) -> tuple[Optional[str], Optional[str], Optional[int]]:
    """(model, layer, unit) from a deep link's query parameters; ``None`` where absent or invalid."""
    unit_text = params.get("unit")
    unit = int(unit_text) if unit_text is not None and unit_text.isdigit() else None
    return params.get("model") or None, params.get("layer") or None, unit


# --------------------------------------------------------------------------- unit images

def _run_sources_key(run: Run) -> str:
    """The manifest fields a run's images and model depend on, as JSON (the cache key below)."""
    manifest = run.manifest
    probe = manifest.get("probe", {})
    return json.dumps({
        "probe": {"spec": probe.get("spec"), "fingerprint": probe.get("fingerprint")},
        "target_model": manifest.get("target_model"),
        "target_checkpoint": manifest.get("target_checkpoint"),
        "target_weights_sha256": manifest.get("target_weights_sha256"),
        "config": {"data_dir": manifest.get("config", {}).get("data_dir") or "data"},
    }, sort_keys=True)


@st.cache_resource(show_spinner="Opening the probe images and loading the model…", max_entries=8)
def _load_run_sources(sources_key: str) -> tuple[Any, Any, Optional[str], Optional[str]]:
    """(probe, target, why no probe, why no target), cached per run sources.

    Failures are cached too: an offline weight check must not repeat on every rerun.
    """
    from dissect_core.errors import DissectError
    from dissect_core.heatmaps import probe_for_run, target_for_run

    manifest = json.loads(sources_key)  # the key is the manifest subset these two functions read
    probe = target = probe_error = target_error = None
    try:
        probe = probe_for_run(manifest)
    except DissectError as exc:
        probe_error = str(exc)
    if probe is not None:
        try:
            target = target_for_run(manifest)
        except DissectError as exc:
            target_error = str(exc)
    return probe, target, probe_error, target_error


@dataclass
class UnitGallery:
    """A unit's top images ready to show, or why they (or their activation maps) are missing."""

    views: list[dict]           # label, activation, image, heatmap, mask (PIL images or None)
    no_images: Optional[str]    # why no images can be shown
    no_maps: Optional[str]      # why images are shown without activation maps


@st.cache_data(show_spinner="Drawing activation maps…", max_entries=64)
def _unit_views(sources_key: str, layer: str, unit: int, top: tuple, threshold: Optional[float],
                _probe: Any, _target: Any) -> list[dict]:
    """Cached per (run sources, layer, unit, images): the model and probe are fixed by the key."""
    from dissect_core.heatmaps import unit_images

    indices = [index for index, _ in top]
    activations = [activation for _, activation in top]
    if _target is None:
        return [{"label": _probe.item_label(i), "activation": a, "image": _probe.load_image(i),
                 "heatmap": None, "mask": None} for i, a in zip(indices, activations)]
    return [vars(item) for item in unit_images(_target, _probe, layer, unit, indices, activations, threshold)]


def unit_gallery(run: Run, layer: str, unit: int, count: int) -> UnitGallery:
    """The unit's ``count`` most activating probe images with heatmaps and masks."""
    if run.from_reference_tool or run.top_images is None:
        return UnitGallery([], (
            "This run was imported from a descriptions CSV, which holds the labels only: the reference "
            "tool saves neither the probe images nor which of them activate each unit."
        ), None)
    key = _run_sources_key(run)
    probe, target, no_probe, no_target = _load_run_sources(key)
    top = run.unit_top_images(layer, unit, count)
    pairs = tuple(zip(top["image_index"].astype(int).tolist(), top["activation"].astype(float).tolist()))
    if probe is None:
        # An imported bundle carries thumbnails and activation maps of each unit's top images.
        stored = _stored_views(str(run.path), layer, unit, pairs, run.mask_threshold(layer, unit))
        if stored is None:
            return UnitGallery([], no_probe, None)
        return UnitGallery(stored, None, None)
    views = _unit_views(key, layer, unit, pairs, run.mask_threshold(layer, unit), probe, target)
    return UnitGallery(views, None, no_target)


@st.cache_data(show_spinner=False, max_entries=64)
def _stored_views(run_dir: str, layer: str, unit: int, top: tuple, threshold: Optional[float]) -> Optional[list[dict]]:
    from dissect_core.heatmaps import stored_unit_images

    views = stored_unit_images(Path(run_dir), layer, unit, len(top), [i for i, _ in top], [a for _, a in top],
                               threshold)
    return None if views is None else [vars(view) for view in views]


# --------------------------------------------------------------------------- running dissections

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


def run_dissection(config: Any, title: str) -> Optional[Any]:
    """Run ``dissect_core.pipeline.describe`` inside a status box with per-stage progress.

    Returns the result, or ``None`` after showing the error (nothing computed is lost:
    finished stages stay in the cache).
    """
    from dissect_core.errors import DissectError
    from dissect_core.pipeline import describe

    with st.status(md(title), expanded=True) as status:
        try:
            result = describe(config, StreamlitProgress(st.container()))
        except DissectError as exc:
            status.update(label=md(f"{title}: failed"), state="error")
            st.error(md(exc), icon=":material/error:")
            return None
        counts = result.run.descriptions.groupby("layer", sort=False)["description"].agg(["size", "nunique"])
        for layer, row in counts.iterrows():
            st.text(f"{layer}: {row['size']} units, {row['nunique']} distinct concepts")
        if result.reused:
            st.text("Reused from the cache: " + ", ".join(result.reused))
        if result.skipped_images:
            st.warning(f"Skipped {len(result.skipped_images)} unreadable image(s), e.g. "
                       f"{md(result.skipped_images[0])}")
        st.text("Timings: " + ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in result.timings.items()))
        status.update(label=md(f"{title}: done in {sum(result.timings.values()):.1f} s"), state="complete")
    select_after_rerun(result.run_dir)
    return result

"""Run sources: result folders (``--results`` and the result folder), uploaded CSVs and bundles.

Runs come from three sources, merged in this order:

* every supported result file (``dissect_core.results.RESULT_FORMATS``: CLIP-Dissect,
  NetDissect, MILAN) under each ``--results DIR`` given after ``--`` on the
  ``streamlit run`` command line;
* runs computed by this project in the result folder (``results/``, or the
  ``DISSECT_RESULTS_DIR`` environment variable);
* result files uploaded in the sidebar, kept in ``st.session_state`` for the session
  (one model's NetDissect layer files, uploaded together, become one run).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Optional

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from app_ui.text import md
from dissect_core.errors import InvalidInputError
from dissect_core.results import ARGS_FILE, MANIFEST_FILE, Run, find_runs, runs_from_files

RESULTS_ENV = "DISSECT_RESULTS_DIR"
DEFAULT_RESULTS_DIR = "results"

UPLOAD_KEY = "upload_files"
UPLOADED_RUNS_KEY = "uploaded_runs"      # {sha256 of an upload batch + index: Run}
UPLOADED_FILES_KEY = "uploaded_files"    # sha256 of every uploaded file read into a run
BUNDLE_UPLOAD_KEY = "bundle_file"
IMPORTED_BUNDLES_KEY = "imported_bundles"  # sha256 of each bundle imported in this session
PENDING_SELECT_KEY = "pending_select"    # run folders to add to the model picker on the next run


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
    """A digest of the names, sizes and mtimes of every CSV, args.txt and manifest.json
    under ``root`` (the files ``find_runs`` reads).

    It changes whenever a run is added, removed or rewritten, so the cached scan
    below is keyed by strings rather than by file contents.
    """
    parts = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() != ".csv" and path.name not in (ARGS_FILE, MANIFEST_FILE):
            continue
        try:
            stat = path.stat()
        except OSError:
            continue
        parts.append(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}")
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
    folder is normal (nothing computed yet). A run reachable from two sources is listed once.
    """
    runs: list[Run] = []
    problems: list[tuple[str, str]] = []
    seen: set[tuple[Path, ...]] = set()
    sources = [(Path(d), True) for d in cli_results_dirs()] + [(results_dir(), False)]
    for root, required in sources:
        if not root.is_dir():
            if required:
                problems.append((str(root), "--results folder not found."))
            continue
        folder_runs, folder_problems = _scan_folder(str(root.resolve()), _folder_signature(root))
        for run in folder_runs:
            where = tuple(path.resolve() for path in run.files)  # a folder may hold several runs
            if where not in seen:
                seen.add(where)
                runs.append(run)
        problems.extend(folder_problems)
    return runs, list(dict.fromkeys(problems))  # a file under two sources is reported once


def store_uploads(files: Iterable[Any], errors: DeltaGenerator) -> list[str]:
    """Read newly uploaded result files into the session's runs; show an error for each bad file.

    The files new in this script run are read together, so one model's NetDissect layer
    files uploaded at once become one run. Returns the keys of runs added in this script
    run. A bad file adds nothing.
    """
    store: dict[str, Run] = st.session_state.setdefault(UPLOADED_RUNS_KEY, {})
    read: set[str] = st.session_state.setdefault(UPLOADED_FILES_KEY, set())
    new = {hashlib.sha256(f.getvalue()).hexdigest(): f for f in files}
    new = {digest: f for digest, f in new.items() if digest not in read}
    if not new:
        return []
    runs, problems = runs_from_files([(Path(f.name).name, f.getvalue()) for f in new.values()])
    for _, reason in problems:
        errors.error(md(reason), icon=":material/error:")
    bad = {name for name, _ in problems}
    read.update(digest for digest, f in new.items() if Path(f.name).name not in bad)
    batch = hashlib.sha256("".join(sorted(new)).encode("ascii")).hexdigest()
    added = []
    for index, run in enumerate(runs):
        run.label = f"{run.label} (uploaded)"
        store[f"{batch}:{index}"] = run
        added.append(f"{batch}:{index}")
    return added


def select_after_rerun(run_dir: Path) -> None:
    """Add the run in ``run_dir`` to the model picker on the next script run.

    For the Run page: call this after writing a run, then ``st.rerun()``. The label
    is resolved on the next run, after the result folder has been rescanned.
    """
    st.session_state.setdefault(PENDING_SELECT_KEY, []).append(str(Path(run_dir).resolve()))


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


def sources_section(folder_problems: list[tuple[str, str]], errors: DeltaGenerator) -> list[Any]:
    """The upload widgets and scan problems at the bottom of the sidebar; returns the uploaded CSVs."""
    with st.sidebar.expander("Add results", icon=":material/upload_file:"):
        files = st.file_uploader(
            "Result files (.csv): CLIP-Dissect, NetDissect-Lite or MILAN",
            type=["csv"], accept_multiple_files=True, key=UPLOAD_KEY,
            help="CLIP-Dissect's descriptions.csv (layer,unit,description,similarity); NetDissect-Lite's "
                 "per-layer MODEL_LAYER.csv files (unit,category,label,score,...): pick all of a model's "
                 "layers at once to get one run; MILAN's layer,unit,description.",
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


def notes_section(runs: list[Run]) -> None:
    """What reading the runs' files ignored (extra columns), under the sidebar's problems."""
    notes = [(run.label, note) for run in runs for note in run.notes]
    if notes:
        with st.sidebar.expander(f"ℹ️ {len(notes)} note(s) on reading result files"):
            for label, note in notes:
                st.text(f"{label}\n{note}")

"""Run sources: result folders (``--results`` and the result folder), uploaded CSVs and bundles.

Runs come from three sources, merged in this order:

* every supported result file (``dissect_core.runs.formats.RESULT_FORMATS``: CLIP-Dissect,
  NetDissect, MILAN) under each ``--results DIR`` given to ``dissect app`` (after ``--``
  on a ``streamlit run`` command line);
* runs computed by this project in the result folder (``results/``, or the
  ``DISSECT_RESULTS_DIR`` environment variable);
* result files uploaded in the sidebar, kept in ``st.session_state`` for the session
  (one model's NetDissect layer files, uploaded together, become one run), and
  bundles uploaded in the sidebar (``import_folder``): unpacked into the first
  ``--results`` folder, or else into a per-user folder outside the checkout, which a
  local app also reads; in hosted mode into the session's temporary folder, so they
  stay the visitor's and a hosted server never reads what a local session imported.

Every run is checked against the page-work limits below before any page sees it.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Iterable, Optional

import streamlit as st
from platformdirs import user_data_dir
from streamlit.delta_generator import DeltaGenerator

from dissect_app import hosted_mode
from dissect_app.text import md, message
from dissect_core.common.errors import InvalidInputError
from dissect_core.runs.run import Run
from dissect_core.runs.run_folders import ARGS_FILE, MANIFEST_FILE, find_runs, runs_from_files

RESULTS_ENV = "DISSECT_RESULTS_DIR"
DEFAULT_RESULTS_DIR = "results"

UPLOAD_KEY = "upload_files"
UPLOADED_RUNS_KEY = "uploaded_runs"      # {sha256 of an upload batch + index: Run}
UPLOADED_FILES_KEY = "uploaded_files"    # sha256 of every uploaded file read into a run
BUNDLE_UPLOAD_KEY = "bundle_file"
IMPORTED_BUNDLES_KEY = "imported_bundles"  # sha256 of each bundle imported in this session
BUNDLE_NOTES_KEY = "bundle_notes"        # {sha256 of a bundle: what importing it said}
IMPORTED_DIR = "imported"                # under the folder that takes bundle imports
PENDING_SELECT_KEY = "pending_select"    # run folders to add to the model picker on the next run
SESSION_SCAN_KEY = "session_folder_scan"  # (signature, scan) of a hosted visitor's own folder

# Page work grows with these; beyond them a run is refused with a message instead of
# stalling every page (ResNet-50 has 5 layers and 3,904 units in its 4 blocks; ViT-B 12 x 768).
MAX_LAYERS = 64
MAX_ROWS = 200_000
MAX_UNIT = 1_000_000


def cli_results_dirs(argv: Optional[list[str]] = None) -> list[str]:
    """The ``--results DIR`` values given to ``dissect app`` (after ``--`` on a ``streamlit run`` line).

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


def user_import_dir() -> Path:
    """The per-user folder where a local app unpacks bundles when no ``--results`` folder is given
    (``~/.local/share/dissect/imported`` on Linux): outside the checkout, so a hosted server
    started from the checkout never shows them."""
    return Path(user_data_dir("dissect", appauthor=False)) / IMPORTED_DIR


def import_folder() -> Path:
    """Where an uploaded bundle is unpacked: in hosted mode the session's temporary folder,
    else the first ``--results`` folder's ``imported/`` or the per-user folder."""
    if hosted_mode.hosted():
        return hosted_mode.session_folder()
    given = cli_results_dirs()
    return Path(given[0]) / IMPORTED_DIR if given else user_import_dir()


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


Scan = tuple[list[Run], list[tuple[str, str]]]


@st.cache_data(show_spinner="Reading result folders…", max_entries=16)
def _scan_folder(root: str, signature: str) -> Scan:
    """``_read_folder(root)``, cached for every session per (folder, signature of its run files)."""
    del signature  # only part of the cache key
    return _read_folder(root)


def _scan_session_folder(root: Path) -> Scan:
    """``_read_folder(root)`` for a hosted visitor's own folder, cached in the session: in the
    server's cache each visitor's runs would outlive the visit."""
    signature = _folder_signature(root)
    held = st.session_state.get(SESSION_SCAN_KEY)
    if held is None or held[0] != signature:
        held = (signature, _read_folder(str(root.resolve())))
        st.session_state[SESSION_SCAN_KEY] = held
    return held[1]


def _read_folder(root: str) -> Scan:
    """``find_runs(root)`` less runs over the limits."""
    found, problems = find_runs(root)
    runs = []
    for run in found:
        reason = too_big(run)
        if reason is None:
            runs.append(run)
        else:
            problems.append((run.files[0] if run.files else run.path, f"Not shown: {reason}"))
    return runs, [(str(path), reason) for path, reason in problems]


def too_big(run: Run) -> Optional[str]:
    """Why the pages will not show ``run`` (too many layers, rows or too large unit numbers), or None."""
    frame = run.descriptions
    layers = frame["layer"].nunique()
    if layers > MAX_LAYERS:
        return f"it has {layers:,} layers; the app shows runs with at most {MAX_LAYERS} layers."
    if len(frame) > MAX_ROWS:
        return f"it has {len(frame):,} units; the app shows runs with at most {MAX_ROWS:,} units."
    units = frame["unit"]
    if len(units) and (units.min() < 0 or units.max() > MAX_UNIT):
        return f"its unit numbers must lie between 0 and {MAX_UNIT:,} (found {units.min():,} to {units.max():,})."
    return None


def load_folder_runs() -> tuple[list[Run], list[tuple[str, str]]]:
    """Runs from every ``--results`` folder and the result folder, and files that failed.

    A missing ``--results`` folder is reported as a problem; a missing default result
    folder is normal (nothing computed yet). A run reachable from two sources is listed once.
    """
    runs: list[Run] = []
    problems: list[tuple[str, str]] = []
    seen: set[tuple[Path, ...]] = set()
    sources = [(Path(d), True) for d in cli_results_dirs()] + [(results_dir(), False)]
    visitor_folder = None
    if hosted_mode.hosted():
        if hosted_mode.SESSION_FOLDER_KEY in st.session_state:
            visitor_folder = hosted_mode.session_folder()  # this visitor's imported bundles
            sources.append((visitor_folder, False))
    elif not cli_results_dirs():
        sources.append((user_import_dir(), False))  # bundles this user imported before
    for root, required in sources:
        if not root.is_dir():
            if required:
                problems.append((str(root), "--results folder not found."))
            continue
        if root == visitor_folder:
            folder_runs, folder_problems = _scan_session_folder(root)
        else:
            folder_runs, folder_problems = _scan_folder(str(root.resolve()), _folder_signature(root))
        for run in folder_runs:
            where = tuple(path.resolve() for path in run.files)  # a folder may hold several runs
            if where not in seen:
                seen.add(where)
                runs.append(run)
        if hosted_mode.hosted():  # name files within their folder, never the server's folders
            folder_problems = [(_within(path, root), reason) for path, reason in folder_problems]
        problems.extend(folder_problems)
    return runs, list(dict.fromkeys(problems))


def _within(path: str, root: Path) -> str:
    """``path`` relative to ``root`` (its last part when outside)."""
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return Path(path).name  # a file under two sources is reported once


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
    if hosted_mode.hosted():
        new = _within_upload_limits(new, len(read), errors)
    if not new:
        return []
    runs, problems = runs_from_files([(Path(f.name).name, f.getvalue()) for f in new.values()])
    for _, reason in problems:
        errors.error(message(reason), icon=":material/error:")
    bad = {name for name, _ in problems}
    read.update(digest for digest, f in new.items() if Path(f.name).name not in bad)
    batch = hashlib.sha256("".join(sorted(new)).encode("ascii")).hexdigest()
    added = []
    for index, run in enumerate(runs):
        reason = too_big(run)
        if reason is not None:
            errors.error(message(f"{run.label} was not added: {reason}"), icon=":material/error:")
            continue
        run.label = f"{run.label} · uploaded"
        store[f"{batch}:{index}"] = run
        added.append(f"{batch}:{index}")
    return added


def _within_upload_limits(new: dict[str, Any], kept: int, errors: DeltaGenerator) -> dict[str, Any]:
    """The new uploads that fit a hosted visitor's limits (file size, files per session); why not the rest."""
    fitting = {}
    for digest, uploaded in new.items():
        if uploaded.size > hosted_mode.MAX_CSV_MB * 1_000_000:
            errors.error(message(f"{uploaded.name} is {uploaded.size / 1e6:.1f} MB; this demo takes CSV files "
                                 f"of at most {hosted_mode.MAX_CSV_MB} MB. Nothing was added."), icon=":material/error:")
        elif kept + len(fitting) >= hosted_mode.MAX_CSV_FILES:
            errors.error(message(f"{uploaded.name} was not added: this demo holds at most {hosted_mode.MAX_CSV_FILES} "
                                 "uploaded CSVs per visitor. Reload the page to start a new session."),
                         icon=":material/error:")
        else:
            fitting[digest] = uploaded
    return fitting


def select_after_rerun(run_dir: Path) -> None:
    """Add the run in ``run_dir`` to the model picker on the next script run.

    For the Run page: call this after writing a run, then ``st.rerun()``. The label
    is resolved on the next run, after the result folder has been rescanned.
    """
    st.session_state.setdefault(PENDING_SELECT_KEY, []).append(str(Path(run_dir).resolve()))


def _import_bundle(uploaded: Any, errors: DeltaGenerator) -> None:
    """Unpack an uploaded results bundle (once per session) into ``import_folder()``, then rescan.

    In hosted mode within the limits on bundle size, count and unpacked size. A bundle
    imported there before is not written again: the page says so and picks its runs.
    """
    from dissect_core.runs.bundle_format import BundleAlreadyImported, import_bundle

    digest = hashlib.sha256(uploaded.getvalue()).hexdigest()
    imported: set[str] = st.session_state.setdefault(IMPORTED_BUNDLES_KEY, set())
    notes: dict[str, str] = st.session_state.setdefault(BUNDLE_NOTES_KEY, {})
    if digest in imported:
        if digest in notes:  # said while the bundle stays in the uploader
            errors.info(message(notes[digest]), icon=":material/info:")
        return
    limited = hosted_mode.hosted()
    if limited and uploaded.size > hosted_mode.MAX_BUNDLE_MB * 1_000_000:
        errors.error(message(f"{uploaded.name} is {uploaded.size / 1e6:.1f} MB; this demo takes bundles of at most "
                             f"{hosted_mode.MAX_BUNDLE_MB} MB. Nothing was imported."), icon=":material/error:")
        return
    if limited and len(imported) >= hosted_mode.MAX_BUNDLES:
        errors.error(message(f"{uploaded.name} was not imported: this demo holds at most {hosted_mode.MAX_BUNDLES} "
                             "bundles per visitor. Reload the page to start a new session."), icon=":material/error:")
        return
    destination = import_folder()
    try:
        folders = import_bundle(uploaded, destination)
    except BundleAlreadyImported as exc:  # nothing written: its runs are listed already
        imported.add(digest)
        notes[digest] = str(exc)
        errors.info(message(exc), icon=":material/info:")
        for folder in exc.folders:
            select_after_rerun(folder)
        return
    except InvalidInputError as exc:
        errors.error(message(exc), icon=":material/error:")
        return
    if limited and hosted_mode.folder_megabytes(destination) > hosted_mode.MAX_SESSION_FOLDER_MB:
        for folder in {folder.parent for folder in folders}:
            shutil.rmtree(folder, ignore_errors=True)
        errors.error(message(f"{uploaded.name} was not imported: it unpacks to more than this demo keeps per "
                             f"visitor ({hosted_mode.MAX_SESSION_FOLDER_MB} MB in all)."), icon=":material/error:")
        return
    imported.add(digest)
    for folder in folders:
        select_after_rerun(folder)
    st.rerun()


def sources_section(folder_problems: list[tuple[str, str]], errors: DeltaGenerator) -> list[Any]:
    """The upload widgets and scan problems at the bottom of the sidebar; returns the uploaded CSVs."""
    limited = hosted_mode.hosted()
    with st.sidebar.expander("Add results", icon=":material/upload_file:"):
        if limited:
            st.caption("Your files stay in your browser session; nothing is kept on the server.")
        files = st.file_uploader(
            "Result files (.csv): CLIP-Dissect, NetDissect-Lite or MILAN",
            type=["csv"], accept_multiple_files=True, key=UPLOAD_KEY,
            help="CLIP-Dissect's descriptions.csv (layer,unit,description,similarity); NetDissect-Lite's "
                 "per-layer MODEL_LAYER.csv files (unit,category,label,score,...): pick all of a model's "
                 "layers at once to get one run; MILAN's layer,unit,description.",
            max_upload_size=math.ceil(hosted_mode.MAX_CSV_MB) if limited else None,
        )
        bundle = st.file_uploader("A results bundle (.zip) exported from this app", type=["zip"],
                                  key=BUNDLE_UPLOAD_KEY,
                                  max_upload_size=math.ceil(hosted_mode.MAX_BUNDLE_MB) if limited else None)
    if bundle is not None:
        _import_bundle(bundle, errors)
    imports_section()
    if folder_problems:
        # Open: a file that failed must be seen without a click.
        with st.sidebar.expander(f"⚠️ {len(folder_problems)} result file(s) could not be read", expanded=True):
            for path, reason in folder_problems:
                text = f"{path}\n{reason}"
                st.text(hosted_mode.hide_paths(text) if limited else text)
    return files or []


def imported_bundles() -> list[tuple[Path, dict]]:
    """The bundles a local app has unpacked into ``import_folder()``, each with its import
    record, oldest first; none in hosted mode (a visitor's imports go with the session)."""
    from dissect_core.runs.bundle_format import import_record

    root = import_folder()
    if hosted_mode.hosted() or not root.is_dir():
        return []
    folders = (folder for folder in sorted(root.iterdir()) if folder.is_dir() and not folder.name.startswith("."))
    return [(folder, record) for folder in folders if (record := import_record(folder))]


def _remove_import(folder: str) -> None:
    """Delete an imported bundle's unpacked copy (only a folder of ``import_folder()``)."""
    from dissect_core.runs.bundle_format import import_record

    path = Path(folder)
    if path.parent.resolve() != import_folder().resolve():
        return
    record = import_record(path)
    shutil.rmtree(path, ignore_errors=True)
    digest = record.get("sha256")
    if isinstance(digest, str):  # still in the uploader, it is not imported again on the next rerun
        st.session_state.setdefault(IMPORTED_BUNDLES_KEY, set()).add(digest)
        st.session_state.setdefault(BUNDLE_NOTES_KEY, {})[digest] = (
            f"{record.get('bundle', 'The bundle')} was removed; reload the page to import it again.")


def imports_section() -> None:
    """The imported bundles, each with a button that removes this app's copy: imports stay across
    sessions, and with them loaded the demo steps aside."""
    bundles = imported_bundles()
    if not bundles:
        return
    st.sidebar.caption(md(f"Imported bundles, kept in {import_folder()} (the files you uploaded are not touched):"))
    for folder, record in bundles:
        labels = record.get("labels") if isinstance(record.get("labels"), list) else []
        name = str(record.get("bundle") or folder.name)
        st.sidebar.button(
            md(f"Remove {name} ({len(labels)} run(s))"), key=f"remove_import_{folder.name}", icon=":material/delete:",
            on_click=_remove_import, args=(str(folder),), help=md(", ".join(map(str, labels))) or None)


def notes_section(runs: list[Run]) -> None:
    """What reading the runs' files ignored (extra columns), under the sidebar's problems."""
    notes = [(run.label, note) for run in runs for note in run.notes]
    if notes:
        with st.sidebar.expander(f"ℹ️ {len(notes)} note(s) on reading result files"):
            for label, note in notes:
                st.text(f"{label}\n{note}")

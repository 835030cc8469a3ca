"""Names users give runs in the app, kept with the runs.

A run's key is its folder (runs from result folders), ``upload:<sha256>`` (uploaded
CSVs) or ``demo:<label>`` (the built-in demo). Names of folder runs are kept in
``names.json`` in the result folder, so they survive restarts; in hosted mode, and
for uploads and the demo, they live in the session only, so nothing a visitor types
is written to the server.
"""
from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Optional

import streamlit as st

from dissect_app.hosted_mode import hosted
from dissect_app.sources import results_dir
from dissect_core.common.files import atomic_write_text
from dissect_core.runs.run import MAX_RUN_NAME_CHARS, Run

NAMES_FILE = "names.json"
SESSION_NAMES_KEY = "run_names"   # {run key: name} given in this session
# A run's own name can be this long (runs.run.MAX_RUN_NAME_CHARS): a name the app shows can be typed back.
MAX_NAME = MAX_RUN_NAME_CHARS


def run_key(run: Run, upload_digest: Optional[str] = None, demo: bool = False) -> str:
    """The key a run's name is kept under."""
    if upload_digest is not None:
        return f"upload:{upload_digest}"
    if demo:  # the built-in demo belongs to no result folder: its names stay in the session
        return f"demo:{run.label}"
    return str(run.path.resolve()) if run.path is not None else f"label:{run.label}"


def key_is_kept(key: str) -> bool:
    """Whether a name under ``key`` is kept in the names file (runs in result folders),
    not only in the session (uploads, the demo)."""
    return not key.startswith(("upload:", "demo:"))


def _names_path() -> Path:
    return results_dir() / NAMES_FILE


def saved_names() -> dict[str, str]:
    """Every name given so far: the result folder's names file, then this session's names."""
    names: dict[str, str] = {}
    if not hosted():
        try:
            stored = json.loads(_names_path().read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stored = {}  # no names yet, or a damaged file: runs keep their default names
        if isinstance(stored, dict):
            names.update({k: v for k, v in stored.items() if isinstance(k, str) and clean_name(v) == v})
    names.update(st.session_state.get(SESSION_NAMES_KEY, {}))
    return names


def clean_name(name: object) -> Optional[str]:
    """``name`` stripped, or None when empty, too long or holding control characters."""
    if not isinstance(name, str):
        return None
    name = " ".join(name.split())
    if not name or len(name) > MAX_NAME or any(unicodedata.category(c).startswith("C") for c in name):
        return None
    return name


def rename(key: str, name: str, persist: bool) -> None:
    """Give the run under ``key`` the name ``name`` (already cleaned)."""
    st.session_state.setdefault(SESSION_NAMES_KEY, {})[key] = name
    if persist and not hosted():
        path = _names_path()
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stored = {}
        stored = stored if isinstance(stored, dict) else {}
        stored[key] = name
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(stored, indent=1, ensure_ascii=False, sort_keys=True))

"""Hosted (read-only) mode: for a public demo where visitors must not touch the server.

Turned on by ``DISSECT_HOSTED=1`` or ``dissect app --hosted`` (``--hosted`` after ``--``
on a ``streamlit run`` line). Then the Run page is not routable, re-description is off,
the app imports no torch (browsing never runs a model), a visitor's uploads stay in their
session (bundles are unpacked into a per-session temporary folder, removed with the
session), uploads are bounded in size and number, and messages name no server path.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Optional

import streamlit as st

HOSTED_ENV = "DISSECT_HOSTED"
SESSION_FOLDER_KEY = "session_folder"   # the session's TemporaryDirectory (hosted mode)

# Bounds on what one hosted visitor can upload (a ResNet-50 descriptions.csv is about 150 KB,
# a bundle of two ResNet-18 runs with thumbnails and maps a few MB).
MAX_CSV_MB = 5
MAX_CSV_FILES = 10
MAX_BUNDLE_MB = 50
MAX_BUNDLES = 3
MAX_SESSION_FOLDER_MB = 300


def hosted(argv: Optional[list[str]] = None) -> bool:
    """Whether the app runs in hosted mode (``$DISSECT_HOSTED`` set to 1/true/yes, or ``--hosted``)."""
    if os.environ.get(HOSTED_ENV, "").strip().lower() in {"1", "true", "yes", "on"}:
        return True
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    parser.add_argument("--hosted", action="store_true")
    try:
        known, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    except (argparse.ArgumentError, SystemExit):
        return False
    return known.hosted


def session_folder() -> Path:
    """This session's temporary folder (created on first use).

    The ``TemporaryDirectory`` lives in the session state: when Streamlit drops an
    ended session, the object is collected and its folder removed (and at the
    latest when the server exits).
    """
    holder = st.session_state.get(SESSION_FOLDER_KEY)
    if holder is None:
        holder = tempfile.TemporaryDirectory(prefix="dissect-session-")
        st.session_state[SESSION_FOLDER_KEY] = holder
    return Path(holder.name)


def folder_megabytes(folder: Path) -> float:
    """Total size of the files under ``folder``, in MB."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 1e6


# An absolute path (POSIX or Windows) not glued to a word: "/srv/app/results/x.csv", "C:\data\x".
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/\\~])(?:[A-Za-z]:)?[/\\](?:[^\s/\\'\"]+[/\\])+[^\s/\\'\",;)]*")


def hide_paths(text: str) -> str:
    """``text`` with every absolute path cut to its last part (``/srv/a/b.csv`` → ``b.csv``)."""
    return _ABSOLUTE_PATH.sub(lambda match: Path(match.group().replace("\\", "/")).name or "…", text)

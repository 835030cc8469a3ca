"""Text helpers: markdown escaping for user-supplied names, safe download file names."""
from __future__ import annotations

import re

# CommonMark lets a backslash escape any ASCII punctuation; escaping all of it keeps
# emphasis, links, images, HTML tags, LaTeX ($) and Streamlit's :color[...] directives inert.
_MARKDOWN_SPECIAL = re.compile(r"([!-/:-@\[-`{-~])")


def md(text: object) -> str:
    """``text`` escaped so that markdown-rendering elements show it literally."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text))


def safe_filename(text: str) -> str:
    """A file-name stem built from ``text`` (letters, digits, ``-_.`` only)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "download"

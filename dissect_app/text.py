"""Text helpers: markdown escaping for user-supplied names, messages, safe download file names."""
from __future__ import annotations

import re

from dissect_app.hosted_mode import hide_paths, hosted

# CommonMark lets a backslash escape any ASCII punctuation; escaping all of it keeps
# emphasis, links, images, HTML tags, LaTeX ($) and Streamlit's :color[...] directives inert.
_MARKDOWN_SPECIAL = re.compile(r"([!-/:-@\[-`{-~])")
_CODE_SPAN = re.compile(r"`([^`]*)`")


def md(text: object) -> str:
    """``text`` escaped so that markdown-rendering elements show it literally."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text))


def message(text: object) -> str:
    """An error or notice from the library, for a markdown element, in plain words.

    Code spans become quotes (escaped backticks would show literally), and in hosted
    mode absolute paths are cut to their last part so that no server folder shows.
    """
    plain = _CODE_SPAN.sub(r"'\1'", str(text)).replace("`", "'")
    return md(hide_paths(plain) if hosted() else plain)


def safe_filename(text: str) -> str:
    """A file-name stem built from ``text`` (letters, digits, ``-_.`` only)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "download"

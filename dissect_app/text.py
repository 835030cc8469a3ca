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


def code(text: object) -> str:
    """``text`` as an inline code span: shown as it is (markdown escapes are not read inside
    one, so ``md`` there would show its backslashes); a backtick in it becomes a quote."""
    return "`" + str(text).replace("`", "'") + "`"


def message(text: object) -> str:
    """An error or notice from the library, for a markdown element, in plain words.

    Code spans become quotes (escaped backticks would show literally), and in hosted
    mode absolute paths are cut to their last part so that no server folder shows.
    """
    plain = _CODE_SPAN.sub(r"'\1'", str(text)).replace("`", "'")
    plain = hide_paths(plain) if hosted() else plain
    # Its lines stay lines: an indented or "- " line is a list item (a list of bad lines, of
    # missing files), any other line a paragraph (markdown would run them all together).
    blocks: list[tuple[bool, list[str]]] = []
    for line in plain.split("\n"):
        item = line.startswith(("  ", "\t", "- "))
        text_of = "- " + md(line.strip().removeprefix("- ")) if item else md(line)
        if blocks and item and blocks[-1][0]:
            blocks[-1][1].append(text_of)
        else:
            blocks.append((item, [text_of]))
    return "\n\n".join("\n".join(lines) for _, lines in blocks)


def safe_filename(text: str) -> str:
    """A file-name stem built from ``text`` (letters, digits, ``-_.`` only)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "download"


_SEPARATOR = re.compile(r"([/_\\-]|\.(?=[^\W\d]))")  # a dot only before a letter: "0.873" stays whole
ZERO_WIDTH_SPACE = "\u200b"


def breakable(text: object) -> str:
    """``text`` with a line-break opportunity after each separator (``/ _ - \\``, a dot before a letter), for
    captions in narrow columns: file names wrap at their parts, not in mid-word."""
    return _SEPARATOR.sub(r"\1" + ZERO_WIDTH_SPACE, str(text))

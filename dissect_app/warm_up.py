"""Warm the server at start, so the first visitor does not wait for imports.

A fresh server process has imported nothing of the app: the first page run
imports pandas, Altair and the app's modules and reads the demo (about 1.5 s of
CPU here), while the visitor's browser is still loading Streamlit's frontend.
``warm_up`` does that work once, in a background thread that the server script
(``dissect_app/server/streamlit_app.py``) starts with the server, so the two overlap
and later visitors find everything ready.

What it imports is read from the pages themselves (their top-level import
statements), so the list cannot drift from what the pages use. The Run page is
left out: it imports torch, which browsing never needs.
"""
from __future__ import annotations

import ast
import logging
from pathlib import Path

from dissect_app.demo_banner import cached_demo
from dissect_app.navigation import PAGES, RUN_PAGE

_LOG = logging.getLogger(__name__)


def browsing_pages() -> list[Path]:
    """The page scripts a visitor browses (every page but the Run page)."""
    return [Path(page.script) for page in PAGES if page.script != RUN_PAGE]


def import_page_modules(page: Path) -> None:
    """Run only the top-level ``import`` statements of a page script."""
    tree = ast.parse(page.read_text(encoding="utf-8"), filename=str(page))
    imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    exec(compile(ast.Module(body=imports, type_ignores=[]), str(page), "exec"), {})


def warm_up() -> None:
    """Import what the browsing pages import and read the demo into the server's cache."""
    try:
        for page in browsing_pages():
            import_page_modules(page)
        cached_demo()
    except Exception:  # a failed warm-up only costs the first visitor time; the page says what is wrong
        _LOG.exception("Warming up the app failed; the first page load will do the work instead.")

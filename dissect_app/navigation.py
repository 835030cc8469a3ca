"""The app's pages, their deep links, and the ``st.navigation`` that routes to them.

The page scripts live in ``dissect_app/views`` (not in a folder named ``pages``: see
docs/architecture.md). Each page keeps the URL path the legacy ``pages/`` router gave
it, so links shared before the move still open the same page (``/Unit_explorer?…``).
A page's file is named after its URL path: AppTest finds a page by its file name until
the first run has registered the pages, so a test can open a deep link cold.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from dissect_app.hosted_mode import hosted

VIEWS = Path(__file__).resolve().parent / "views"
# The script Streamlit runs on every rerun (AppTest.from_file takes it too).
ENTRY_SCRIPT = str(Path(__file__).resolve().parent / "server" / "entry.py")


@dataclass(frozen=True)
class AppPage:
    """One page of the app: its script, its label in the sidebar and its URL path."""

    script: str      # absolute path of the page script (st.Page, st.page_link and AppTest take it as is)
    title: str
    icon: str
    url_path: str    # "" for the home page


HOME_PAGE = str(VIEWS / "overview.py")
SHARED_CONCEPTS_PAGE = str(VIEWS / "Shared_concepts.py")
MODEL_DIFFERENCES_PAGE = str(VIEWS / "Model_differences.py")
UNIT_EXPLORER_PAGE = str(VIEWS / "Unit_explorer.py")
SWEEP_PAGE = str(VIEWS / "Sweep.py")
RUN_PAGE = str(VIEWS / "Run.py")
UNIT_EXPLORER_URL = "Unit_explorer"
PAGES = (
    AppPage(HOME_PAGE, "Overview", ":material/bar_chart:", ""),
    AppPage(SHARED_CONCEPTS_PAGE, "Shared concepts", ":material/stacked_bar_chart:", "Shared_concepts"),
    AppPage(MODEL_DIFFERENCES_PAGE, "Model differences", ":material/compare_arrows:", "Model_differences"),
    AppPage(UNIT_EXPLORER_PAGE, "Unit explorer", ":material/grid_view:", UNIT_EXPLORER_URL),
    AppPage(SWEEP_PAGE, "Sweep", ":material/timeline:", "Sweep"),
    AppPage(RUN_PAGE, "Run CLIP-Dissect", ":material/play_arrow:", "Run"),
)


def served_pages() -> list[AppPage]:
    """The pages this server offers: all of them, or, in hosted mode, all but the Run page
    (a hosted demo is read-only, so the Run page is not even routable there)."""
    return [page for page in PAGES if not (page.script == RUN_PAGE and hosted())]


def navigation() -> st.navigation:
    """Register the served pages (sidebar navigation, deep links) and return the one to run."""
    return st.navigation([
        st.Page(page.script, title=page.title, icon=page.icon, url_path=page.url_path or None,
                default=page.script == HOME_PAGE)
        for page in served_pages()
    ])

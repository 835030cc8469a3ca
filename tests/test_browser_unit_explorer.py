"""Real-browser check that the Unit explorer reads at 900 px and 1400 px, on the built-in demo.

At each width: every top image is at least 96 px wide, each caption breaks only at a
space or a separator ("/", "_", "-", a dot before a letter), never inside a word, and
the top-concepts table spans the content column and shows all its columns without a
horizontal scroll bar. The Run page's first visit says what it is loading. Screenshots land in ``test-artifacts/browser/``. Needs Debian's
chromium, like ``test_browser``.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from test_browser import (  # noqa: F401  (chromium, browser: fixtures)
    browser, chromium, open_page, screenshot, serve, session_page,
)

pytestmark = pytest.mark.browser

WIDTHS = (900, 1400)
MIN_THUMBNAIL_PX = 96

# For each image caption, the characters on either side of every line break: a line ends
# where the next character's box starts lower down.
CAPTION_BREAKS_JS = """
captions => captions.map(caption => {
  const walker = document.createTreeWalker(caption, NodeFilter.SHOW_TEXT);
  const chars = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (let i = 0; i < node.textContent.length; i++) {
      const range = document.createRange();
      range.setStart(node, i);
      range.setEnd(node, i + 1);
      const rect = range.getClientRects()[0];
      if (rect && rect.width > 0) chars.push({c: node.textContent[i], top: rect.top});
    }
  }
  const breaks = [];
  for (let i = 1; i < chars.length; i++) {
    if (chars[i].top > chars[i - 1].top + 2) breaks.push([chars[i - 1].c, chars[i].c]);
  }
  return {text: caption.textContent, breaks: breaks};
})
"""
SEPARATORS = set("/_-\\ \u200b·")


@pytest.fixture(scope="module")
def server(chromium: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    root = tmp_path_factory.mktemp("demo_server")
    (root / "no_runs").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_DATA_HOME", str(root / "user_data"))  # no bundles imported by this user
        with serve(root / "no_runs", root / "results", root) as url:
            yield url


def break_is_at_a_separator(before: str, after: str) -> bool:
    return before in SEPARATORS or after in SEPARATORS or (before == "." and after.isalpha())


def test_run_page_says_what_it_loads_on_its_first_visit(browser, server: str) -> None:  # noqa: F811
    """The server has not imported torch yet (warm-up leaves the Run page out): the page says
    what it waits for while the import runs, then shows its form."""
    pages = session_page(browser, server, {"width": 1400, "height": 1000})
    page = next(pages)
    page.goto("/Run")
    page.get_by_text("Loading PyTorch and the dissection engine", exact=False).wait_for(timeout=60_000)
    page.get_by_role("tab", name="New dissection").wait_for(timeout=120_000)
    assert page.get_by_text("Loading PyTorch", exact=False).count() == 0
    next(pages, None)


@pytest.mark.parametrize("width", WIDTHS)
def test_unit_explorer_reads_at_900_and_1400_px(browser, server: str, width: int) -> None:  # noqa: F811
    pages = session_page(browser, server, {"width": width, "height": 1000})
    page = next(pages)
    open_page(page, "/Unit_explorer", "Unit explorer")
    main = page.get_by_test_id("stMain")

    images = main.get_by_role("tabpanel").first.locator("[data-testid='stImage'] img")
    assert images.count() == 10
    page.wait_for_function("() => Array.from(document.querySelectorAll(\"[data-testid='stImage'] img\"))"
                           ".every(img => img.complete && img.naturalWidth > 0)")
    widths = [box["width"] for box in (image.bounding_box() for image in images.all()) if box]
    assert len(widths) == 10 and min(widths) >= MIN_THUMBNAIL_PX, widths

    captions = main.get_by_role("tabpanel").first.get_by_test_id("stImageCaption")
    assert captions.count() == 10
    for caption in captions.first.evaluate_all(CAPTION_BREAKS_JS):
        inside_words = [pair for pair in caption["breaks"] if not break_is_at_a_separator(*pair)]
        assert not inside_words, f"{width} px: caption {caption['text']!r} breaks inside a word at {inside_words}"

    main_width = page.get_by_test_id("stMainBlockContainer").evaluate(
        "e => e.clientWidth - parseFloat(getComputedStyle(e).paddingLeft) - parseFloat(getComputedStyle(e).paddingRight)")
    concepts = main.get_by_test_id("stDataFrame").first
    concepts.scroll_into_view_if_needed()
    box = concepts.bounding_box()
    assert box["width"] >= 0.95 * main_width and box["x"] + box["width"] <= width + 1, (box, main_width)
    overflow = concepts.evaluate(
        "e => { const s = e.querySelector('.dvn-scroller'); return s ? s.scrollWidth - s.clientWidth : 0; }")
    assert overflow <= 1, f"{width} px: the top-concepts table scrolls sideways by {overflow} px"

    screenshot(page, f"unit_explorer_{width}px.png")
    next(pages, None)  # closes the context; fails on JavaScript errors in the page

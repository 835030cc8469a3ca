"""Real-browser check that every chart reads with two, four and eight models, in a
900 px and a 1400 px window.

Eight reference-format runs (four layers each) are served with ``--results``; the test
picks two, then four, then all eight in the sidebar and opens the Overview, Shared
concepts and Model differences at each count. On every page, every chart drawn must
keep its text readable: no two texts (value labels, axis labels, titles, legend) overlap,
none reaches past the chart's or the page's edge, none is shortened with "…", each value
label sits beside its own bar, and the Overview's distinct-concepts chart prints one
value label per model and layer. At eight
models the Overview's cards must show their numbers whole (no "8.." cut) and its tables
keep their columns readable. The Unit explorer's quality scatter is checked the same way
on the built-in demo. Full-page screenshots land in ``test-artifacts/browser/``.
Needs Debian's chromium, like ``test_browser``.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from test_app_pages import write_run
from test_browser import (  # noqa: F401  (chromium, browser: fixtures)
    CHROMIUM_ARGS, after_rerun, browser, chromium, expect, open_page, screenshot, serve, session_page,
    sidebar_multiselect,
)

pytestmark = pytest.mark.browser

WIDTHS = (900, 1400)
MODEL_COUNTS = (2, 4, 8)
MODELS = ("resnet18", "resnet18_places", "resnet50", "alexnet", "vgg16", "densenet161", "vit_b_16",
          "convnext_tiny")
LAYERS = ("layer1", "layer2", "layer3", "layer4")
PAGES = (("Overview", "overview"), ("Shared concepts", "shared_concepts"), ("Model differences", "model_differences"))
MIN_CHART_HEIGHT = 150  # px: a chart squeezed to nothing (the old failure) is far below it


def rows_for(index: int) -> list[tuple[str, str, list[int]]]:
    """Four layers of 64·2^k units, with concept names long enough to wrap, different per
    model. The last layer has 100 to 310 distinct concepts (three-digit value labels, as
    real runs have), the others 8 to 16, each labelling at least four units."""
    rows = []
    for depth, layer in enumerate(LAYERS):
        units = list(range(64 * 2 ** depth))
        count = 100 + 30 * index if depth == len(LAYERS) - 1 else 8 + depth * 4
        concepts = [f"concept {index}-{depth}-{k}" for k in range(count)]
        for k, concept in enumerate(concepts):
            rows.append((layer, concept, units[k::len(concepts)]))
    return rows


@pytest.fixture(scope="module")
def server(chromium: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("eight_models")
    for index, model in enumerate(MODELS):
        write_run(root / "cli_results" / f"{model}_26_01_01_00_0{index}", model, rows_for(index))
    with serve(root / "cli_results", root / "results", root) as url:
        yield url


def pick_models(page, models: tuple[str, ...], picked: int) -> None:
    """Add ``models`` in the sidebar to the ``picked`` ones already there."""
    picker = sidebar_multiselect(page, "Models")
    for count, model in enumerate(models, start=picked + 1):
        picker.get_by_role("combobox").fill(f"{model} ·")
        page.get_by_role("option", name=f"{model} · layer1–layer4 · broden · 20k", exact=True).click()
        after_rerun(page, lambda: expect(page.get_by_test_id("stMetric")).to_have_count(2 * count))
    page.keyboard.press("Escape")


def go_to(page, title: str) -> None:
    """Open a page through the sidebar (in the same session), unless it is open."""
    heading = page.get_by_role("heading", name=title, exact=True)
    if heading.count() == 0:
        page.get_by_test_id("stSidebar").get_by_role("link", name=title).click()
        after_rerun(page, lambda: expect(heading).to_be_visible())


# Every visible text of each drawn chart (Streamlit draws Vega as SVG up to 2,000 data
# points a dataset), with its box on the page, and the box each must stay inside: the
# chart's element cut by the page's content column.
CHART_TEXTS_JS = """
main => Array.from(main.querySelectorAll("[data-testid='stVegaLiteChart']"))
  .filter(chart => chart.checkVisibility())
  .map(chart => {
    const column = main.querySelector("[data-testid='stMainBlockContainer']").getBoundingClientRect();
    const own = chart.getBoundingClientRect();
    const svg = chart.querySelector('svg.marks');
    const box = r => ({left: r.left, right: r.right, top: r.top, bottom: r.bottom});
    const shown = t => t.textContent.trim() && t.getClientRects().length &&
      [t, ...Array.from(t.querySelectorAll('*'))].every(n => parseFloat(getComputedStyle(n).opacity) > 0);
    return {
      svg: Boolean(svg),
      title: (chart.querySelector('.role-title-text') || {}).textContent || '',
      bounds: {left: Math.max(own.left, column.left), right: Math.min(own.right, column.right),
               top: own.top, bottom: own.bottom},
      height: own.height,
      texts: svg ? Array.from(svg.querySelectorAll('text')).filter(shown).map(t => ({
        text: t.textContent, value: Boolean(t.closest('g.role-mark')), ...box(t.getBoundingClientRect()),
      })) : [],
      bars: svg ? Array.from(svg.querySelectorAll('g.mark-rect.role-mark path')).map(
        b => box(b.getBoundingClientRect())) : [],
    };
  })
"""
SLACK = 1.0  # px: rounding of text boxes
# px: a text's box (its font's full height) may reach this far past the edge of the chart
# while its glyphs stay whole; a value label cut at the edge reaches far further.
EDGE_SLACK = 4.0


# A text's box is its font's full height (about 1.35 em), so the boxes of lines set one
# under the other (legend entries) may share a pixel or two with no glyph touching; two
# texts overlap when their boxes share more than this part of the lower one's height.
LINE_OVERLAP = 0.25


def _overlap(a: dict, b: dict) -> bool:
    height = min(a["bottom"] - a["top"], b["bottom"] - b["top"])
    return (min(a["right"], b["right"]) - max(a["left"], b["left"]) > SLACK
            and min(a["bottom"], b["bottom"]) - max(a["top"], b["top"]) > LINE_OVERLAP * height)


def unreadable_texts(chart: dict) -> list[str]:
    """What keeps a chart's text from being read: texts over each other, texts past
    the chart's or the page's edge, texts shortened with an ellipsis."""
    problems = []
    texts, bounds = chart["texts"], chart["bounds"]
    for i, a in enumerate(texts):
        for b in texts[i + 1:]:
            if _overlap(a, b):
                problems.append(f"{a['text']!r} overlaps {b['text']!r}")
        if (a["left"] < bounds["left"] - EDGE_SLACK or a["right"] > bounds["right"] + EDGE_SLACK
                or a["top"] < bounds["top"] - EDGE_SLACK or a["bottom"] > bounds["bottom"] + EDGE_SLACK):
            problems.append(f"{a['text']!r} cut at the edge ({a} outside {bounds})")
        if a["text"].rstrip().endswith("…"):
            problems.append(f"{a['text']!r} shortened")
    # Value labels, one per bar in the same (data) order: each beside its own bar's end.
    values = [text for text in texts if text["value"]]
    if values and len(values) == len(chart["bars"]):
        for label, bar in zip(values, chart["bars"]):
            middle = (label["top"] + label["bottom"]) / 2
            if not (bar["top"] <= middle <= bar["bottom"] and label["left"] >= bar["right"] - SLACK):
                problems.append(f"value label {label['text']!r} not beside its bar ({label} against {bar})")
    return problems


def check_charts(page, where: str) -> list[dict]:
    """Assert every drawn chart on the page is readable; returns the charts' texts."""
    main = page.get_by_test_id("stMain")
    found = []
    for chart in main.get_by_test_id("stVegaLiteChart").all():
        if chart.is_visible():
            chart.scroll_into_view_if_needed()  # charts below the window draw when scrolled to
    page.wait_for_timeout(300)
    for chart in main.evaluate(CHART_TEXTS_JS):
        label = f"{where}, chart {chart['title']!r}"
        assert chart["svg"], f"{label}: drawn on a canvas, so its texts cannot be checked"
        assert chart["height"] >= MIN_CHART_HEIGHT, f"{label}: {chart['height']} px high"
        assert chart["texts"], f"{label}: no text drawn"
        problems = unreadable_texts(chart)
        assert not problems, f"{label}: " + "; ".join(problems[:10])
        found.append(chart)
    assert found, f"{where}: no chart drawn"
    return found


def check_overview_layout(page, width: int) -> None:
    """Cards, charts and tables of the Overview with eight models fit the window."""
    main = page.get_by_test_id("stMain")
    assert main.get_by_test_id("stMetric").count() == 2 * len(MODELS)
    # Cards: every number and label whole: no element in a metric overflows its box (an
    # ellipsis, "8..", is an overflow cut by CSS).
    for metric in main.get_by_test_id("stMetric").all():
        cut = metric.evaluate(
            "e => [e, ...e.querySelectorAll('*')].filter(n => n.scrollWidth > n.clientWidth + 1)"
            ".map(n => n.innerText)")
        assert not cut, f"cut in a card: {cut}"
    # Tables: each across the page's whole width (not squeezed beside a chart) with the
    # model column pinned, so the other columns scroll beside the model's name.
    main_width = page.get_by_test_id("stMainBlockContainer").evaluate(
        "e => e.clientWidth - parseFloat(getComputedStyle(e).paddingLeft) - parseFloat(getComputedStyle(e).paddingRight)")
    tables = main.get_by_test_id("stDataFrame")
    assert tables.count() >= 3
    for table in tables.all():
        table.scroll_into_view_if_needed()
        box = table.bounding_box()
        assert box["width"] >= 0.95 * main_width, (box, main_width)
        assert box["x"] + box["width"] <= width + 1, box


@pytest.mark.parametrize("width", WIDTHS)
def test_overview_and_every_chart_readable_with_two_four_and_eight_models(browser, server: str,  # noqa: F811
                                                                          width: int) -> None:
    page_iter = session_page(browser, server, {"width": width, "height": 1000})
    page = next(page_iter)
    open_page(page, "/", "Overview")
    picked = 2  # the default pair, the two ResNet-18s
    for count in MODEL_COUNTS:
        go_to(page, "Overview")  # the picker counts the Overview's cards; the session keeps the models
        pick_models(page, MODELS[picked:count], picked)
        picked = count
        for title, stem in PAGES:
            go_to(page, title)
            where = f"{title}, {count} models, {width} px"
            charts = check_charts(page, where)
            if title == "Overview":
                (distinct,) = [chart for chart in charts if chart["title"] == "Distinct concepts per layer"]
                values = [text["text"] for text in distinct["texts"] if text["value"]]
                assert len(values) == count * len(LAYERS), (where, values)
                if count == len(MODELS):
                    check_overview_layout(page, width)
            screenshot(page, f"{stem}_{count}_models_{width}px.png")
    next(page_iter, None)  # closes the context; fails on JavaScript errors in the page


@pytest.fixture(scope="module")
def demo_server(chromium: Path, tmp_path_factory: pytest.TempPathFactory):
    """The app with nothing loaded: it shows the built-in demo, whose runs carry quality figures."""
    root = tmp_path_factory.mktemp("demo_only")
    (root / "cli_results").mkdir()
    with serve(root / "cli_results", root / "results", root) as url:
        yield url


@pytest.mark.parametrize("width", WIDTHS)
def test_overview_demo_unit_explorer_quality_scatter_is_readable(browser, demo_server: str,  # noqa: F811
                                                                 width: int) -> None:
    page_iter = session_page(browser, demo_server, {"width": width, "height": 1000})
    page = next(page_iter)
    open_page(page, "/Unit_explorer", "Unit explorer")
    charts = check_charts(page, f"Unit explorer (demo), {width} px")
    assert any(chart["title"].startswith("Activation vs the label") for chart in charts)
    screenshot(page, f"unit_explorer_demo_{width}px.png")
    next(page_iter, None)

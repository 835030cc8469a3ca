"""Real-browser check that the Sweep page reads with 100 runs, in a 900 px and a 1400 px window.

A sweep of 100 training checkpoints (``sweep.json`` as ``dissect sweep`` writes it, a
checkpoint every 500 steps, a few labels churning at every step, as test_app_sweep writes
them) is served with ``--results``. At each width the Sweep page must show what a user
reads: every chart drawn as SVG with its marks; no two texts overlapping, none past the
chart's or the content column's edge, none shortened ("…"; the rules of
``test_browser_overview``); each chart inside the content column, its plot at least 120 px
high; the line charts one line per run, each its own shade of one colour scale with a
gradient legend; the bars of concepts that appear or vanish wide enough to tell apart; no
sideways scrolling of the page; the sidebar's sweep picker showing the sweep folder's name
first; the table of changes showing the change and the concept beside the run's name; and
the table of every run holding all 100 rows (scrolled to the last) with a figure to sort
by in view beside the run's name. Full-page screenshots land in
``test-artifacts/browser/``. Needs Debian's chromium, like ``test_browser``.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from test_app_sweep import write_checkpoint_run, write_sweep_index
from test_browser import (  # noqa: F401  (chromium, browser: fixtures)
    browser,
    chromium,
    open_page,
    screenshot,
    serve,
    session_page,
)
from test_browser_overview import check_charts

pytestmark = pytest.mark.browser

WIDTHS = (900, 1400)
RUNS = 100
EVERY = 500  # training steps between checkpoints: five-digit steps on the axes, as real sweeps have
# px: a plot (or facet panel) holding a line or a bar per run, 100 of them, needs room to
# tell them apart; Streamlit fits the whole chart, axis titles and legend included, into
# the chart's height, and the plot gets what is left.
MIN_PLOT_PX = 120
MIN_BAR_PX = 2.0  # a narrower bar is a smear of antialiased pixels whose colour cannot be told
FIGURE_COLUMN = "Concepts"  # a figure of the run table (distinct concepts) that must be in view unscrolled

# Per drawn chart: its box and the content column's, the SVG's width, the line marks'
# strokes, the bars' widths and which kinds of legend it draws.
CHART_MARKS_JS = """
main => {
  const column = main.querySelector("[data-testid='stMainBlockContainer']").getBoundingClientRect();
  return Array.from(main.querySelectorAll("[data-testid='stVegaLiteChart']")).map(chart => {
    const own = chart.getBoundingClientRect();
    const svg = chart.querySelector('svg.marks');
    return {
      left: own.left, right: own.right, column_left: column.left, column_right: column.right,
      svg_width: svg ? svg.getBoundingClientRect().width : 0,
      // the plot's (each facet panel's) height, as its axes' grid lines span it, or as its
      // rectangles do (the units' labels: a grid of cells, no grid lines)
      plot_height: Math.max(0, ...Array.from(chart.querySelectorAll('.role-axis-grid')).map(
        g => g.getBoundingClientRect().height), (rects => rects.length ?
          Math.max(...rects.map(r => r.bottom)) - Math.min(...rects.map(r => r.top)) : 0)(
          Array.from(chart.querySelectorAll('g.mark-rect.role-mark path')).map(b => b.getBoundingClientRect()))),
      lines: Array.from(chart.querySelectorAll('g.mark-line path')).map(p => p.getAttribute('stroke')),
      bars: Array.from(chart.querySelectorAll('g.mark-rect.role-mark path')).map(b => b.getBoundingClientRect().width),
      gradient_legend: chart.querySelectorAll('.role-legend-gradient').length > 0,
      symbol_legend_entries: chart.querySelectorAll('.role-legend-symbol path').length,
    };
  });
}
"""


@pytest.fixture(scope="module")
def server(chromium: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    root = tmp_path_factory.mktemp("sweep_of_100")
    for n in range(RUNS):
        write_checkpoint_run(root / "sweep" / f"step_{n:03d}", n, churn=True)
    write_sweep_index(root / "sweep", list(range(RUNS)), every=EVERY)
    with serve(root / "sweep", root / "results", root) as url:
        yield url


def check_sweep_picker(page, where: str) -> None:
    """The sidebar's sweep picker shows the sweep folder's name where it is read first: a
    long path is cut at its end."""
    picker = page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").filter(
        has=page.get_by_test_id("stWidgetLabel").get_by_text("Sweep", exact=True))
    shown = picker.get_by_role("combobox").input_value()
    assert shown.startswith("sweep "), f"{where}: the sweep picker shows {shown!r}"


def check_marks(page, where: str) -> None:
    """Each chart inside the content column; lines told apart by colour; bars wide enough."""
    charts = page.get_by_test_id("stMain").evaluate(CHART_MARKS_JS)
    for index, chart in enumerate(charts):
        label = f"{where}, chart {index + 1}"
        assert chart["svg_width"] > 0, f"{label}: nothing drawn"
        assert chart["left"] >= chart["column_left"] - 1 and chart["right"] <= chart["column_right"] + 1, (
            f"{label}: reaches past the content column ({chart['left']:.0f}–{chart['right']:.0f} px, "
            f"column {chart['column_left']:.0f}–{chart['column_right']:.0f} px)")
        assert chart["svg_width"] <= chart["right"] - chart["left"] + 1, (
            f"{label}: drawn {chart['svg_width']:.0f} px wide in a {chart['right'] - chart['left']:.0f} px box")
        assert chart["plot_height"] >= MIN_PLOT_PX, (
            f"{label}: a plot {chart['plot_height']:.0f} px high, for {RUNS} runs")
        if chart["lines"]:
            # One line per run (the category chart: per run and category panel), each run
            # its own shade, and one gradient legend for the scale, not a legend entry per shade.
            assert len(chart["lines"]) >= RUNS, f"{label}: {len(chart['lines'])} lines"
            assert len(set(chart["lines"])) >= 0.9 * RUNS, f"{label}: {len(set(chart['lines']))} colours"
            assert chart["gradient_legend"] and not chart["symbol_legend_entries"], (
                f"{label}: the runs' colour scale has {chart['symbol_legend_entries']} legend entries, "
                "not a gradient")
        if chart["bars"]:
            narrow = [width for width in chart["bars"] if width < MIN_BAR_PX]
            assert not narrow, (f"{label}: {len(narrow)} of {len(chart['bars'])} bars narrower than "
                                f"{MIN_BAR_PX} px (narrowest {min(narrow):.1f} px)")
    assert sum(bool(chart["lines"]) for chart in charts) == 2, where
    # The units' labels along the sweep (a cell per unit and run) and the concepts that appear or vanish.
    assert sum(bool(chart["bars"]) for chart in charts) == 2, where


def check_no_sideways_scroll(page, where: str) -> None:
    """Neither the document nor Streamlit's main area (which scrolls the page) scrolls sideways."""
    widths = page.evaluate("""() => {
        const main = document.querySelector("[data-testid='stMain']");
        return {page: document.documentElement.scrollWidth, window: innerWidth,
                main: main.scrollWidth, main_view: main.clientWidth};
    }""")
    assert widths["page"] <= widths["window"], f"{where}: the page scrolls sideways {widths}"
    assert widths["main"] <= widths["main_view"], f"{where}: the main area scrolls sideways {widths}"


def columns_in_view(table) -> tuple:
    """(the table's accessible grid, the headers of the columns wholly in view), the table
    scrolled into view. Glide draws the table on a canvas; its hidden grid (hence not
    get_by_role) lists the columns and rows at least partly in view. Columns are listed
    left to right, so all but the last listed are whole; the last too where the table does
    not scroll sideways."""
    table.scroll_into_view_if_needed()
    grid = table.locator("table[role='grid']")
    grid.wait_for(state="attached")
    headers = grid.locator("th").all_text_contents()
    scrolls = table.evaluate(
        "t => { const s = t.querySelector('.dvn-scroller'); return s.scrollWidth > s.clientWidth; }")
    return grid, headers[:-1] if scrolls else headers


def check_changes_table(page, where: str) -> None:
    """Beside each run's name, what changed and which concept, without scrolling the table."""
    table = page.get_by_test_id("stMain").get_by_test_id("stDataFrame").first  # the page's first table
    _, headers = columns_in_view(table)
    assert {"Model", "Change", "Concept"} <= set(headers), f"{where}: columns of the changes wholly in view {headers}"


def check_run_table(page, where: str) -> None:
    """All runs in the table, the last reached by scrolling it; a figure in view beside the names."""
    table = page.locator(".st-key-sweep_table").get_by_test_id("stDataFrame")  # Streamlit's class for the key
    grid, headers = columns_in_view(table)
    assert "Run" in headers and FIGURE_COLUMN in headers, f"{where}: columns of the runs wholly in view {headers}"
    assert grid.get_attribute("aria-rowcount") == str(RUNS + 1), where  # the header row and the runs
    table.evaluate("t => { const s = t.querySelector('.dvn-scroller'); s.scrollTop = s.scrollHeight; }")
    last = grid.locator("tr", has_text=f"step_{RUNS - 1:03d}.pth")
    last.wait_for(state="attached", timeout=10_000)
    assert last.get_attribute("aria-rowindex") == str(RUNS + 1), where
    table.evaluate("t => { t.querySelector('.dvn-scroller').scrollTop = 0; }")


@pytest.mark.parametrize("width", WIDTHS)
def test_sweep_of_a_hundred_runs_reads(browser, server: str, width: int) -> None:  # noqa: F811
    page_iter = session_page(browser, server, {"width": width, "height": 1000})
    page = next(page_iter)
    open_page(page, "/Sweep", "Sweep")
    main = page.get_by_test_id("stMain")
    assert main.get_by_text(f"{RUNS} runs, in sweep order.").count() == 1
    where = f"Sweep, {RUNS} runs, {width} px"
    try:
        charts = check_charts(page, where)  # also scrolls every chart into view, so all are drawn
        assert len(charts) == 4, where
        check_marks(page, where)
        check_no_sideways_scroll(page, where)
        check_sweep_picker(page, where)
        check_changes_table(page, where)
        check_run_table(page, where)
    finally:  # the screenshot shows what failed, too
        screenshot(page, f"sweep_{RUNS}_runs_{width}px.png")
    next(page_iter, None)  # closes the context; fails on JavaScript errors in the page

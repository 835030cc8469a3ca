"""Real-browser check of the Overview with eight models in a 900 px wide window.

Eight reference-format runs (four layers each) are served with ``--results`` and all
eight are picked in the sidebar. At 900 px the cards must show their numbers whole (no
"8.." cut), every chart must have a drawn height, and the tables must keep their
columns readable. A full-page screenshot lands in ``test-artifacts/browser/``.
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

WINDOW = {"width": 900, "height": 1000}
MODELS = ("resnet18", "resnet18_places", "resnet50", "alexnet", "vgg16", "densenet161", "vit_b_16",
          "convnext_tiny")
LAYERS = ("layer1", "layer2", "layer3", "layer4")
MIN_CHART_HEIGHT = 150  # px: a chart squeezed to nothing (the old failure) is far below it


def rows_for(index: int) -> list[tuple[str, str, list[int]]]:
    """Four layers of 64·2^k units, with concept names long enough to wrap, different per model."""
    rows = []
    for depth, layer in enumerate(LAYERS):
        units = list(range(64 * 2 ** depth))
        concepts = [f"concept {index}-{depth}-{k}" for k in range(8 + depth * 4)]
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


@pytest.fixture
def page(browser, server: str):  # noqa: F811
    yield from session_page(browser, server, WINDOW)


def pick_all_models(page) -> None:
    """Add the six models besides the default pair (the two ResNet-18s) in the sidebar."""
    picker = sidebar_multiselect(page, "Models")
    for picked, model in enumerate(MODELS[2:], start=3):
        picker.get_by_role("combobox").fill(f"{model} ·")
        page.get_by_role("option", name=f"{model} · layer1–layer4 · broden · 20k", exact=True).click()
        after_rerun(page, lambda: expect(page.get_by_test_id("stMetric")).to_have_count(2 * picked))
    page.keyboard.press("Escape")


def test_overview_with_eight_models_is_readable_at_900_px(page) -> None:
    open_page(page, "/", "Overview")
    pick_all_models(page)
    main = page.get_by_test_id("stMain")
    assert main.get_by_test_id("stMetric").count() == 2 * len(MODELS)

    # Cards: every number and label whole: no element in a metric overflows its box (an
    # ellipsis, "8..", is an overflow cut by CSS).
    for metric in main.get_by_test_id("stMetric").all():
        cut = metric.evaluate(
            "e => [e, ...e.querySelectorAll('*')].filter(n => n.scrollWidth > n.clientWidth + 1)"
            ".map(n => n.innerText)")
        assert not cut, f"cut in a card: {cut}"

    # Charts: each drawn, with a real height, inside the window's width.
    charts = main.get_by_test_id("stVegaLiteChart")
    assert charts.count() == 3
    for chart in charts.all():
        chart.scroll_into_view_if_needed()
        box = chart.bounding_box()
        assert box["height"] >= MIN_CHART_HEIGHT, box
        assert box["x"] + box["width"] <= WINDOW["width"] + 1, box

    # Tables: each across the page's whole width (not squeezed beside a chart) with the
    # model column pinned, so the other columns scroll beside the model's name.
    path = screenshot(page, "overview_eight_models_900px.png")
    main_width = page.get_by_test_id("stMainBlockContainer").evaluate(
        "e => e.clientWidth - parseFloat(getComputedStyle(e).paddingLeft) - parseFloat(getComputedStyle(e).paddingRight)")
    tables = main.get_by_test_id("stDataFrame")
    assert tables.count() >= 3
    for table in tables.all():
        table.scroll_into_view_if_needed()
        box = table.bounding_box()
        assert box["width"] >= 0.95 * main_width, (box, main_width)
        assert box["x"] + box["width"] <= WINDOW["width"] + 1, box

    assert path.stat().st_size > 0

"""Real-browser smoke test: headless Debian Chromium (driven by Playwright) against
``dissect app`` (started by ``dissect_app.local_server``).

The server reads two generated reference-format runs (ResNet-18 ImageNet and
Places, ``--results``) and, in its result folder (``$DISSECT_RESULTS_DIR``), a run
computed by dissect_core on stand-ins, so the Unit explorer has images to show.
Each page is opened, one widget is driven, and the test checks that the script
finished without an exception box or a modal and that the expected change shows.
A full-page screenshot of each page lands in ``test-artifacts/browser/``.

Needs /usr/bin/chromium and /usr/bin/chromedriver (``apt-get install chromium
chromium-driver``); skipped without them, except under ``CI=true``, where it fails.
Playwright never downloads a browser here: ``executable_path`` points at Debian's.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the chromium fixture skips (or, under CI, fails) with the reason
    expect = None

import dissect_app
from dissect_app.local_server import local_server
from dissect_core.runs.run import Run
from dissect_core.runs.run_folders import load_run
from test_app_pages import IMAGENET, IMAGENET_ROWS, PLACES, PLACES_ROWS, write_run

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--mute-audio",
]
VIEWPORT = {"width": 1400, "height": 1000}
SCRIPT_TIMEOUT_MS = 60_000  # a script run; the first one on a page may import torch


def _require(condition: bool, reason: str) -> None:
    """Skip when ``condition`` fails, or fail under CI, where .ci/run installs the browser."""
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: .ci/run should have installed it)")
    pytest.skip(reason)


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")  # session scope: checked before conftest's session-scoped computed_run
def chromium() -> Path:
    _require(CHROMIUM.exists() and CHROMEDRIVER.exists(),
             "/usr/bin/chromium or /usr/bin/chromedriver is missing (apt-get install chromium chromium-driver)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _require(False, "the playwright package is not installed")
    return CHROMIUM


@pytest.fixture(scope="module")
def run_folders(chromium: Path, computed_run: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Run]:
    """(``--results`` folder, result folder, the computed run).

    The ``--results`` folder holds the two ResNet-18 runs of test_app_pages in the
    reference format (labels only); the result folder is conftest's ``computed_run``,
    which dissect_core computed on stand-ins (random Places365-layout ResNet-18, tiny
    random CLIP, synthetic probe images), so the Unit explorer draws images and heatmaps.
    """
    cli_results = tmp_path_factory.mktemp("browser") / "cli_results"
    write_run(cli_results / "resnet18_25_07_16_18_08", "resnet18", IMAGENET_ROWS)
    write_run(cli_results / "resnet18_places_25_07_16_17_57", "resnet18_places", PLACES_ROWS)
    return cli_results, computed_run["results"], load_run(computed_run["run_dir"])


@pytest.fixture(scope="module")
def server(run_folders: tuple[Path, Path, Run], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of ``dissect app`` on a free 127.0.0.1 port; stopped afterwards."""
    cli_results, computed, _ = run_folders
    with serve(cli_results, computed, tmp_path_factory.mktemp("server")) as url:
        yield url


@contextlib.contextmanager
def serve(cli_results: Path, computed: Path, scratch: Path) -> Iterator[str]:
    """Run the app with ``--results cli_results`` and ``computed`` as its result folder;
    yields the base URL once the server is healthy."""
    # The computed run is only read; anything the app would compute goes to scratch.
    env = {**os.environ, dissect_app.RESULTS_ENV: str(computed), dissect_app.CACHE_ENV: str(scratch / "cache")}
    with local_server(results=[cli_results], cwd=REPO, env=env) as running:
        yield running.url


@pytest.fixture(scope="module")
def browser(chromium: Path):
    from playwright.sync_api import sync_playwright

    expect.set_options(timeout=SCRIPT_TIMEOUT_MS)  # a rerun may wait for torch or a model load
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def session_page(browser, server: str, viewport: dict) -> Iterator:
    """A page in a fresh browser context (a new Streamlit session); only 127.0.0.1 is
    reachable, and a JavaScript error in the page fails the test."""
    context = browser.new_context(viewport=viewport, base_url=server)
    context.route(lambda url: not url.startswith("http://127.0.0.1:"), lambda route: route.abort())
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


@pytest.fixture
def page(browser, server: str):
    """A fresh session at 1400x1000."""
    yield from session_page(browser, server, VIEWPORT)


# --------------------------------------------------------------------------- helpers

def wait_for_app_run(page, initial_wait_ms: int = 210) -> None:
    """Wait until the app is connected, its script has finished (Streamlit's own e2e
    helper) and the lazily loaded elements (dataframes, charts) have replaced their
    grey skeleton placeholders."""
    page.wait_for_timeout(initial_wait_ms)
    page.locator("[data-testid='stApp'][data-test-connection-state='CONNECTED']").wait_for(
        state="attached", timeout=SCRIPT_TIMEOUT_MS)
    page.locator("[data-testid='stApp'][data-test-script-state='notRunning']").wait_for(
        state="attached", timeout=SCRIPT_TIMEOUT_MS)
    # Skeletons gone, and every visible Vega chart (not those in hidden tabs) has drawn its
    # marks: a chart drawn late moves everything below it, and a click aimed before the
    # move lands elsewhere.
    page.wait_for_function(
        """() => !document.querySelector("[data-testid='stSkeleton']") && Array.from(
            document.querySelectorAll("[data-testid='stVegaLiteChart']")).every(
                c => !c.checkVisibility() || c.querySelector('.marks'))""",
        timeout=SCRIPT_TIMEOUT_MS)


def open_page(page, path: str, title: str) -> None:
    """Go to ``path`` and wait for its script run to finish.

    On a cold page the script state reads "notRunning" before the first run starts,
    so the page's title (drawn by that run) is awaited before the run's end.
    """
    page.goto(path)
    page.get_by_role("heading", name=title, exact=True).wait_for(timeout=SCRIPT_TIMEOUT_MS)
    wait_for_app_run(page)
    assert_healthy(page)


def assert_healthy(page) -> None:
    """No Streamlit exception box and no modal dialog on the page."""
    exceptions = page.get_by_test_id("stException")
    assert exceptions.count() == 0, exceptions.all_inner_texts()
    assert page.get_by_role("dialog").count() == 0, page.get_by_role("dialog").all_inner_texts()


def metrics(page) -> list[tuple[str, str]]:
    """(label, value) of every st.metric on the page, in page order."""
    return [(m.get_by_test_id("stMetricLabel").inner_text().strip(),
             m.get_by_test_id("stMetricValue").inner_text().strip())
            for m in page.get_by_test_id("stMetric").all()]


def after_rerun(page, *expectations) -> None:
    """Let the rerun a widget started finish: wait for its visible outcome first (the
    script may not have started yet when the widget returns), then for the run's end."""
    for expectation in expectations:
        expectation()
    wait_for_app_run(page)
    assert_healthy(page)


def choose(page, widget, option: str, *expectations) -> None:
    """Pick ``option`` in a selectbox (a react-aria ComboBox in Streamlit 1.67): typing
    filters the list and opens it, then the option is clicked. (``fill`` alone sets the
    text without opening the list.)"""
    box = widget.get_by_role("combobox")
    box.fill("")
    box.press_sequentially(option)
    page.get_by_role("option", name=option, exact=True).click()
    after_rerun(page, *expectations)


def sidebar_multiselect(page, label: str):
    return page.get_by_test_id("stSidebar").get_by_test_id("stMultiSelect").filter(
        has=page.get_by_test_id("stWidgetLabel").get_by_text(label, exact=True))


def screenshot(page, name: str) -> Path:
    """A screenshot of the whole page. Streamlit scrolls inside its main block, so the
    viewport is grown to the content's height first (Playwright's full_page alone
    would stop at the window)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    height = page.evaluate(
        "() => Math.max(document.body.scrollHeight, ...Array.from(document.querySelectorAll("
        "\"[data-testid='stMain'], [data-testid='stAppScrollToBottomContainer'], [data-testid='stSidebarContent']\""
        ")).map(e => e.scrollHeight))")
    window = dict(page.viewport_size)
    page.set_viewport_size({"width": window["width"], "height": min(max(height + 40, window["height"]), 9000)})
    page.wait_for_timeout(600)  # relayout, and let Vega finish drawing charts
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(window)
    return path


# --------------------------------------------------------------------------- pages

def test_overview_deselecting_a_layer_updates_the_unit_counts(page) -> None:
    open_page(page, "/", "Overview")
    # The default pair (ImageNet, Places); the computed run is loaded but not picked.
    assert metrics(page) == [("Units", "14"), ("Distinct concepts overall", "6"),
                             ("Units", "18"), ("Distinct concepts overall", "6")]
    # Distinct concepts, similarity, and the concept-category mix.
    assert page.get_by_test_id("stVegaLiteChart").count() == 3

    sidebar_multiselect(page, "Layers").get_by_role("button", name="Remove layer3").click()
    # ImageNet keeps layer2 (8 units, 4 concepts); Places layer2 + layer4 (12 units, 4 concepts).
    after_rerun(page, lambda: expect(page.get_by_test_id("stMetricValue")).to_have_text(["8", "4", "12", "4"]))
    assert metrics(page) == [("Units", "8"), ("Distinct concepts overall", "4"),
                             ("Units", "12"), ("Distinct concepts overall", "4")]
    screenshot(page, "01_overview.png")

    # The layer choice survives navigation through the sidebar.
    page.get_by_test_id("stSidebar").get_by_role("link", name="Shared concepts").click()
    after_rerun(page, lambda: expect(page.get_by_role("heading", name="Shared concepts", exact=True)).to_be_visible())
    assert page.get_by_role("heading", name="Layer layer3").count() == 0
    assert page.get_by_role("heading", name="Layer layer4").count() == 1


def test_shared_concepts_slider_lowers_the_threshold(page) -> None:
    open_page(page, "/Shared_concepts", "Shared concepts")
    main = page.get_by_test_id("stMain")
    # At N >= 4, ImageNet's layer3 (most shared: grid, 3 units) has no concept to show.
    assert main.get_by_text(f"{IMAGENET}: no concept labels 4 or more units here.").count() == 1
    charts_before = main.get_by_test_id("stVegaLiteChart").count()

    slider = main.get_by_role("slider")  # react-aria: a hidden <input type=range> under the thumb
    assert slider.input_value() == "4"
    assert main.get_by_test_id("stSliderThumbValue").inner_text() == "4"
    slider.focus()
    slider.press("ArrowLeft")
    after_rerun(page, lambda: expect(main.get_by_text("no concept labels")).to_have_count(0),
                lambda: expect(main.get_by_test_id("stVegaLiteChart")).to_have_count(charts_before + 1))
    assert slider.input_value() == "3"
    assert main.get_by_test_id("stSliderThumbValue").inner_text() == "3"
    assert main.get_by_text("no concept labels").count() == 0
    assert main.get_by_test_id("stVegaLiteChart").count() == charts_before + 1
    screenshot(page, "02_shared_concepts.png")


def test_model_differences_choosing_a_concept_lists_its_units(page) -> None:
    open_page(page, "/Model_differences", "Model differences")
    main = page.get_by_test_id("stMain")
    # Layers both models have: layer2 and layer3 (tabs); Places' layer4 is left out.
    assert main.get_by_role("tab").all_inner_texts() == ["layer2", "layer3"]

    concept = main.get_by_test_id("stSelectbox").filter(
        has=page.get_by_test_id("stWidgetLabel").get_by_text("Concept", exact=True))
    choose(page, concept, "stripe", lambda: expect(main.get_by_text(f"{IMAGENET}: 2 unit(s)")).to_have_count(1))
    # stripe: ImageNet layer2 units 4 and 5; Places layer2 unit 7.
    assert main.get_by_text(f"{IMAGENET}: 2 unit(s)").count() == 1
    assert main.get_by_text(f"{PLACES}: 1 unit(s)").count() == 1
    assert main.get_by_role("link", name="Open the best unit (layer2, unit 5, similarity 0.150)").count() == 1
    assert main.get_by_role("link", name="Open the best unit (layer2, unit 7, similarity 0.170)").count() == 1
    screenshot(page, "03_model_differences.png")


def concept_of(run: Run, layer: str, unit: int) -> str:
    rows = run.descriptions
    return str(rows[(rows["layer"] == layer) & (rows["unit"] == unit)]["description"].iloc[0])


def loaded_images(locator) -> int:
    """How many of the <img> elements under ``locator`` have finished loading real pixels."""
    return locator.locator("img").evaluate_all("imgs => imgs.filter(i => i.complete && i.naturalWidth > 0).length")


def test_unit_explorer_deep_link_shows_images_and_next_moves_on(page, run_folders) -> None:
    run = run_folders[2]
    # Opened cold, in a new session, straight from the link other pages write.
    open_page(page, "/" + dissect_app.unit_link_url(run.label, "layer4", 3), "Unit explorer")
    main = page.get_by_test_id("stMain")
    heading = f"layer4 · unit 3: {concept_of(run, 'layer4', 3)}"
    assert main.get_by_role("heading", name=heading, exact=True).count() == 1
    assert main.get_by_role("tab").all_inner_texts() == ["Heatmaps", "Masks (top 0.5 %)", "Images"]
    heatmaps = main.get_by_role("tabpanel", name="Heatmaps")
    assert heatmaps.get_by_test_id("stImage").count() == 10  # the default 10 top images
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll(\"[data-testid='stImage'] img\")).every(i => i.complete)")
    assert loaded_images(heatmaps) == 10
    assert main.get_by_test_id("stImage").count() > 0
    sidebar = page.get_by_test_id("stSidebar")
    assert sidebar.get_by_test_id("stNumberInput").locator("input").input_value() == "3"

    sidebar.get_by_role("button", name="Next ▶").click()
    heading = f"layer4 · unit 4: {concept_of(run, 'layer4', 4)}"
    after_rerun(page, lambda: expect(main.get_by_role("heading", name=heading, exact=True)).to_have_count(1))
    assert sidebar.get_by_test_id("stNumberInput").locator("input").input_value() == "4"
    assert "unit=4" in page.url  # the URL follows, so the view can be shared
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll(\"[data-testid='stImage'] img\")).every(i => i.complete)")
    assert loaded_images(main.get_by_role("tabpanel", name="Heatmaps")) == 10
    screenshot(page, "04_unit_explorer.png")


def test_unit_explorer_deep_link_to_an_imported_csv_shows_the_label_only(page) -> None:
    open_page(page, "/" + dissect_app.unit_link_url(IMAGENET, "layer3", 3), "Unit explorer")
    main = page.get_by_test_id("stMain")
    assert main.get_by_role("heading", name="layer3 · unit 3: grid", exact=True).count() == 1
    assert main.get_by_text("No images for this run.").count() == 1
    assert main.get_by_test_id("stImage").count() == 0
    screenshot(page, "05_unit_explorer_imported.png")


def test_run_page_uploaded_concept_list_is_parsed(page) -> None:
    open_page(page, "/Run", "Run CLIP-Dissect")
    panel = page.get_by_test_id("stMain").get_by_role("tabpanel", name="New dissection")
    assert panel.get_by_text("english_20k: 20,000 concepts").count() == 1  # the standard setup

    choice = panel.get_by_test_id("stSelectbox").filter(
        has=page.get_by_test_id("stWidgetLabel").get_by_text("Concept set", exact=True))
    choose(page, choice, "upload a .txt list",
           lambda: expect(panel.get_by_test_id("stFileUploaderDropzoneInput")).to_have_count(1))
    assert panel.get_by_role("button", name="Start").is_disabled()  # no concepts yet

    panel.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(files=[{
        "name": "my_concepts.txt", "mimeType": "text/plain",
        "buffer": "dog\ncat\n\ndog\nstriped fur\n".encode(),
    }])
    caption = panel.get_by_test_id("stCaptionContainer").filter(has_text="my_concepts")
    after_rerun(page, lambda: expect(caption).to_have_count(1))
    caption = caption.inner_text()
    assert "3 concepts" in caption and "1 duplicate(s) dropped" in caption and "1 blank line(s) dropped" in caption
    assert panel.get_by_role("button", name="Start").is_enabled()
    screenshot(page, "06_run.png")


def test_hosted_mode_does_not_route_to_the_run_page(browser, tmp_path: Path) -> None:
    """On a fresh hosted server, /Run is no page (Streamlit says so and opens the Overview)
    and the sidebar does not offer it."""
    env = {**os.environ, dissect_app.RESULTS_ENV: str(tmp_path / "none")}
    with local_server(hosted=True, cwd=REPO, env=env) as server:
        page_iter = session_page(browser, server.url, VIEWPORT)
        page = next(page_iter)
        page.goto("/Run")
        page.get_by_role("heading", name="Overview", exact=True).wait_for(timeout=SCRIPT_TIMEOUT_MS)
        expect(page.get_by_text("Page not found")).to_be_visible()
        nav = page.get_by_test_id("stSidebarNav")
        expect(nav.get_by_role("link", name="Unit explorer")).to_be_visible()
        assert nav.get_by_role("link", name="Run CLIP-Dissect").count() == 0
        next(page_iter, None)  # closes the context; fails on JavaScript errors in the page

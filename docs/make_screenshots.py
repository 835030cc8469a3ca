"""Regenerate the README screenshot ``docs/screenshot_overview.png``.

Starts ``dissect app --results DIR`` on a free 127.0.0.1 port (``dissect_app.local_server``),
with DIR the two real ResNet-18 runs (ImageNet and Places365) of the reference tool,
opens the Overview in Debian's headless Chromium through Playwright (never a
downloaded browser) and saves its top (model cards, units and concepts per layer)
1400 px wide as a palette PNG.

    .venv/bin/python docs/make_screenshots.py [--results DIR] [--out PATH]

Needs /usr/bin/chromium (``apt-get install chromium``). The CSVs are read in place,
not copied into the repository.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parents[1]
REFERENCE_RUNS = Path("clip_dissect_results") / "ashishsubedi_TML25_A4_27"  # inside the reference outputs
sys.path.insert(0, str(REPO))
from dissect_app.local_server import local_server  # noqa: E402
DEFAULT_OUT = REPO / "docs" / "screenshot_overview.png"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--mute-audio",
]
WIDTH = 1400
TIMEOUT_MS = 60_000


def wait_for_app_run(page) -> None:
    """The script has finished and lazily loaded elements have replaced their skeletons."""
    page.wait_for_timeout(210)
    page.locator("[data-testid='stApp'][data-test-connection-state='CONNECTED']").wait_for(
        state="attached", timeout=TIMEOUT_MS)
    page.locator("[data-testid='stApp'][data-test-script-state='notRunning']").wait_for(
        state="attached", timeout=TIMEOUT_MS)
    page.wait_for_function("() => !document.querySelector(\"[data-testid='stSkeleton']\")", timeout=TIMEOUT_MS)


def screenshot_overview(url: str, height: int) -> bytes:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": WIDTH, "height": height})
            context.route(lambda target: not target.startswith("http://127.0.0.1:"), lambda route: route.abort())
            page = context.new_page()
            page.goto(url)
            page.get_by_role("heading", name="Overview", exact=True).wait_for(timeout=TIMEOUT_MS)
            wait_for_app_run(page)
            if page.get_by_test_id("stException").count() or page.get_by_test_id("stMetric").count() != 4:
                raise SystemExit("the Overview did not show the two runs without errors")
            page.mouse.move(0, 0)  # no hover effect in the picture
            page.wait_for_timeout(1000)  # let Vega finish drawing
            # Cards, counts table and chart: stop just above the next section.
            box = page.get_by_role("heading", name="Similarity scores per layer").bounding_box()
            bottom = min(int(box["y"]) - 12, height) if box else height
            return page.screenshot(clip={"x": 0, "y": 0, "width": WIDTH, "height": bottom})
        finally:
            browser.close()


def small_png(png: bytes) -> bytes:
    """The screenshot as a 256-colour palette PNG (UI colours survive; a fraction of the size)."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    out = io.BytesIO()
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        out, format="PNG", optimize=True)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=None,
                        help="folder with the ResNet-18 ImageNet and Places runs (descriptions.csv + args.txt); "
                        f"default: {REFERENCE_RUNS} in the reference outputs (scripts/fetch_references.py)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--height", type=int, default=1200, help="viewport height in pixels (the most shown)")
    args = parser.parse_args(argv)
    if args.results is None:
        sys.path.insert(0, str(REPO / "scripts"))
        from fetch_references import find_reference_dir, not_found_message

        reference = find_reference_dir()
        if reference is None:
            raise SystemExit(f"Pass --results DIR: {not_found_message()}.")
        args.results = reference / REFERENCE_RUNS
    if not args.results.is_dir():
        raise SystemExit(f"{args.results} not found: pass --results DIR")
    with tempfile.TemporaryDirectory() as scratch:
        # An empty result folder: only the two reference runs are offered, whatever ./results holds.
        env = {**os.environ, "DISSECT_RESULTS_DIR": str(Path(scratch) / "no_results")}
        with local_server(results=[args.results.resolve()], cwd=REPO, env=env) as server:
            png = screenshot_overview(server.url, args.height)
    data = small_png(png)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    print(f"wrote {args.out} ({len(data) / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Time to the built-in demo on a fresh app: the first script run of each page.

Each measurement starts a new Python process with Streamlit imported (as a
running server has it), no ``--results`` folder and an empty result folder, and
times the first run of a page under AppTest: importing the app's modules, reading
the demo's runs and drawing the page, demo banner included. Also reports whether
torch was imported, the CPU time of the page run (on a busy machine the wall time
exceeds it; on an idle one they meet) and the process's peak RSS.

AppTest's run also scans the installed packages for Streamlit components (about 0.5 s
here), which a real server does once at start. ``--browser`` therefore also times what a
visitor sees: a fresh ``dissect app`` server and headless Debian chromium, from the
request of the Overview (sent as soon as the server is healthy) until the demo banner
shows and until all its charts are drawn, for the server's first visitor and a second one.

Usage: ``.venv/bin/python benchmarks/bench_demo_first_page.py [--repeats 3] [--browser]``
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from dissect_app.navigation import ENTRY_SCRIPT, HOME_PAGE, PAGES, RUN_PAGE  # noqa: E402
from dissect_app.local_server import local_server  # noqa: E402

BROWSING = [page for page in PAGES if page.script != RUN_PAGE]

CHILD = r"""
import json, resource, sys, time
from streamlit.testing.v1 import AppTest

entry, home, page = sys.argv[1:4]
sys.argv = ["streamlit_app.py"]
at = AppTest.from_file(entry, default_timeout=120)
start, cpu_start = time.perf_counter(), time.process_time()
at.run()
if page != home:
    at.switch_page(page).run()
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
assert not at.exception, [e.value for e in at.exception]
assert any(info.value.startswith("**Demo.**") for info in at.info), "the demo is not shown"
print(json.dumps({"seconds": seconds, "cpu": cpu, "torch": "torch" in sys.modules,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(page: str, results_dir: str) -> dict:
    env = {"DISSECT_RESULTS_DIR": results_dir, "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", CHILD, ENTRY_SCRIPT, HOME_PAGE, page], cwd=REPO, env=env,
                         capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{page} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


CHARTS_DRAWN = ("() => Array.from(document.querySelectorAll(\"[data-testid='stVegaLiteChart']\"))"
                ".filter(c => c.querySelector('.marks')).length >= 3")


def _visit(browser, url: str) -> tuple[float, float]:
    """Seconds from requesting ``url`` in a fresh browser context (empty cache) to the demo banner,
    and to the end of the script run with all three charts drawn."""
    import time

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    start = time.perf_counter()
    page.goto(url)
    page.get_by_text("Demo.", exact=False).first.wait_for(timeout=60_000)
    banner = time.perf_counter() - start
    page.locator("[data-testid='stApp'][data-test-script-state='notRunning']").wait_for(
        state="attached", timeout=60_000)
    page.wait_for_function(CHARTS_DRAWN, timeout=60_000)
    done = time.perf_counter() - start
    context.close()
    return banner, done


def browser_visits(results_dir: str) -> dict[str, tuple[float, float]]:
    """The first and a second visitor of a fresh server, each as ``(banner s, charts s)``.

    The first request goes out as soon as the server answers its health check, so the
    server's start-up warm-up (``dissect_app.warm_up``) overlaps the browser loading the frontend,
    as when ``dissect app`` opens a newcomer's browser.
    """
    from playwright.sync_api import sync_playwright

    env = {"DISSECT_RESULTS_DIR": results_dir, "PATH": "/usr/bin:/bin", "HOME": results_dir}
    with sync_playwright() as playwright:
        # Chromium starts before the server is asked for anything: a visitor's browser is already open.
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        with local_server(cwd=REPO, env=env) as server:
            url = f"{server.url}/"
            visits = {"first": _visit(browser, url), "second": _visit(browser, url)}
        browser.close()
    return visits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--browser", action="store_true",
                        help="also time the Overview's demo in headless chromium against a fresh server")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as empty:
        print(f"{'page':32} {'best s':>7} {'all runs (s)':>24} {'CPU s':>6} {'torch':>6} {'peak RSS MB':>12}")
        for page in BROWSING:
            # The Overview alone is the first page load; the others add the Overview's run before them.
            results = [measure(page.script, str(Path(empty) / "none")) for _ in range(args.repeats)]
            times = [r["seconds"] for r in results]
            print(f"{page.title:32} {min(times):7.2f} {', '.join(f'{t:.2f}' for t in times):>24} "
                  f"{min(r['cpu'] for r in results):6.2f} "
                  f"{str(any(r['torch'] for r in results)):>6} {max(r['peak_rss_mb'] for r in results):12.0f}")
        if args.browser:
            runs = [browser_visits(str(Path(empty) / "none")) for _ in range(args.repeats)]
            print(f"\n{'Overview in chromium, fresh server':40} {'best s':>7} {'all runs (s)':>24}")
            for visitor in ("first", "second"):
                for index, what in enumerate(("demo banner", "all charts drawn")):
                    times = [run[visitor][index] for run in runs]
                    print(f"{visitor + ' visitor: ' + what:40} {min(times):7.2f} "
                          f"{', '.join(f'{t:.2f}' for t in times):>24}")


if __name__ == "__main__":
    main()

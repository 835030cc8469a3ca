"""Time to the built-in demo on a fresh app: the first script run of each page.

Each measurement starts a new Python process with Streamlit imported (as a
running server has it), no ``--results`` folder and an empty result folder, and
times the first run of a page under AppTest: importing the app's modules, reading
the demo's runs and drawing the page, demo banner included. Also reports whether
torch was imported, the CPU time of the page run (on a busy machine the wall time
exceeds it; on an idle one they meet) and the process's peak RSS.

AppTest's run also scans the installed packages for Streamlit components (about 0.5 s
here), which a real server does once at start. ``--browser`` therefore also times what a
visitor sees: a fresh ``streamlit run`` server (healthy, nothing loaded yet) and headless
Debian chromium, from the request of the Overview until its demo banner and charts are
drawn.

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
PAGES = ("overview.py", "pages/2_Shared_concepts.py", "pages/3_Model_differences.py",
         "pages/4_Unit_explorer.py")

CHILD = r"""
import json, os, resource, sys, time
from streamlit.testing.v1 import AppTest

repo, page = sys.argv[1], sys.argv[2]
sys.argv = ["streamlit_app.py"]
at = AppTest.from_file(os.path.join(repo, "overview.py"), default_timeout=120)
start, cpu_start = time.perf_counter(), time.process_time()
at.run()
if page != "overview.py":
    at.switch_page(page).run()
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
assert not at.exception, [e.value for e in at.exception]
assert any(info.value.startswith("**Demo.**") for info in at.info), "the demo is not shown"
print(json.dumps({"seconds": seconds, "cpu": cpu, "torch": "torch" in sys.modules,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(page: str, results_dir: str) -> dict:
    env = {"DISSECT_RESULTS_DIR": results_dir, "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", CHILD, str(REPO), page], cwd=REPO, env=env,
                         capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{page} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def browser_first_page(results_dir: str) -> float:
    """Seconds from requesting the Overview on a fresh server to its demo banner and charts."""
    import socket
    import time
    import urllib.request

    from playwright.sync_api import sync_playwright

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"DISSECT_RESULTS_DIR": results_dir, "PATH": "/usr/bin:/bin", "HOME": results_dir}
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(240):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                    if response.read() == b"ok":
                        break
            except OSError:
                time.sleep(0.25)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                                 args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            start = time.perf_counter()
            page.goto(f"http://127.0.0.1:{port}/")
            page.get_by_text("Demo.", exact=False).first.wait_for(timeout=60_000)
            page.locator("[data-testid='stApp'][data-test-script-state='notRunning']").wait_for(
                state="attached", timeout=60_000)
            page.wait_for_function("() => Array.from(document.querySelectorAll(\"[data-testid='stVegaLiteChart']\"))"
                                   ".filter(c => c.querySelector('.marks')).length >= 3", timeout=60_000)
            seconds = time.perf_counter() - start
            browser.close()
        return seconds
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--browser", action="store_true",
                        help="also time the Overview's demo in headless chromium against a fresh server")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as empty:
        print(f"{'page':32} {'best s':>7} {'all runs (s)':>24} {'CPU s':>6} {'torch':>6} {'peak RSS MB':>12}")
        for page in PAGES:
            # The Overview alone is the first page load; the others add the Overview's run before them.
            results = [measure(page, str(Path(empty) / "none")) for _ in range(args.repeats)]
            times = [r["seconds"] for r in results]
            print(f"{page:32} {min(times):7.2f} {', '.join(f'{t:.2f}' for t in times):>24} "
                  f"{min(r['cpu'] for r in results):6.2f} "
                  f"{str(any(r['torch'] for r in results)):>6} {max(r['peak_rss_mb'] for r in results):12.0f}")
        if args.browser:
            times = [browser_first_page(str(Path(empty) / "none")) for _ in range(args.repeats)]
            print(f"{'Overview in chromium, fresh server':32} {min(times):7.2f} "
                  f"{', '.join(f'{t:.2f}' for t in times):>24}")


if __name__ == "__main__":
    main()

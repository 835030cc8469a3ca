"""Time to the built-in demo on a fresh app: the first script run of each page.

Each measurement starts a new Python process with Streamlit imported (as a
running server has it), no ``--results`` folder and an empty result folder, and
times the first run of a page under AppTest: importing the app's modules, reading
the demo's runs and drawing the page, demo banner included. Also reports whether
torch was imported, the CPU time of the page run (on a busy machine the wall time
exceeds it; on an idle one they meet) and the process's peak RSS.

Usage: ``.venv/bin/python benchmarks/bench_demo_first_page.py [--repeats 3]``
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGES = ("streamlit_app.py", "pages/2_Shared_concepts.py", "pages/3_Model_differences.py",
         "pages/4_Unit_explorer.py")

CHILD = r"""
import json, os, resource, sys, time
from streamlit.testing.v1 import AppTest

repo, page = sys.argv[1], sys.argv[2]
sys.argv = ["streamlit_app.py"]
at = AppTest.from_file(os.path.join(repo, "streamlit_app.py"), default_timeout=120)
start, cpu_start = time.perf_counter(), time.process_time()
at.run()
if page != "streamlit_app.py":
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
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


if __name__ == "__main__":
    main()

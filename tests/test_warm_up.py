"""The server's start-up warm-up: what the first visitor would otherwise wait for."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dissect_app
from dissect_app.warm_up import browsing_pages
from dissect_core.runs.demo_runs import demo_sweep_runs

REPO = Path(__file__).resolve().parents[1]

WARM_UP_SCRIPT = r"""
import json, sys
before = set(sys.modules)
from dissect_app.warm_up import warm_up
warm_up()
import dissect_app.demo_banner
def refuse(*args, **kwargs):
    raise AssertionError("the demo was read again")
dissect_app.demo_banner.load_run = refuse  # from here on, only the warmed cache can answer
runs, info = dissect_app.demo_banner.cached_demo()
print(json.dumps({"imported": sorted(set(sys.modules) - before), "demo_runs": len(runs),
                  "torch": "torch" in sys.modules, "open_clip": "open_clip" in sys.modules}))
"""


def test_warm_up_imports_what_the_pages_import_and_reads_the_demo(tmp_path: Path) -> None:
    env = {**os.environ, dissect_app.HOSTED_ENV: "1", dissect_app.RESULTS_ENV: str(tmp_path / "none")}
    done = subprocess.run([sys.executable, "-c", WARM_UP_SCRIPT], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"pandas", "altair", "dissect_core.runs.analysis", "dissect_app.charts",
            "dissect_core.runs.categories"} <= set(result["imported"])
    assert result["demo_runs"] == 2 + len(demo_sweep_runs())  # the two networks and the training sweep
    assert not result["torch"] and not result["open_clip"]  # the Run page is not warmed


def test_warm_up_covers_every_page_but_the_run_page() -> None:
    warmed = {str(path) for path in browsing_pages()}
    assert warmed == {page.script for page in dissect_app.PAGES} - {dissect_app.RUN_PAGE}
    assert all(Path(path).is_file() for path in warmed)

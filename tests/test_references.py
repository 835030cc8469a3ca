"""The reference tests' rule: without the reference outputs they never pass silently.
Runs pytest on one reference test with the files pointed at an empty folder."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ONE_REFERENCE_TEST = "tests/test_concepts.py::test_reference_lists_parse_as_documented"


def _pytest(tmp_path: Path, ci: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DISSECT_REFERENCE_DIR": str(tmp_path), "CI": ci}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "reference",
                           ONE_REFERENCE_TEST], cwd=REPO, env=env, capture_output=True, text=True)


def test_missing_references_are_an_error_in_ci_and_reported_locally(tmp_path):
    ci = _pytest(tmp_path, "true")
    assert ci.returncode != 0 and "1 error" in ci.stdout
    assert "python scripts/fetch_references.py" in ci.stdout and str(tmp_path) in ci.stdout

    local = _pytest(tmp_path, "")
    assert local.returncode == 0 and "1 skipped" in local.stdout
    summary = local.stdout.split("reference tests not run", 1)[1]
    assert "1 reference test(s) did not run" in summary and "python scripts/fetch_references.py" in summary

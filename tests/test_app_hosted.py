"""Hosted (read-only) mode through AppTest: no Run page, uploads kept per session and
bounded, no server path in any message, and no torch or open_clip imported."""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import dissect_app
from dissect_app import hosted_mode
from dissect_app.navigation import served_pages
from tests.test_app_bundle import bundle  # noqa: F401  (module fixture: a bundle of the computed run)
from tests.test_app_pages import IMAGENET_ROWS, PLACES_ROWS, descriptions_csv, open_app, write_run

REPO = Path(__file__).resolve().parents[1]
APP = dissect_app.ENTRY_SCRIPT
BROWSING_PAGES = [dissect_app.HOME_PAGE, dissect_app.SHARED_CONCEPTS_PAGE, dissect_app.MODEL_DIFFERENCES_PAGE,
                  dissect_app.UNIT_EXPLORER_PAGE, dissect_app.SWEEP_PAGE]


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A hosted app over a --results folder with two runs and one damaged file."""
    root = tmp_path / "server_results"
    write_run(root / "resnet18_25_07_16_18_08", "resnet18", IMAGENET_ROWS)
    write_run(root / "resnet18_places_25_07_16_17_57", "resnet18_places", PLACES_ROWS)
    (root / "broken").mkdir()
    (root / "broken" / "descriptions.csv").write_text("not,a,result\n1,2,3\n")
    monkeypatch.setattr(sys, "argv", ["streamlit_app.py", "--results", str(root), "--hosted"])
    monkeypatch.setenv(dissect_app.RESULTS_ENV, str(tmp_path / "server_own_results"))
    st.cache_data.clear()
    return root


def rendered_text(at: AppTest) -> str:
    """Everything the page sends to the browser, as the text of each element's message."""
    parts = []

    def walk(node) -> None:
        children = getattr(node, "children", None)
        if children:
            for child in children.values():
                walk(child)
        proto = getattr(node, "proto", None)
        if proto is not None:
            parts.append(str(proto).encode().decode("unicode_escape", errors="ignore"))

    walk(at.main)
    walk(at.sidebar)
    return "\n".join(parts)


def test_hosted_flag_from_the_environment_or_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(hosted_mode.HOSTED_ENV, raising=False)
    assert not hosted_mode.hosted(["--results", "x"])
    assert hosted_mode.hosted(["--results", "x", "--hosted"])
    monkeypatch.setenv(hosted_mode.HOSTED_ENV, "1")
    assert hosted_mode.hosted([])


def test_hide_paths_keeps_only_the_last_part() -> None:
    assert hosted_mode.hide_paths("File /srv/app/results/run/descriptions.csv: bad") == "File descriptions.csv: bad"
    assert hosted_mode.hide_paths(r"in C:\data\runs\x.csv here") == "in x.csv here"
    assert hosted_mode.hide_paths("ratio 1/2 of layer4/unit") == "ratio 1/2 of layer4/unit"


def test_no_run_page_and_no_server_path(served: Path) -> None:
    at = open_app()
    assert [page.script for page in served_pages()] == BROWSING_PAGES
    with pytest.raises(ValueError, match="Could not find a navigation page"):  # not even routable
        at.switch_page(dissect_app.RUN_PAGE)
    assert not [b for b in at.get("button") if b.key == "bundle_build"]  # no bundle building either
    shown = rendered_text(at)
    assert "broken/descriptions.csv" in shown  # the damaged file is named...
    assert str(served) not in shown and str(served.parent) not in shown  # ...without the server's folders


def test_a_bundle_stays_in_the_visitors_session_and_goes_with_it(served: Path, bundle, tmp_path: Path) -> None:  # noqa: F811
    at = open_app()
    at.sidebar.file_uploader(key=dissect_app.BUNDLE_UPLOAD_KEY).set_value(("demo.zip", bundle, "application/zip")).run()
    assert not at.exception and not at.error
    holder = at.session_state[hosted_mode.SESSION_FOLDER_KEY]
    session_dir = Path(holder.name)
    assert any(session_dir.rglob("descriptions.csv"))
    assert not (tmp_path / "server_own_results").exists()  # nothing in the server's result folder
    assert len(at.sidebar.multiselect(key="models").value) == 3  # the bundled run joined the picked two
    # Another visitor sees only the server's runs.
    other = open_app()
    assert len(other.sidebar.multiselect(key="models").options) == 2
    # The folder goes when the session's state does.
    del at.session_state[hosted_mode.SESSION_FOLDER_KEY]
    del holder
    gc.collect()
    assert not session_dir.exists()


def test_uploads_are_bounded_with_clear_messages(served: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hosted_mode, "MAX_CSV_FILES", 2)
    at = open_app()
    files = [(f"m{i}.csv", descriptions_csv(IMAGENET_ROWS[:i + 1]).encode(), "text/csv") for i in range(3)]
    at.sidebar.file_uploader(key=dissect_app.UPLOAD_KEY).set_value(files).run()
    assert not at.exception
    (error,) = at.sidebar.error
    assert "at most 2 uploaded CSVs" in error.value
    assert sum(option.endswith(" · uploaded") for option in at.sidebar.multiselect(key="models").options) == 2

    monkeypatch.setattr(hosted_mode, "MAX_CSV_MB", 0.001)  # 1 KB
    at = open_app()
    big = descriptions_csv([("layer2", "dotted", list(range(100)))]).encode()
    at.sidebar.file_uploader(key=dissect_app.UPLOAD_KEY).set_value([("big.csv", big, "text/csv")]).run()
    assert "CSV files of at most" in at.sidebar.error[0].value
    assert not any(option.endswith(" · uploaded") for option in at.sidebar.multiselect(key="models").options)


NO_TORCH_SCRIPT = r"""
import json, sys
from streamlit.testing.v1 import AppTest
app, results, pages, explorer = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
sys.argv[1:] = ["--results", results]  # as after `--` on the streamlit command line
at = AppTest.from_file(app, default_timeout=120).run()
exceptions = [bool(at.exception)]
for page in pages:
    at.switch_page(page).run()
    exceptions.append(bool(at.exception))
options = at.sidebar.multiselect(key="models").options
bundled = next(label for label in options if not label.endswith("broden · 20k"))
at.query_params.update({"model": bundled, "layer": "layer4", "unit": "3"})
at.switch_page(explorer).run()
exceptions.append(bool(at.exception))
print(json.dumps({"exceptions": exceptions, "torch": "torch" in sys.modules, "open_clip": "open_clip" in sys.modules,
                  "models": options, "heatmaps": len(at.tabs[0].get("image")) if at.tabs else 0}))
"""


def test_browsing_in_hosted_mode_imports_no_torch(served: Path, bundle, tmp_path: Path) -> None:  # noqa: F811
    """In a fresh interpreter (other tests import torch): every page, and a bundled unit's heatmaps."""
    from dissect_core.runs.bundle_format import import_bundle

    import_bundle(bundle, served / "bundled")  # a bundle shipped with the hosted app
    env = {**os.environ, hosted_mode.HOSTED_ENV: "1", dissect_app.RESULTS_ENV: str(tmp_path / "none")}
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH_SCRIPT, APP, str(served), json.dumps(BROWSING_PAGES),
         dissect_app.UNIT_EXPLORER_PAGE],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["exceptions"] == [False] * 7
    assert len(result["models"]) == 3 and result["heatmaps"] == 10
    assert not result["torch"] and not result["open_clip"]

"""`dissect app`: what it hands Streamlit, what it says without the app's extra; the
helper that starts the app and waits for it (used by the browser tests, benchmarks and the
screenshot script); and the page table behind st.navigation."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from dissect_app.local_server import ServerStartError, local_server
from dissect_app.navigation import HOME_PAGE, PAGES
from dissect_core.cli import main

SERVER_SCRIPT = Path(__file__).resolve().parents[1] / "dissect_app" / "server" / "streamlit_app.py"


@pytest.fixture
def streamlit_calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Streamlit's command line as `dissect app` would run it (the server itself is not started)."""
    from streamlit.web import cli as streamlit_cli

    calls: list[list[str]] = []
    monkeypatch.setattr(streamlit_cli, "main", lambda args, prog_name: calls.append(list(args)))
    return calls


def test_app_runs_the_packaged_server_with_streamlit_options_and_app_arguments(streamlit_calls) -> None:
    assert main(["app", "--results", "runs/a", "--server.port", "8502", "--hosted", "--results", "runs/b",
                 "--server.headless=true"]) == 0
    (call,) = streamlit_calls
    assert call[:2] == ["run", str(SERVER_SCRIPT)]
    # Streamlit's own options before "--", the app's after it (where dissect_app reads them).
    assert call[2:] == ["--server.port", "8502", "--server.headless=true", "--",
                        "--results", "runs/a", "--results", "runs/b", "--hosted"]


def test_other_commands_refuse_options_they_do_not_know(capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["list", "--server.port", "8502"])
    assert stopped.value.code == 2
    assert "unrecognized arguments: --server.port 8502" in capsys.readouterr().err


def test_app_without_its_extra_says_how_to_install_it(monkeypatch, capsys, streamlit_calls) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "altair" else find_spec(name, *a))
    assert main(["app"]) == 2
    assert 'The app needs altair, not installed here: pip install "clip-dissect-explorer[app]"' in capsys.readouterr().err
    assert not streamlit_calls


def test_local_server_says_why_the_app_did_not_start(tmp_path: Path) -> None:
    with pytest.raises(ServerStartError, match="exited with code") as error:
        with local_server(script=tmp_path / "missing.py", cwd=tmp_path):
            pass
    assert "missing.py" in str(error.value)  # the server's own output is quoted


def test_pages_keep_their_deep_links_and_are_named_after_them() -> None:
    # The URL paths of the legacy pages/ router, so links shared before still open the same page.
    assert [page.url_path for page in PAGES] == ["", "Shared_concepts", "Model_differences", "Unit_explorer", "Sweep",
                                                "Run"]
    for page in PAGES:
        assert Path(page.script).is_file() and Path(page.script).parent.name == "views"
        if page.script != HOME_PAGE:  # AppTest finds a page by file name before the first run
            assert Path(page.script).stem == page.url_path

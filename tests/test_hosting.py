"""``python -m dissect_core bundle`` and ``host``: the hosted folder's contents, and the
folder served as the Dockerfile serves it (with this environment instead of a fresh one;
the fresh-environment check is done by hand, see the README)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
import urllib.request
from pathlib import Path

import pytest

from dissect_core.cli import main
from dissect_app.host_folder import APP_CONFIG, HOSTED_REQUIREMENTS
from dissect_app.local_server import local_server
from dissect_core.runs.run_folders import find_runs, load_run

# The app's files in a host folder (the copy of the dissect_app package).
APP_FILES = ("streamlit_app.py", "dissect_app/server/entry.py", "dissect_app/views/overview.py",
             "dissect_app/views/Shared_concepts.py", "dissect_app/views/Model_differences.py",
             "dissect_app/views/Unit_explorer.py", "dissect_app/views/Sweep.py", "dissect_app/views/Run.py")


def write_reference_run(folder: Path, model: str, concepts: list[str]) -> Path:
    folder.mkdir(parents=True)
    rows = "".join(f"layer4,{unit},{concept},{0.2 + unit / 100}\n" for unit, concept in enumerate(concepts))
    (folder / "descriptions.csv").write_text("layer,unit,description,similarity\n" + rows, encoding="utf-8")
    (folder / "args.txt").write_text(json.dumps({"target_model": model, "d_probe": "broden",
                                                 "concept_set": "data/20k.txt"}), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def hosted(tmp_path_factory) -> dict:
    """A bundle of one run made by the CLI, and a host folder with it plus a second run folder."""
    root = tmp_path_factory.mktemp("hosting")
    first = write_reference_run(root / "runs" / "resnet18_run", "resnet18", ["dog", "cat", "dog"])
    second = write_reference_run(root / "runs" / "resnet18_places_run", "resnet18_places", ["dog", "sky", "sky"])
    netdissect = root / "netdissect"  # one model's NetDissect layer files: one run
    netdissect.mkdir()
    for layer, label in (("conv4", "bar-s"), ("conv5", "kitchen-s")):
        (netdissect / f"vgg_{layer}.csv").write_text(f"unit,category,label,score\n1,scene,{label},0.2\n")
    assert main(["bundle", str(first), "-o", str(root / "demo.zip"), "--quiet"]) == 0
    assert main(["host", str(root / "site"), str(root / "demo.zip"), str(second), str(netdissect), "--quiet",
                 "--title", 'My "demo"']) == 0
    return {"root": root, "site": root / "site", "runs": [first, second]}


def test_bundle_command_writes_an_importable_bundle(hosted: dict) -> None:
    from dissect_core.runs.bundle_format import import_bundle

    (folder,) = import_bundle((hosted["root"] / "demo.zip").read_bytes(), hosted["root"] / "imported")
    assert load_run(folder).label == "resnet18 · layer4 · broden · 20k"


def test_host_folder_holds_the_app_the_runs_and_the_hosting_files(hosted: dict) -> None:
    site: Path = hosted["site"]
    for name in (*APP_FILES, "dissect_app/__init__.py", "dissect_core/__init__.py"):
        assert (site / name).is_file(), name
    assert not list(site.rglob("__pycache__")) and not (site / "tests").exists()
    assert (site / "requirements.txt").read_text() == HOSTED_REQUIREMENTS.read_text()
    requirements = [line.split("#")[0].strip() for line in (site / "requirements.txt").read_text().splitlines()]
    names = {re.split(r"[<>=!~\[ ]", line)[0].lower() for line in requirements if line}
    assert "streamlit" in names and not names & {"torch", "torchvision", "open_clip_torch"}

    config = tomllib.loads((site / ".streamlit" / "config.toml").read_text())
    assert config["server"]["headless"] is True and config["client"]["showErrorDetails"] == "none"
    own = tomllib.loads(APP_CONFIG.read_text())
    # The app's own settings carry over: its theme and upload limit.
    assert config["theme"] == own["theme"] and config["server"]["maxUploadSize"] == own["server"]["maxUploadSize"]
    assert tomllib.loads((site / ".streamlit" / "secrets.toml").read_text()) == {"DISSECT_HOSTED": "1"}

    docker = (site / "Dockerfile").read_text()
    assert "EXPOSE 8501" in docker and "DISSECT_HOSTED=1" in docker
    assert "HEALTHCHECK" in docker and "http://localhost:8501/_stcore/health" in docker
    assert 'CMD ["streamlit", "run", "streamlit_app.py", "--server.port=8501", "--server.address=0.0.0.0"]' in docker
    assert "RUN pip install --user -r requirements.txt" in docker

    readme = (site / "README.md").read_text()
    front = readme.split("---\n")[1]
    assert {"sdk: docker", "app_port: 8501", 'title: "My \\"demo\\""'} <= set(front.splitlines())
    assert "huggingface.co/new-space" in readme and "share.streamlit.io" in readme

    runs, problems = find_runs(site / "results")
    assert problems == []
    assert sorted(run.label for run in runs) == [
        "resnet18 · layer4 · broden · 20k", "resnet18_places · layer4 · broden · 20k", "vgg · conv4, conv5 · NetDissect"]


def test_host_refuses_bad_targets_and_leaves_nothing(hosted: dict, tmp_path: Path) -> None:
    from dissect_core.common.errors import InvalidInputError
    from dissect_app.host_folder import write_host_folder

    with pytest.raises(InvalidInputError, match="not an empty folder"):
        write_host_folder(hosted["site"], hosted["runs"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="no result file in this folder"):
        write_host_folder(tmp_path / "out", [tmp_path / "empty"])
    (tmp_path / "empty").rmdir()
    with pytest.raises(InvalidInputError, match="Not found"):
        write_host_folder(tmp_path / "out", [tmp_path / "missing.zip"])
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InvalidInputError, match="not a zip file"):
        write_host_folder(tmp_path / "out", [bad])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.zip"]  # no half-written folder


def test_host_folder_serves_every_page_without_torch(hosted: dict) -> None:
    """Each page runs from the folder's own copy of the app, in hosted mode, importing no torch."""
    script = textwrap.dedent("""
        import sys
        from streamlit.testing.v1 import AppTest
        import dissect_app
        from dissect_app.navigation import served_pages
        assert dissect_app.__file__.startswith(sys.path[0]), dissect_app.__file__  # the folder's copy
        pages = served_pages()
        assert len(pages) == 5, pages  # hosted: every page but the Run page
        for page in pages:
            at = AppTest.from_file(dissect_app.ENTRY_SCRIPT, default_timeout=120).run()
            at.switch_page(page.script).run()
            assert not at.exception, (page, [e.value for e in at.exception])
            assert at.title and len(at.dataframe) > 0, page  # runs shown, not the how-to hint
        print("torch" in sys.modules, "open_clip" in sys.modules)
    """)
    env = {**os.environ, "DISSECT_HOSTED": "1", "PYTHONPATH": str(hosted["site"])}
    env.pop("DISSECT_RESULTS_DIR", None)
    done = subprocess.run([sys.executable, "-c", script], cwd=hosted["site"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-2:] == ["False", "False"]


def test_host_folder_starts_with_the_dockerfile_command(hosted: dict) -> None:
    """The Dockerfile's command (on a free port) answers the health check."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DISSECT_", "STREAMLIT_"))}
    # local_server waits for the health check's "ok" (it raises, with the server's output, otherwise).
    with local_server(script=hosted["site"] / "streamlit_app.py", cwd=hosted["site"], env=env) as server:
        with urllib.request.urlopen(f"{server.url}/", timeout=5) as response:
            assert response.status == 200


def test_host_without_sources_serves_the_built_in_demo(tmp_path: Path) -> None:
    assert main(["host", str(tmp_path / "site"), "--quiet"]) == 0
    site = tmp_path / "site"
    assert list((site / "results").iterdir()) == []
    assert (site / "dissect_core" / "demo_data" / "demo.json").is_file()
    script = textwrap.dedent("""
        import sys
        from streamlit.testing.v1 import AppTest
        import dissect_app
        at = AppTest.from_file(dissect_app.ENTRY_SCRIPT, default_timeout=120).run()
        assert not at.exception, [e.value for e in at.exception]
        print(any(info.value.startswith("**Demo.**") for info in at.info), len(at.metric) > 0,
              "torch" in sys.modules)
    """)
    env = {**os.environ, "DISSECT_HOSTED": "1", "PYTHONPATH": str(site)}
    env.pop("DISSECT_RESULTS_DIR", None)
    done = subprocess.run([sys.executable, "-c", script], cwd=site, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-3:] == ["True", "True", "False"]

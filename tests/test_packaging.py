"""What `pip install .` is built from: one version, a `dissect` command that is
`python -m dissect_core`, and runtime dependencies (with the app's extra) that match
requirements.txt; and the wheel it builds, which must hold every file of both packages (the
lexicon, the demo data and the app's pages and settings included) and work from outside the
checkout: the library, and `dissect app` serving every page. (Installing with its
dependencies into a fresh venv needs the package registry, so that is checked by hand: see
the README.)"""
from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import urllib.request
import zipfile
from pathlib import Path

import pytest

import dissect_app
import dissect_core
from dissect_app.host_folder import HOSTED_REQUIREMENTS
from dissect_app.local_server import local_server
from dissect_core import cli

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _name(requirement: str) -> str:
    """The distribution name of a requirement line, normalised (PEP 503)."""
    name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1)
    return re.sub(r"[-_.]+", "-", name).lower()


def test_console_script_is_the_module_entry_point():
    target = PYPROJECT["project"]["scripts"]["dissect"]
    module, _, function = target.partition(":")
    assert getattr(importlib.import_module(module), function) is cli.main
    # `python -m dissect_core` runs the same function.
    source = (REPO / "dissect_core" / "__main__.py").read_text(encoding="utf-8")
    assert "from dissect_core.cli import main" in source and "sys.exit(main())" in source


def test_version_is_written_once():
    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "dissect_core.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", dissect_core.__version__)
    written = [path for path in [REPO / "pyproject.toml", *(REPO / "dissect_core").glob("*.py")]
               if f'"{dissect_core.__version__}"' in path.read_text(encoding="utf-8")]
    assert written == [REPO / "dissect_core" / "__init__.py"]


def _requirement_names(path: Path) -> set[str]:
    return {_name(line) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")}


def test_build_system_and_dependencies():
    assert PYPROJECT["build-system"]["build-backend"] == "setuptools.build_meta"
    runtime = _requirement_names(REPO / "requirements.txt")
    core = {_name(requirement) for requirement in PYPROJECT["project"]["dependencies"]}
    app = {_name(requirement) for requirement in PYPROJECT["project"]["optional-dependencies"]["app"]}
    # CI pins exactly what the package and its app extra declare (numpy and huggingface_hub come with torch).
    assert (core | app) - {"numpy", "huggingface-hub"} == runtime
    # Only the app draws charts: the library does not depend on Altair or vl-convert.
    assert {"streamlit", "altair", "vl-convert-python", "platformdirs"} == app and not core & app
    # A hosted folder installs the app's extra, without torch.
    hosted = _requirement_names(HOSTED_REQUIREMENTS)
    assert app <= hosted and not hosted & {"torch", "torchvision", "open-clip-torch"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel `pip install .` would install, built offline from a copy of the checkout
    (so the build's leftovers stay out of it) with the venv's own setuptools."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    for package in ("dissect_core", "dissect_app"):
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "--quiet", "--wheel-dir", str(root / "dist"), str(source)], check=True)
    (built,) = (root / "dist").glob("clip_dissect_explorer-*.whl")
    return built


def _package_files(folder: Path) -> set[str]:
    return {path.relative_to(folder.parent).as_posix() for path in folder.rglob("*")
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"}


def test_wheel_holds_every_package_file_the_command_and_the_dependencies(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = f"clip_dissect_explorer-{dissect_core.__version__}.dist-info"
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
        metadata = archive.read(f"{dist_info}/METADATA").decode()
        licence = archive.read(f"{dist_info}/licenses/LICENSE").decode()
    # Every module and data file: the WordNet table, the demo's weights, images and runs; the
    # app's pages, server script, settings and hosted requirements.
    for package in ("dissect_core", "dissect_app"):
        assert {name for name in names if name.startswith(f"{package}/")} == _package_files(REPO / package)
    assert "dissect_core/runs/lexicon/wordnet_categories.tsv.gz" in names
    assert "dissect_core/demo_data/demo.json" in names
    assert {"dissect_app/server/.streamlit/config.toml", "dissect_app/views/Unit_explorer.py",
            "dissect_app/server/streamlit_app.py", "dissect_app/requirements-hosted.txt"} <= names
    assert "[console_scripts]\ndissect = dissect_core.cli:main" in entry_points
    assert f"\nVersion: {dissect_core.__version__}\n" in metadata
    assert "\nName: clip-dissect-explorer\n" in metadata
    # The licence: an SPDX expression in the metadata, and the text itself in the wheel.
    assert "\nLicense-Expression: MIT\n" in metadata and "\nLicense-File: LICENSE\n" in metadata
    assert licence == (REPO / "LICENSE").read_text() and licence.startswith("MIT License")
    requires = [line.removeprefix("Requires-Dist: ") for line in metadata.splitlines()
                if line.startswith("Requires-Dist: ")]
    assert {_name(r) for r in requires if "extra ==" not in r} == {
        _name(requirement) for requirement in PYPROJECT["project"]["dependencies"]}
    assert {_name(r) for r in requires if r.endswith('extra == "app"')} == {
        _name(requirement) for requirement in PYPROJECT["project"]["optional-dependencies"]["app"]}
    assert "\nProvides-Extra: app\n" in metadata


def test_unpacked_wheel_runs_outside_the_checkout(wheel, tmp_path):
    # A wheel is a zip of what gets installed; unpacked and put on the path it is the
    # installed package, with the checkout nowhere on the path.
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = dict(cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    version = subprocess.run([sys.executable, "-m", "dissect_core", "--version"], **run).stdout
    assert version.strip() == f"dissect {dissect_core.__version__}"
    probe = """
import json, dissect_core
from dissect_core.runs import demo_runs as demo
from dissect_core.runs.categories import categorise
from dissect_core.runs.run_folders import load_run
runs = [load_run(path) for path in demo.demo_runs()]
sweep = [load_run(path) for path in demo.demo_sweep_runs()]
print(json.dumps({"package": dissect_core.__file__, "runs": [run.path.name for run in runs],
                  "units": [len(run.descriptions) for run in runs], "dog": categorise("dog"),
                  "sweep": len(sweep), "weights": len(demo.training_checkpoints())}))
"""
    seen = json.loads(subprocess.run([sys.executable, "-c", probe], **run).stdout)
    assert Path(seen["package"]).is_relative_to(site)
    assert seen["runs"] == ["trained", "untrained"] and min(seen["units"]) > 0
    assert seen["sweep"] == seen["weights"] >= 8  # the training sweep, a run per checkpoint
    assert seen["dog"] == "object"  # read from the packaged WordNet table


PAGES_SCRIPT = """
import json, sys
from streamlit.testing.v1 import AppTest
import dissect_app
from dissect_app.navigation import PAGES
rendered = {}
for page in PAGES:
    at = AppTest.from_file(dissect_app.ENTRY_SCRIPT, default_timeout=180).run()
    at.switch_page(page.script).run()
    rendered[page.url_path] = {"title": [t.value for t in at.title], "exceptions": [e.value for e in at.exception]}
print(json.dumps({"package": dissect_app.__file__, "pages": rendered}))
"""


def test_unpacked_wheel_serves_the_app_outside_the_checkout(wheel, tmp_path):
    """`python -m dissect_core app` from a folder with no checkout answers its health check,
    and every page of the installed app renders without an exception (AppTest on its entry)."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("DISSECT_", "STREAMLIT_"))},
           "PYTHONPATH": str(site), dissect_app.RESULTS_ENV: str(elsewhere / "results")}
    with local_server(cwd=elsewhere, env=env) as server:  # raises, with the server's output, unless healthy
        with urllib.request.urlopen(f"{server.url}/Unit_explorer", timeout=10) as response:
            assert response.status == 200  # a deep link is served (the page itself is drawn over the websocket)

    done = subprocess.run([sys.executable, "-c", PAGES_SCRIPT], cwd=elsewhere, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(seen["package"]).is_relative_to(site)  # the wheel's app, not the checkout's
    titles = {"": "Overview", "Shared_concepts": "Shared concepts", "Model_differences": "Model differences",
              "Unit_explorer": "Unit explorer", "Sweep": "Sweep", "Run": "Run CLIP-Dissect"}
    assert {path: page["title"][:1] for path, page in seen["pages"].items()} == {
        path: [title] for path, title in titles.items()}
    assert all(not page["exceptions"] for page in seen["pages"].values()), seen["pages"]

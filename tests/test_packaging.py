"""What `pip install .` is built from: one version, a `dissect` command that is
`python -m dissect_core`, and runtime dependencies that match requirements.txt; and the
wheel it builds, which must hold every file of the package (the lexicon and the demo
data included) and work from outside the checkout. (Installing with its dependencies into
a fresh venv needs the package registry, so that is checked by hand: see the README.)"""
from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import dissect_core
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


def test_build_system_and_dependencies():
    assert PYPROJECT["build-system"]["build-backend"] == "setuptools.build_meta"
    runtime = {_name(line) for line in (REPO / "requirements.txt").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    declared = {_name(requirement) for requirement in PYPROJECT["project"]["dependencies"]}
    # Everything the package declares is pinned for CI; what CI pins beyond it is the app's.
    assert declared - {"numpy", "huggingface-hub"} <= runtime
    assert runtime - declared == {"streamlit", "platformdirs"}  # the app's server and its per-user folder


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel `pip install .` would install, built offline from a copy of the checkout
    (so the build's leftovers stay out of it) with the venv's own setuptools."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "dissect_core", source / "dissect_core",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "--quiet", "--wheel-dir", str(root / "dist"), str(source)], check=True)
    (built,) = (root / "dist").glob("dissect_core-*.whl")
    return built


def _package_files(folder: Path) -> set[str]:
    return {path.relative_to(folder.parent).as_posix() for path in folder.rglob("*")
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"}


def test_wheel_holds_every_package_file_the_command_and_the_dependencies(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = f"dissect_core-{dissect_core.__version__}.dist-info"
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
        metadata = archive.read(f"{dist_info}/METADATA").decode()
    # Every module and data file: the WordNet table, the demo's weights, images and runs.
    assert {name for name in names if name.startswith("dissect_core/")} == _package_files(REPO / "dissect_core")
    assert "dissect_core/runs/lexicon/wordnet_categories.tsv.gz" in names
    assert "dissect_core/demo_data/demo.json" in names
    assert "[console_scripts]\ndissect = dissect_core.cli:main" in entry_points
    assert f"\nVersion: {dissect_core.__version__}\n" in metadata
    requires = {_name(line.removeprefix("Requires-Dist: ")) for line in metadata.splitlines()
                if line.startswith("Requires-Dist: ")}
    assert requires == {_name(requirement) for requirement in PYPROJECT["project"]["dependencies"]}


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
from dissect_core.runs.results import load_run
runs = [load_run(path) for path in demo.demo_runs()]
print(json.dumps({"package": dissect_core.__file__, "runs": [run.path.name for run in runs],
                  "units": [len(run.descriptions) for run in runs], "dog": categorise("dog")}))
"""
    seen = json.loads(subprocess.run([sys.executable, "-c", probe], **run).stdout)
    assert Path(seen["package"]).is_relative_to(site)
    assert seen["runs"] == ["trained", "untrained"] and min(seen["units"]) > 0
    assert seen["dog"] == "object"  # read from the packaged WordNet table

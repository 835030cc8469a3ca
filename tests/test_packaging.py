"""What `pip install .` is built from: one version, a `dissect` command that is
`python -m dissect_core`, and runtime dependencies that match requirements.txt.
(Installing for real is checked by hand: see the README's Tests section.)"""
from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

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
    assert "from .cli import main" in source and "sys.exit(main())" in source


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
    assert runtime - declared == {"streamlit"}

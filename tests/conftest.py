"""Shared fixtures, and the reference tests' rules.

Tests marked ``@pytest.mark.reference`` read the original tool's outputs (fetched with
``python scripts/fetch_references.py``; where the tests look is in that script). Without
them such a test is an error under ``CI=true`` and a skip elsewhere, and the run's closing
summary says how many did not run, why, and the command that fetches the files."""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load_references():
    spec = importlib.util.spec_from_file_location("fetch_references", REPO / "scripts" / "fetch_references.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


references = _load_references()


_not_run: list[str] = []  # the reference tests skipped for want of the files


@functools.cache
def _reference_folder() -> Path | None:
    return references.find_reference_dir()


def _require_references() -> Path:
    folder = _reference_folder()
    if folder is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {references.not_found_message()}", pytrace=False)
        pytest.skip(references.not_found_message())
    return folder


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("reference") is not None:
        if _reference_folder() is None and os.environ.get("CI") != "true":
            _not_run.append(item.nodeid)
        _require_references()


@pytest.fixture(autouse=True)
def own_user_data(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A per-user data folder of the test's own (platformdirs reads ``XDG_DATA_HOME``): the app
    unpacks bundles there, and no test may read or fill the real one in the home folder."""
    folder = tmp_path_factory.mktemp("user_data")
    monkeypatch.setenv("XDG_DATA_HOME", str(folder))
    return folder


@pytest.fixture
def reference_dir(request) -> Path:
    """The folder holding the original tool's outputs and concept lists."""
    if request.node.get_closest_marker("reference") is None:
        pytest.fail("a test that reads the reference outputs must be marked @pytest.mark.reference", pytrace=False)
    return _require_references()


def pytest_terminal_summary(terminalreporter) -> None:
    """Say how many reference tests were skipped for want of the files, and how to get them."""
    if _not_run:
        terminalreporter.write_sep("=", "reference tests not run", yellow=True)
        terminalreporter.write_line(f"{len(_not_run)} reference test(s) did not run: {references.not_found_message()}.")


def _contents(folder: Path) -> dict[str, str]:
    return {path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture(scope="session")
def computed_run(tmp_path_factory) -> Iterator[dict]:
    """A run computed end to end by the CLI on stand-ins: a Places365-layout random
    ResNet18, a tiny open_clip checkpoint and 120 synthetic images (layers layer4, fc).

    Returns the folders involved: ``results`` (the run folder is its only child),
    ``cache``, ``data``, ``probe``, plus ``clip`` (the CLIP name) and ``run_dir``.
    Shared by every test that uses it, so none may change it, the cache included: a test
    that needs to, changes a copy. Checked when the session ends.
    """
    from dissect_core.cli import main
    from standins import make_image_folder, make_tiny_clip_checkpoint, save_places_style_checkpoint

    root = tmp_path_factory.mktemp("computed_run")
    (root / "data").mkdir()
    save_places_style_checkpoint(root / "data" / "resnet18_places365.pth.tar")
    clip = make_tiny_clip_checkpoint(root / "tiny_clip.pt")
    make_image_folder(root / "probe", 120, size=(48, 48))
    (root / "concepts.txt").write_text("dog\ncat\nstripes\nsky\nwater\n")
    code = main([
        "describe", "--clip_model", clip, "--target_model", "resnet18_places", "--target_layers", "layer4,fc",
        "--d_probe", str(root / "probe"), "--concept_set", str(root / "concepts.txt"), "--batch_size", "40",
        "--device", "cpu", "--activation_dir", str(root / "cache"), "--result_dir", str(root / "results"),
        "--data_dir", str(root / "data"), "--num_workers", "0", "--quiet",
    ])
    assert code == 0
    before = _contents(root)
    yield {"results": root / "results", "cache": root / "cache", "data": root / "data",
           "probe": root / "probe", "clip": clip, "concepts": root / "concepts.txt",
           "run_dir": next((root / "results").iterdir())}
    after = _contents(root)
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    assert not changed, f"a test changed the shared computed run: {changed[:10]}"

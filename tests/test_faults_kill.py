"""Fault catalogue, kill -9: a run killed at chosen moments loses nothing already
computed, leaves no half-written file that is ever used, is never listed as a
finished run, and the next run gives the same results as a clean one."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dissect_core.engine.pipeline import describe
from dissect_core.runs.run_folders import find_runs

from planted import make_planted_probe, write_concepts
from test_faults_cache import config_for

KILLER = Path(__file__).resolve().parent / "kill_run.py"
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    make_planted_probe(root / "probe", per_colour=8)
    planted = (root, write_concepts(root / "concepts.txt"))
    return planted, describe(config_for(planted, root / "clean"))


def kill_at(planted, tmp: Path, moment: str) -> None:
    root, concepts = planted
    done = subprocess.run(
        [sys.executable, str(KILLER), str(root / "probe"), str(concepts), str(tmp / "cache"),
         str(tmp / "results"), moment],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr


@pytest.mark.parametrize("moment, cached_after_kill", [
    ("probe:16", set()),  # in the middle of the probe pass
    ("write:activations", set()),  # while the activations entry is renamed into place
    ("describe", {"activations detect", "CLIP image features", "CLIP text features", "similarity detect"}),
    ("write:manifest.json", {"activations detect", "CLIP image features", "CLIP text features",
                             "similarity detect"}),
])
def test_a_killed_run_loses_nothing_and_the_next_run_matches_a_clean_one(clean, tmp_path, moment,
                                                                      cached_after_kill):
    planted, reference = clean
    kill_at(planted, tmp_path, moment)

    runs, problems = find_runs(tmp_path / "results") if (tmp_path / "results").exists() else ([], [])
    assert runs == []  # a killed run is never listed as finished
    if moment == "write:manifest.json":  # every other file of the run folder was written
        ((_, why),) = problems
        assert "is incomplete" in why

    result = describe(config_for(planted, tmp_path))
    assert set(result.reused) == cached_after_kill  # every stage finished before the kill is kept
    assert result.warnings == []  # no damaged entry was found: none was half-written
    assert not list((tmp_path / "cache").rglob("*.tmp"))  # the killed writer's leftovers are gone
    assert result.run.descriptions.equals(reference.run.descriptions)
    assert result.run.top_concepts.equals(reference.run.top_concepts)
    assert result.run.top_images.equals(reference.run.top_images)
    runs, _ = find_runs(tmp_path / "results")
    assert [run.path for run in runs] == [result.run_dir]

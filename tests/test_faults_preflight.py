"""Fault catalogue, checks before the work: folders that cannot be written, a full
disk and a probe set too small are found before the probe pass, with a message,
and nothing is computed or written."""
from __future__ import annotations

import shutil
from collections import namedtuple

import pytest

from dissect_core.common import files
from dissect_core.common.errors import InvalidInputError
from dissect_core.engine.pipeline import describe

from test_faults_cache import config_for, planted  # noqa: F401  (the planted dissection's fixture)


def computed_anything(tmp_path) -> bool:
    return any((tmp_path / "cache").glob("*/*.pt")) or (tmp_path / "results").exists()


def test_result_folder_that_cannot_be_made_fails_before_the_probe_pass(planted, tmp_path):
    (tmp_path / "occupied").write_text("a file")
    with pytest.raises(InvalidInputError, match=r"Cannot write the run folder in .*occupied.*pass another `result_dir`"):
        describe(config_for(planted, tmp_path, result_dir=str(tmp_path / "occupied" / "results")))
    assert not computed_anything(tmp_path)


def test_cache_folder_that_cannot_be_made_fails_before_the_probe_pass(planted, tmp_path):
    (tmp_path / "occupied").write_text("a file")
    with pytest.raises(InvalidInputError, match=r"Cannot write the cache in .*pass another `activation_dir`"):
        describe(config_for(planted, tmp_path, activation_dir=str(tmp_path / "occupied" / "cache")))
    assert not (tmp_path / "results").exists()


def test_a_full_disk_is_found_before_the_probe_pass(planted, tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(files.shutil, "disk_usage", lambda path: usage(10**12, 10**12 - 1000, 1000))
    with pytest.raises(InvalidInputError, match="Not enough free disk space for the cache"):
        describe(config_for(planted, tmp_path))
    assert not computed_anything(tmp_path)


def test_a_full_result_disk_is_found_before_the_probe_pass(planted, tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    real = shutil.disk_usage

    def disk_usage(path):
        return usage(10**12, 10**12, 10) if "results" in str(path) else real(path)

    monkeypatch.setattr(files.shutil, "disk_usage", disk_usage)
    with pytest.raises(InvalidInputError, match="Not enough free disk space for the run folder"):
        describe(config_for(planted, tmp_path))
    assert not any((tmp_path / "cache").glob("*/*.pt"))


def test_a_probe_set_too_small_for_soft_wpmi_fails_before_the_probe_pass(planted, tmp_path):
    with pytest.raises(InvalidInputError, match=r"The probe set has 72 images but soft_wpmi needs at least top_k=100"):
        describe(config_for(planted, tmp_path, similarity_fn="soft_wpmi"))
    assert not computed_anything(tmp_path)

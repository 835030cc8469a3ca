"""Fault catalogue, cache class: damaged, mismatching and leftover cache files.

Each fault asserts the exact outcome: a message saying what happened, the damaged
entry never used, and the same labels as a clean run.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

from dissect_core.engine import cache as cache_module
from dissect_core.engine.cache import FeatureCache
from dissect_core.common.errors import InvalidInputError
from dissect_core.engine.pipeline import DescribeConfig, describe
from dissect_core.engine.probe_sets import image_folder

from planted import UNIT_COLOURS, make_planted_probe, planted_clip, planted_target, write_concepts


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted_faults")
    make_planted_probe(root / "probe", per_colour=12)
    return root, write_concepts(root / "concepts.txt")


def config_for(planted, tmp: Path, **overrides) -> DescribeConfig:
    root, concepts = planted
    settings = dict(
        target_model=planted_target(), target_layers=("detect",), clip_model=planted_clip(),
        d_probe=str(root / "probe"), concept_set=str(concepts), device="cpu", batch_size=32,
        activation_dir=str(tmp / "cache"), result_dir=str(tmp / "results"), num_workers=0, top_images=10, similarity_fn="cos_similarity",
    )
    settings.update(overrides)
    return DescribeConfig(**settings)


def entry_files(cache: Path, kind: str) -> list[Path]:
    return sorted((cache / kind).glob("*.pt"))


def flip_bit(path: Path, offset_from_end: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x10
    path.write_bytes(bytes(data))


def truncate(path: Path, offset_from_end: int = 0) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def replace_with_header_only(path: Path, offset_from_end: int = 0) -> None:
    path.write_bytes(b"")


def write_entry(path: Path, payload) -> None:
    """Bytes as the cache writes them (header with a valid checksum), holding ``payload``."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    body = buffer.getvalue()
    path.write_bytes(cache_module._MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body)


def wrong_type_with_valid_checksum(path: Path, offset_from_end: int = 0) -> None:
    """An entry holding a list: a valid file of the wrong type."""
    write_entry(path, [1, 2, 3])


def wrong_shapes_with_valid_checksum(path: Path, offset_from_end: int = 0) -> None:
    """A well-formed entry whose tensors disagree (as if another stage's payload was stored under this key)."""
    write_entry(path, {"pooled": torch.zeros(3), "image_indices": torch.zeros(5),
                       "features": torch.zeros(2, 2), "values": torch.zeros(1, 1),
                       "indices": torch.zeros(1, 1, dtype=torch.long)})


def old_format_entry(path: Path, offset_from_end: int = 0) -> None:
    """An entry as the previous cache format wrote it: a bare torch file without checksum."""
    buffer = io.BytesIO()
    torch.save({"features": torch.zeros(2, 2)}, buffer)
    path.write_bytes(buffer.getvalue())


DAMAGE = {
    "flipped bit": flip_bit,
    "truncated": truncate,
    "empty file": replace_with_header_only,
    "wrong type": wrong_type_with_valid_checksum,
    "wrong shapes": wrong_shapes_with_valid_checksum,
    "no checksum header": old_format_entry,
}
KINDS = {"activations": "activations detect", "clip_images": "CLIP image features",
         "clip_texts": "CLIP text features", "similarity": "similarity detect"}


@pytest.fixture(scope="module")
def clean_run(planted, tmp_path_factory):
    """A clean run, and its cache folder to copy for each fault."""
    root = tmp_path_factory.mktemp("clean")
    return describe(config_for(planted, root)), root / "cache"


@pytest.fixture
def warm_cache(clean_run, tmp_path):
    """This test's own copy of the clean run's cache; returns the clean run."""
    clean, cache = clean_run
    shutil.copytree(cache, tmp_path / "cache")
    (tmp_path / "results").mkdir()
    return clean


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_damaged_entry_is_reported_recomputed_and_never_used(planted, tmp_path, warm_cache, kind, damage, caplog):
    (entry,) = entry_files(tmp_path / "cache", kind)
    DAMAGE[damage](entry)
    with caplog.at_level(logging.WARNING, logger="dissect_core"):
        result = describe(config_for(planted, tmp_path))

    assert KINDS[kind] not in result.reused  # never served
    assert any(f"cached {kind} entry" in w and "recomputed" in w for w in result.warnings)
    assert any(r.getMessage().startswith("The cached") for r in caplog.records)  # logged as it happened
    assert result.run.descriptions.equals(warm_cache.run.descriptions)
    assert result.run.top_concepts.equals(warm_cache.run.top_concepts)
    if damage == "flipped bit":  # the entry was rewritten: a third run uses it without complaint
        third = describe(config_for(planted, tmp_path))
        assert KINDS[kind] in third.reused and not third.warnings


def test_a_folder_where_an_entry_should_be_is_a_clear_error_before_the_work(planted, tmp_path, warm_cache):
    (entry,) = entry_files(tmp_path / "cache", "clip_texts")
    entry.unlink()
    entry.mkdir()
    with pytest.raises(InvalidInputError, match="is not a regular file"):
        describe(config_for(planted, tmp_path))
    assert not list((tmp_path / "results").iterdir())  # no run folder
    entry.rmdir()
    result = describe(config_for(planted, tmp_path))  # once the folder is gone all is well
    assert result.run.descriptions.equals(warm_cache.run.descriptions)


def test_cache_folder_that_is_a_file_is_a_clear_error(planted, tmp_path):
    (tmp_path / "cache").write_text("not a folder")
    with pytest.raises(InvalidInputError, match="is a file, not a folder"):
        describe(config_for(planted, tmp_path))
    assert (tmp_path / "cache").read_text() == "not a folder"
    assert not (tmp_path / "results").exists()


def test_temp_files_of_killed_writers_are_removed_but_live_writers_kept(tmp_path):
    kind = tmp_path / "activations"
    kind.mkdir(parents=True)
    dead = kind / ".abc.pt.999999999.x1y2.tmp"  # no such PID
    dead.write_bytes(b"half")
    live = kind / f".abc.pt.{os.getppid()}.x1y2.tmp"  # our parent is alive: another writer at work
    live.write_bytes(b"being written")
    unnamed = kind / ".old.pt.tmp"  # no PID in the name and a day old
    unnamed.write_bytes(b"x")
    os.utime(unnamed, (time.time() - 2 * 86400,) * 2)
    keep = kind / "entry.pt"
    keep.write_bytes(b"entry")

    cache = FeatureCache(tmp_path)
    assert cache.removed_temp_files == 2
    assert not dead.exists() and not unnamed.exists()
    assert live.exists() and keep.exists()


# --------------------------------------------------------------------------- fingerprints

def test_images_rewritten_in_place_with_same_size_and_mtime_get_new_labels(planted, tmp_path):
    root, _ = planted
    probe = tmp_path / "probe"
    make_planted_probe(probe, per_colour=12)
    first = describe(config_for(planted, tmp_path, d_probe=str(probe)))
    # Swap the content of two images of different colours; sizes may differ, so
    # rewrite every file with the bytes of another of the same size where possible.
    files = sorted(probe.rglob("*.png"))
    stats = {p: p.stat() for p in files}
    red, blue = sorted((probe / "red").glob("*.png")), sorted((probe / "blue").glob("*.png"))
    for a, b in zip(red, blue):
        data_a, data_b = a.read_bytes(), b.read_bytes()
        a.write_bytes(data_b)
        b.write_bytes(data_a)
    for p in red + blue:
        os.utime(p, ns=(stats[p].st_atime_ns, stats[p].st_mtime_ns))  # hide the change from mtime

    second = describe(config_for(planted, tmp_path, d_probe=str(probe)))
    assert second.run.manifest.probe.fingerprint != first.run.manifest.probe.fingerprint
    assert not any(stage.startswith(("activations", "CLIP image")) for stage in second.reused)
    # The labels still match: the run looked at the new images, not stale activations.
    assert second.run.descriptions["description"].tolist() == UNIT_COLOURS


def test_second_fingerprint_reads_no_image_file(tmp_path, monkeypatch):
    from dissect_core.common import files

    make_planted_probe(tmp_path / "probe", per_colour=3)
    first = image_folder(tmp_path / "probe", index_dir=tmp_path / "cache")
    files._INDEXES.clear()  # a new process: only the index file in the cache remains

    def no_reading(path):
        raise AssertionError(f"{path} was read again")

    monkeypatch.setattr(files, "open_regular_file", no_reading)
    again = image_folder(tmp_path / "probe", index_dir=tmp_path / "cache")
    assert again.fingerprint == first.fingerprint


def test_a_damaged_fingerprint_index_is_ignored_and_rebuilt(tmp_path):
    from dissect_core.common import files

    make_planted_probe(tmp_path / "probe", per_colour=3)
    first = image_folder(tmp_path / "probe", index_dir=tmp_path / "cache")
    (index,) = (tmp_path / "cache" / "fingerprints").glob("*.json")
    for junk in (b"\xff\xfe not json", b'{"root": "x", "files": []}', b"[]",
                 b'{"root": "%s", "files": {"aa": [1, 2, 3, 4, 5]}}' % os.fsencode(tmp_path / "probe").hex().encode()):
        index.write_bytes(junk)
        files._INDEXES.clear()
        assert image_folder(tmp_path / "probe", index_dir=tmp_path / "cache").fingerprint == first.fingerprint

"""The run manifest is typed and versioned: a damaged, unknown or newer manifest is an
error that says so, never a run silently read as an import from a CSV."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dissect_core.common.errors import NewerFormatError
from dissect_core.runs.manifest import FORMAT_VERSION, MANIFEST_FILE, DamagedRunError, RunManifest, RunSources
from dissect_core.runs.run_folders import find_runs, load_run


@pytest.fixture
def run_copy(computed_run, tmp_path):
    """A private copy of the computed run's folder, to damage."""
    copy = tmp_path / "results" / computed_run["run_dir"].name
    shutil.copytree(computed_run["run_dir"], copy)
    return copy


def _rewrite(run_dir, change):
    path = run_dir / MANIFEST_FILE
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


def test_a_computed_run_reads_back_typed(computed_run):
    run = load_run(computed_run["run_dir"])
    manifest = run.manifest
    assert isinstance(manifest, RunManifest) and manifest.format_version == FORMAT_VERSION
    assert manifest.layers == ["layer4", "fc"] and manifest.probe.n_images == 120
    assert not run.from_reference_tool
    # Written and read back, it is the same manifest.
    assert RunManifest.from_json(manifest.to_json()) == manifest
    assert json.loads(manifest.to_json())["format"] == f"dissect_core-run/{FORMAT_VERSION}"


def test_sources_round_trip_through_their_key(computed_run):
    sources = load_run(computed_run["run_dir"]).manifest.sources()
    assert RunSources.from_key(sources.key()) == sources
    assert sources.data_dir == str(computed_run["data"])


@pytest.mark.parametrize("damage, words", [
    (lambda path: path.write_text('{"format": "dissect_core-run/1", "target_mo'), ["not valid JSON"]),
    (lambda path: path.write_text("[1, 2]"), ["list", "not a run manifest"]),
    (lambda path: path.write_bytes(b"\xff\xfe\x00"), ["not UTF-8"]),
])
def test_an_unreadable_manifest_is_an_error(run_copy, damage, words):
    damage(run_copy / MANIFEST_FILE)
    with pytest.raises(DamagedRunError) as error:
        load_run(run_copy)
    for word in words:
        assert word in str(error.value)


@pytest.mark.parametrize("change, words", [
    (lambda record: record.update(format="other-tool/1"), ["'other-tool/1'", "not a dissect_core run manifest"]),
    (lambda record: record.pop("format"), ["None", "not a dissect_core run manifest"]),
    (lambda record: record.pop("layers"), ["lacks the field(s) layers"]),
    (lambda record: record["probe"].pop("fingerprint"), ["probe", "fingerprint"]),
    (lambda record: record.update(layers="layer4"), ["layers should be a list"]),
    (lambda record: record["probe"].update(n_images="120"), ["probe: n_images should be int"]),
    (lambda record: record.update(surprise=1), ["unknown field(s) surprise"]),
    (lambda record: record["probe"].update(surprise=1), ["probe has unknown field(s) surprise"]),
    (lambda record: record.update(timings_s={"load": "slow"}), ["timings_s (a value) should be float, not str"]),
    (lambda record: record.update(target_checkpoint=3), ["target_checkpoint should be str or null, not int"]),
])
def test_a_wrong_manifest_says_what_is_wrong(run_copy, change, words):
    _rewrite(run_copy, change)
    with pytest.raises(DamagedRunError) as error:
        load_run(run_copy)
    for word in words:
        assert word in str(error.value)
    assert MANIFEST_FILE in str(error.value)


def test_a_newer_manifest_asks_for_a_newer_dissect(run_copy):
    _rewrite(run_copy, lambda record: record.update(format=f"dissect_core-run/{FORMAT_VERSION + 1}"))
    with pytest.raises(NewerFormatError) as error:
        load_run(run_copy)
    assert not isinstance(error.value, DamagedRunError)  # the run is fine; this dissect is too old
    for words in (MANIFEST_FILE, "made by a newer dissect", f"version {FORMAT_VERSION + 1}",
                  f"reads versions 1 to {FORMAT_VERSION}", "Upgrade dissect"):
        assert words in str(error.value)
    runs, problems = find_runs(run_copy.parent)
    assert runs == [] and "made by a newer dissect" in problems[0][1]


def test_runs_are_written_in_the_current_format_which_has_the_quality_fields(computed_run):
    record = json.loads((computed_run["run_dir"] / MANIFEST_FILE).read_text())
    assert FORMAT_VERSION == 4 and record["format"] == "dissect_core-run/4"
    assert {"label_quality", "output_check", "majority_check"} <= set(record)
    assert record["majority_check"] == []  # a CLIP run has no labels to take a majority of


def test_a_version_3_manifest_reads_without_the_majority_check(run_copy):
    _rewrite(run_copy, lambda record: (record.update(format="dissect_core-run/3"), record.pop("majority_check")))
    manifest = load_run(run_copy).manifest
    assert manifest.format_version == 3 and manifest.majority_check == []


def test_a_version_2_manifest_still_reads_with_or_without_the_quality_fields(run_copy):
    _rewrite(run_copy, lambda record: record.update(format="dissect_core-run/2"))
    manifest = load_run(run_copy).manifest
    assert manifest.format_version == 2 and manifest.label_quality  # written before the bump: kept
    _rewrite(run_copy, lambda record: (record.pop("label_quality"), record.pop("output_check")))
    manifest = load_run(run_copy).manifest
    assert manifest.format_version == 2 and manifest.label_quality == {} and manifest.output_check == []
    # Written back (as an import marks it), it keeps its version.
    assert json.loads(manifest.to_json())["format"] == "dissect_core-run/2"


def test_a_real_version_2_run_reads_with_its_quality_figures():
    # A copy of the demo's trained run as committed before format 3 (its run files less the
    # points, maps and thumbnails): a real version-2 manifest with the quality fields.
    folder = Path(__file__).parent / "data" / "format2_demo_run"
    assert json.loads((folder / MANIFEST_FILE).read_text())["format"] == "dissect_core-run/2"
    run = load_run(folder)
    assert run.manifest.format_version == 2 and "settings" in run.manifest.label_quality
    assert run.manifest.output_check and run.label_quality is not None
    assert run.manifest.majority_check == []  # recorded from format 4 on


def test_a_damaged_run_is_listed_with_its_reason(run_copy, computed_run):
    _rewrite(run_copy, lambda record: record.pop("probe"))
    shutil.copytree(computed_run["run_dir"], run_copy.parent / "intact")
    runs, problems = find_runs(run_copy.parent)
    assert [run.path.name for run in runs] == ["intact"]
    assert [path.parent for path, _ in problems] == [run_copy]
    assert "lacks the field(s) probe" in problems[0][1]


def test_a_damaged_args_file_is_an_error_too(run_copy):
    (run_copy / "args.txt").write_text("{not json")
    with pytest.raises(DamagedRunError, match="args.txt"):
        load_run(run_copy)


def test_a_folder_without_manifest_is_a_reference_tool_run(run_copy):
    (run_copy / MANIFEST_FILE).unlink()
    run = load_run(run_copy)
    assert run.manifest is None and run.from_reference_tool
    assert run.target_model == "resnet18_places"  # from the reference's args.txt


def test_a_version_1_manifest_still_reads(run_copy):
    def as_version_1(record):
        record["format"] = "dissect_core-run/1"
        record["probe"].pop("listing_skipped")
        record.pop("warnings")

    _rewrite(run_copy, as_version_1)
    manifest = load_run(run_copy).manifest
    assert manifest.format_version == 1 and manifest.warnings == [] and manifest.probe.listing_skipped == {}


def test_a_manifest_from_before_the_quality_stage_still_reads(run_copy):
    _rewrite(run_copy, lambda record: (record.pop("label_quality"), record.pop("output_check")))
    manifest = load_run(run_copy).manifest
    assert manifest.label_quality == {} and manifest.output_check == []


def test_the_quality_fields_are_typed(run_copy):
    manifest = load_run(run_copy).manifest
    assert "skipped" in manifest.label_quality or "settings" in manifest.label_quality
    _rewrite(run_copy, lambda record: record.update(output_check="none"))
    with pytest.raises(DamagedRunError, match="output_check should be a list"):
        load_run(run_copy)

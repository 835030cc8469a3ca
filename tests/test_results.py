from pathlib import Path

import pandas as pd
import pytest

from dissect_core.errors import InvalidInputError
from dissect_core.results import (
    find_runs,
    format_similarity,
    load_run,
    new_run_dir,
    read_descriptions,
    write_run,
)

GOOD = b"layer,unit,description,similarity\nlayer2,0,red,0.26211548\nlayer2,1,dotted,0.2182312\nlayer3,0,null,0.1\n"


def test_reads_reference_format_in_file_order():
    frame = read_descriptions(GOOD)
    assert list(frame.columns) == ["layer", "unit", "description", "similarity"]
    assert frame["layer"].tolist() == ["layer2", "layer2", "layer3"]
    assert frame["unit"].dtype == "int64"
    assert frame["similarity"].iloc[0] == pytest.approx(0.26211548)
    # A concept called "null" must stay a string, not become a missing value.
    assert frame["description"].iloc[2] == "null"


def test_quoted_descriptions_with_commas():
    data = b'layer,unit,description,similarity\nfc,0,"tench, Tinca tinca",0.5\n'
    assert read_descriptions(data)["description"].iloc[0] == "tench, Tinca tinca"


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"layer,unit,description,similarity\n", "no rows"),
        (b"\xef\xbb\xbf" + GOOD, "byte-order mark"),
        ("layer,unit,description,similarity\nlayer2,0,caf\u00e9,0.1\n".encode("latin-1"), "not UTF-8"),
        (b"layer,unit,concept,score\nlayer2,0,red,0.1\n", "missing column"),
        (b"layer,unit,description,similarity,top_images\nlayer2,0,red,0.1,x\n", "unexpected column"),
        (b"layer,unit,description,similarity\nlayer2,0,red,high\n", "line 2: similarity 'high'"),
        (b"layer,unit,description,similarity\nlayer2,x,red,0.1\n", "line 2: unit 'x'"),
        (b"layer,unit,description,similarity\nlayer2,-1,red,0.1\n", "unit '-1'"),
        (b"layer,unit,description,similarity\nlayer2,0,red,0.1\nlayer2,0,blue,0.2\n", "line 3: unit 0 .* twice"),
        (b"layer,unit,description,similarity\nlayer2,0,,0.1\n", "description is empty"),
    ],
)
def test_files_that_are_not_descriptions_are_rejected(data, message):
    with pytest.raises(InvalidInputError, match=message):
        read_descriptions(data)


def test_similarity_written_like_the_reference():
    # float32 repr, shortest round trip: what pandas writes for the reference's float32 scores.
    assert format_similarity(0.12890625) == "0.12890625"
    assert format_similarity(0.262115478515625) == "0.26211548"


def test_run_folders_never_collide(tmp_path):
    first = new_run_dir(tmp_path / "nested" / "results", "resnet18")
    second = new_run_dir(tmp_path / "nested" / "results", "resnet18")
    assert first != second and first.is_dir() and second.is_dir()


def test_written_run_reads_back(tmp_path):
    descriptions = pd.DataFrame(
        {"layer": ["layer4", "layer4"], "unit": [0, 1], "description": ["cat", "tench, Tinca tinca"],
         "similarity": [0.5, 1.25]}
    )
    run_dir = new_run_dir(tmp_path, "resnet18")
    write_run(run_dir, descriptions, args={"target_model": "resnet18", "d_probe": "broden",
                                           "concept_set": "data/20k.txt"},
              manifest={"target_model": "resnet18"})
    text = (run_dir / "descriptions.csv").read_text()
    assert text.splitlines()[0] == "layer,unit,description,similarity"
    assert 'layer4,1,"tench, Tinca tinca",1.25' in text
    run = load_run(run_dir)
    assert run.label == "resnet18 · broden · 20k"
    pd.testing.assert_frame_equal(run.descriptions, descriptions)


def test_find_runs_reports_bad_files_and_keeps_the_rest(tmp_path):
    good = tmp_path / "a" / "resnet18_25_01_01_00_00"
    good.mkdir(parents=True)
    (good / "descriptions.csv").write_bytes(GOOD)
    bad = tmp_path / "b" / "deep" / "x"
    bad.mkdir(parents=True)
    (bad / "descriptions.csv").write_bytes(b"not,a,results,file\n1,2,3,4\n")
    runs, problems = find_runs(tmp_path)
    assert [run.label for run in runs] == ["resnet18_25_01_01_00_00"]  # no args.txt: folder name
    assert len(problems) == 1 and problems[0][0].parent == bad


def test_reads_every_reference_csv(reference_dir: Path):
    runs, problems = find_runs(reference_dir / "clip_dissect_results")
    by_folder = {run.path.name: run for run in runs}
    imagenet = by_folder["resnet18_25_07_16_18_08"].descriptions
    places = by_folder["resnet18_places_25_07_16_17_57"].descriptions
    assert imagenet.groupby("layer", sort=False)["description"].nunique().tolist() == [68, 124, 278]
    assert places.groupby("layer", sort=False)["description"].nunique().tolist() == [66, 135, 314]
    # The non-standard run carries an extra top_images column: reported, not fatal.
    assert all("top_images" in reason for _, reason in problems)
    assert len({run.label for run in runs}) == len(runs)

from pathlib import Path

import pandas as pd
import pytest

from dissect_core.common.errors import InvalidInputError
from dissect_core.runs.formats import CLIP_DISSECT, MILAN, NETDISSECT, read_descriptions
from dissect_core.runs.run_folders import (
    find_runs,
    format_similarity,
    load_run,
    new_run_dir,
    runs_from_files,
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
        ("layer,unit,description,similarity\nlayer2,0,caf\u00e9,0.1\n".encode("latin-1"), "not UTF-8"),
        (b"layer,unit,concept,score\nlayer2,0,red,0.1\n", "CLIP-Dissect file but lacks the column.*'description'"),
        (b"image,path\na.jpg,x\n", "not a result file.*Supported headers"),
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
              manifest=None)
    text = (run_dir / "descriptions.csv").read_text()
    assert text.splitlines()[0] == "layer,unit,description,similarity"
    assert 'layer4,1,"tench, Tinca tinca",1.25' in text
    run = load_run(run_dir)
    assert run.label == "resnet18 · layer4 · broden · 20k"  # model · layers · probe · concepts
    pd.testing.assert_frame_equal(run.descriptions, descriptions)


def test_find_runs_reports_bad_files_and_keeps_the_rest(tmp_path):
    good = tmp_path / "a" / "resnet18_25_01_01_00_00"
    good.mkdir(parents=True)
    (good / "descriptions.csv").write_bytes(GOOD)
    bad = tmp_path / "b" / "deep" / "x"
    bad.mkdir(parents=True)
    (bad / "descriptions.csv").write_bytes(b"not,a,results,file\n1,2,3,4\n")
    runs, problems = find_runs(tmp_path)
    assert [run.label for run in runs] == ["resnet18_25_01_01_00_00 · layer2, layer3 · 3 units"]  # no args.txt: folder name
    assert len(problems) == 1 and problems[0][0].parent == bad


@pytest.mark.reference
def test_reads_every_reference_csv(reference_dir: Path):
    runs, problems = find_runs(reference_dir / "clip_dissect_results")
    by_folder = {run.path.name: run for run in runs}
    imagenet = by_folder["resnet18_25_07_16_18_08"].descriptions
    places = by_folder["resnet18_places_25_07_16_17_57"].descriptions
    assert imagenet.groupby("layer", sort=False)["description"].nunique().tolist() == [68, 124, 278]
    assert places.groupby("layer", sort=False)["description"].nunique().tolist() == [66, 135, 314]
    # The non-standard runs carry an extra top_images column: read, with a note.
    assert problems == []
    samira = [run for run in runs if "SamiraAbedini" in str(run.path)]
    assert len(samira) == 2 and all("ignored the column(s) 'top_images'" in run.notes[0] for run in samira)
    assert len({run.label for run in runs}) == len(runs)


# --------------------------------------------------------------------------- other formats

NETDISSECT_HEADER = ("unit,category,label,score,color-label,color-truth,color-activation,color-intersect,"
                     "color-iou,scene-label,scene-truth,scene-activation,scene-intersect,scene-iou\n")


def netdissect_csv(*rows: str) -> bytes:
    return (NETDISSECT_HEADER + "".join(row + "\n" for row in rows)).encode()


def test_byte_order_mark_and_extra_columns_are_accepted():
    frame = read_descriptions(b"\xef\xbb\xbf" + GOOD)
    pd.testing.assert_frame_equal(frame, read_descriptions(GOOD))
    assert frame.attrs == {"method": CLIP_DISSECT, "notes": []}
    extra = read_descriptions(b"layer,unit,description,similarity,top_images\nlayer2,0,red,0.1,x\n",
                              name="mine.csv")
    assert list(extra.columns) == ["layer", "unit", "description", "similarity"]
    assert extra.attrs["notes"] == ["mine.csv: ignored the column(s) 'top_images'."]


def test_netdissect_file_becomes_the_standard_frame():
    data = netdissect_csv("1,scene,kitchen-s,0.08,red-c,1,2,3,0.01,kitchen-s,1,2,3,0.08",
                          "2,color,red-c,0.05,red-c,1,2,3,0.05,,1,2,3,0.001",
                          "3,object,cart-s,0.04,,1,2,3,0.0,,1,2,3,0.0")
    frame = read_descriptions(data, name="alexnet_conv5.csv")
    assert frame.attrs == {"method": NETDISSECT, "notes": []}  # the per-category columns are the format's
    assert frame["layer"].tolist() == ["conv5"] * 3
    assert frame["unit"].tolist() == [0, 1, 2]                   # 1-based in the file
    # The Broden suffix goes where the category says the same; the category stays.
    assert frame["description"].tolist() == ["kitchen", "red", "cart-s"]
    assert frame["category"].tolist() == ["scene", "color", "object"]
    assert frame["similarity"].tolist() == [0.08, 0.05, 0.04]   # the IoU


@pytest.mark.parametrize(
    "data, message",
    [
        (b"unit,category,label\n1,scene,x\n", "NetDissect file but lacks the column.*'score'"),
        (netdissect_csv("0,scene,x,0.1,,,,,,,,,,"), "unit '0' is not a positive whole number"),
        (netdissect_csv("1,scene,x,high,,,,,,,,,,"), "line 2: score 'high'"),
        (netdissect_csv("1,scene,,0.1,,,,,,,,,,"), "line 2: the label is empty"),
        (b"layer,unit\nconv1,0\n", "lacks the column"),
        (b"layer,unit,description\nconv1,x,Edges\n", "line 2: unit 'x'"),
    ],
)
def test_bad_netdissect_and_milan_files_are_refused(data, message):
    with pytest.raises(InvalidInputError, match=message):
        read_descriptions(data, name="m_layer4.csv")


def test_milan_file_has_no_score():
    frame = read_descriptions(b"layer,unit,description\nconv1,0,Edges of objects\nconv1,1,Green objects\n")
    assert frame.attrs["method"] == MILAN
    assert frame["description"].tolist() == ["Edges of objects", "Green objects"]
    assert frame["similarity"].isna().all()


def test_uploaded_netdissect_files_of_one_model_form_one_run():
    files = [("vgg_conv5.csv", netdissect_csv("1,scene,kitchen-s,0.1,,,,,,,,,,")),
             ("vgg_conv4.csv", netdissect_csv("1,scene,bar-s,0.2,,,,,,,,,,", "2,scene,pub-s,0.3,,,,,,,,,,")),
             ("other_conv4.csv", netdissect_csv("1,scene,zoo-s,0.2,,,,,,,,,,")),
             ("broken_conv1.csv", b"unit,category,label\n1,scene,x\n"),
             ("mine.csv", GOOD)]
    runs, problems = runs_from_files(files)
    assert [(run.label, run.method) for run in runs] == [
        ("vgg · conv4, conv5 · NetDissect", NETDISSECT), ("other · conv4 · NetDissect", NETDISSECT),
        ("mine.csv · layer2, layer3 · 3 units", CLIP_DISSECT)]
    assert runs[0].layers == ["conv4", "conv5"] and len(runs[0].descriptions) == 3
    assert [name for name, _ in problems] == ["broken_conv1.csv"]


@pytest.mark.reference
def test_reads_the_shared_netdissect_and_milan_files(reference_dir: Path):
    folder = reference_dir / "clip_dissect_results" / "Trustworthy-ML-Lab_CLIP-dissect"
    runs, problems = find_runs(folder)
    assert problems == []
    by_label = {run.label: run for run in runs}
    netdissect = by_label["resnet18_places365 · fc–layer4 · NetDissect"]
    assert netdissect.method == NETDISSECT
    counts = netdissect.descriptions.groupby("layer", sort=False)["unit"].agg(["size", "min", "max"])
    assert counts.to_dict("index") == {"fc": {"size": 365, "min": 0, "max": 364},
                                       "layer1": {"size": 64, "min": 0, "max": 63},
                                       "layer4": {"size": 512, "min": 0, "max": 511}}
    layer4 = netdissect.units("layer4")
    assert layer4.iloc[0][["description", "category"]].tolist() == ["reception", "scene"]
    assert layer4.iloc[0]["similarity"] == pytest.approx(0.081296847)
    assert not layer4["description"].str.endswith("-s").any()
    for name in ("m_base_resnet18_places365 · conv1–layer4 · MILAN",
                 "m_imagenet_resnet18_places365 · conv1–layer4 · MILAN"):
        milan = by_label[name]
        assert milan.method == MILAN and milan.descriptions["similarity"].isna().all()
        assert milan.descriptions.groupby("layer", sort=False).size().to_dict() == {
            "conv1": 64, "layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}
    assert by_label["resnet18_places_imagenet_broden · conv1–layer4 · 1,024 units"].method == CLIP_DISSECT
    assert len(runs) == 5


def test_load_runs_reads_folders_of_layer_files_and_names_what_failed(tmp_path: Path):
    from dissect_core.runs.run_folders import load_runs

    layers = tmp_path / "netdissect"
    layers.mkdir()
    (layers / "vgg_conv4.csv").write_bytes(netdissect_csv("1,scene,bar-s,0.2,,,,,,,,,,"))
    (layers / "vgg_conv5.csv").write_bytes(netdissect_csv("1,scene,zoo-s,0.3,,,,,,,,,,"))
    (tmp_path / "milan.csv").write_bytes(b"layer,unit,description\nconv1,0,Edges\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "descriptions.csv").write_bytes(GOOD)
    (run_dir / "args.txt").write_text('{"target_model": "resnet18", "method": "<b>made up</b>"}')
    runs = load_runs([layers, tmp_path / "milan.csv", run_dir])
    assert [(run.label, run.method, run.score_name) for run in runs] == [
        ("vgg · conv4, conv5 · NetDissect", NETDISSECT, "IoU"), ("milan · conv1 · MILAN", MILAN, None),
        ("resnet18 · layer2, layer3", CLIP_DISSECT, "similarity")]  # an unknown method in args.txt is not taken
    assert runs[1].args == {"target_model": "milan", "method": MILAN}  # what a bundle keeps
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="empty: no result file"):
        load_runs([tmp_path / "empty", run_dir])


def test_runs_of_one_name_are_told_apart_by_what_differs(tmp_path: Path):
    from dissect_core.runs.run import Run, make_labels_unique

    frame = read_descriptions(GOOD)
    smaller = frame.head(2)

    def run(descriptions, similarity_fn=None, folder=None):
        args = {"target_model": "resnet18", "similarity_fn": similarity_fn} if similarity_fn else {}
        return Run("same", descriptions, path=tmp_path / folder if folder else None, args=args)

    by_similarity = [run(frame, "soft_wpmi"), run(frame, "cos_similarity")]
    by_units = [run(frame), run(smaller)]
    by_folder = [run(frame, folder="a"), run(frame, folder="b")]
    by_labels = [run(frame), run(frame.assign(description=frame["description"].str.upper()))]
    identical = [run(frame), run(frame)]
    for group in (by_similarity, by_units, by_folder, by_labels, identical):
        make_labels_unique(group)
    assert [r.label for r in by_similarity] == ["same · soft_wpmi", "same · cos_similarity"]
    assert [r.label for r in by_units] == ["same · 3 units", "same · 2 units"]
    assert [r.label for r in by_folder] == ["same · a", "same · b"]
    assert by_labels[0].label.startswith("same · labels ") and by_labels[0].label != by_labels[1].label
    assert [r.label for r in identical] == ["same", "same #2"]  # the same labels: nothing else to say


def test_a_custom_checkpoint_is_named(tmp_path: Path):
    run_dir = new_run_dir(tmp_path, "resnet18")
    write_run(run_dir, read_descriptions(GOOD), manifest=None,
              args={"target_model": "resnet18", "target_checkpoint": "/ckpt/finetuned_e3.pth", "d_probe": "broden"})
    assert load_run(run_dir).label == "resnet18 (finetuned_e3.pth) · layer2, layer3 · broden"

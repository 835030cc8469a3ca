"""Labelled-probe runs in their own words (method, score, categories), the close-margin rule,
the labels of a unit's top images, and why a run cannot take new concepts."""
from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

import dissect_app
from dissect_app import charts
from dissect_core.runs import analysis, categories
from dissect_core.runs.demo_runs import DEMO_DIR, MODELS, PROBE_DIR, demo_runs
from dissect_core.runs.formats import CLIP_DISSECT, PROBE_LABELS
from dissect_core.runs.run_folders import load_run
from dissect_core.runs.unit_evidence import (
    MARGIN_CLOSE_SHARE, close_margin, image_class, stored_image_names, top_label_counts, unit_close_margin,
)


@pytest.fixture(scope="module")
def trained():
    return load_run(demo_runs()[0])


def clip_copy(folder: Path, tmp_path: Path) -> Path:
    """A copy of a demo run whose manifest says its concepts came through CLIP."""
    copy = shutil.copytree(folder, tmp_path / folder.name)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["config"]["concept_source"] = "clip"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_labelled_runs_name_their_method_and_score_without_clip(trained, tmp_path):
    assert trained.labelled and trained.method_name == PROBE_LABELS
    assert trained.clip_model is None  # the manifest's "labels" is no CLIP model
    assert trained.score_name == f"label score ({trained.similarity_fn})" and "CLIP" not in trained.score_name
    assert "CLIP" not in trained.match_name("Sandal") and "Sandal" in trained.match_name("Sandal")
    # The demo's auprc ranks all probe images: it has no top_k to record.
    assert trained.similarity_fn == "auprc" and trained.similarity_top_k is None
    clip = load_run(clip_copy(demo_runs()[0], tmp_path))
    assert not clip.labelled and clip.method_name == CLIP_DISSECT and clip.score_name == "similarity"
    assert clip.clip_model == clip.manifest.clip_model and clip.match_name("Sandal").startswith("CLIP similarity")


@pytest.mark.parametrize("scale, shift", [(1.0, 0.0), (100.0, -50.0), (0.001, 3.0)])
def test_the_close_margin_rule_holds_on_any_score_scale(scale, shift):
    def verdict(scores):
        return close_margin([score * scale + shift for score in scores])

    # Runner-up at 5 % of the top spread: close; at 60 %: not; exactly at the share: close.
    assert verdict([1.0, 0.95, 0.5, 0.2, 0.0]) is True
    assert verdict([1.0, 0.4, 0.3, 0.2, 0.0]) is False
    assert verdict([1.0, 1.0 - MARGIN_CLOSE_SHARE, 0.5, 0.2, 0.0]) is True
    assert verdict([1.0, 0.5]) is None  # two concepts: the spread would be the margin itself


def test_the_demos_large_margins_are_not_close(trained):
    # conv1 unit 0: −0.91 against −45.6 for the runner-up, −69.8 for the fifth: far from close.
    scores = trained.unit_top_concepts("conv1", 0)["score"].tolist()
    assert (scores[0] - scores[1]) > MARGIN_CLOSE_SHARE * (scores[0] - scores[-1])
    assert unit_close_margin(trained, "conv1", 0) is False
    assert close_margin([float("nan"), 0.0, -1.0]) is None


def test_top_label_counts_are_the_classes_of_the_units_top_k_images(trained):
    pytest.importorskip("torch")
    from dissect_core.engine.probe_sets import image_folder

    probe = image_folder(DEMO_DIR / PROBE_DIR)  # the run's probe set, listed by the engine itself
    names = stored_image_names(trained.path)
    for layer, unit in (("conv1", 0), ("conv3", 5), ("fc", 2)):
        counts = top_label_counts(trained, layer, unit, names.get)
        top = trained.unit_top_images(layer, unit, 100)["image_index"]
        expected = Counter(probe.item_label(int(i)).split("/")[0] for i in top)
        # auprc has no top_k: every listed top image (the demo lists 100) is counted.
        assert counts.top_k is None and counts.counted == 100 and counts.unknown == 0
        assert dict(zip(counts.counts["label"], counts.counts["images"])) == expected
        assert counts.counts["images"].is_monotonic_decreasing
        assert counts.label_images == expected[counts.label]
        assert counts.majority == max(sorted(expected), key=expected.get)  # first label in order on a tie


def test_images_without_a_name_are_counted_as_unknown(trained):
    names = stored_image_names(trained.path)
    some = dict(list(names.items())[::2])
    counts = top_label_counts(trained, "conv1", 0, some.get)
    top = trained.unit_top_images("conv1", 0, 100)["image_index"].astype(int)
    assert counts.unknown == sum(int(i) not in some for i in top)
    assert counts.counts["images"].sum() == counts.counted - counts.unknown
    assert top_label_counts(trained, "conv1", 0, lambda index: None).counts.empty


def test_runs_of_clip_concepts_have_no_label_counts(tmp_path):
    clip = load_run(clip_copy(demo_runs()[0], tmp_path))
    assert top_label_counts(clip, "conv1", 0, stored_image_names(clip.path).get) is None


def test_probe_labels_from_a_csv_are_not_read_from_folder_names(tmp_path):
    copy = shutil.copytree(demo_runs()[0], tmp_path / "csv_labels")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["config"]["probe_labels"] = "labels.csv"  # the images' folders may then mean nothing
    (copy / "manifest.json").write_text(json.dumps(manifest))
    run = load_run(copy)
    assert top_label_counts(run, "conv1", 0, stored_image_names(run.path).get) is None


def test_a_label_that_is_no_class_is_not_counted_as_one(tmp_path):
    from dissect_app.unit_notes import label_counts_note

    copy = shutil.copytree(demo_runs()[0], tmp_path / "formulas")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["concept_set"]["source"] = "formulas.txt"  # concepts: formulas over the classes
    (copy / "manifest.json").write_text(json.dumps(manifest))
    run = load_run(copy)
    counts = top_label_counts(run, "conv1", 0, stored_image_names(run.path).get)
    assert not counts.label_is_class and counts.counts["images"].sum() == 100
    note = " ".join(label_counts_note(counts, run.similarity_fn))
    assert "not one of the classes" in note and "carry" not in note


def test_image_class_is_the_top_level_folder():
    assert image_class("Ankle boot/00165.png") == "Ankle boot"
    assert image_class("a/b/c.jpg") == "a"
    assert image_class("loose.jpg") is None


def test_labelled_runs_are_categorised_as_their_data_sets_classes(trained):
    mix = categories.category_mix(trained.descriptions, own_classes=trained.labelled)
    assert set(mix["category"]) == {categories.OWN_CLASS}
    assert mix.groupby("layer")["units"].sum().to_dict() == trained.descriptions.groupby("layer").size().to_dict()
    assert categories.OWN_CLASS in categories.CATEGORIES


def test_count_axes_tick_at_whole_numbers(trained):
    summary = analysis.summarize_models({trained.label: trained.descriptions}, trained.layers)
    counts = pd.DataFrame({"label": ["Sandal", "Dress"], "images": [3, 1]})
    for chart in (charts.distinct_concepts_chart(summary), charts.label_counts_chart(counts, "Dress", "t")):
        axis = chart.to_dict()["layer"][0]["encoding"]["x"]["axis"]
        assert axis["format"] == "d" and axis["tickMinStep"] == 1


def test_each_kind_of_run_says_why_it_takes_no_new_concepts(trained, tmp_path, monkeypatch):
    monkeypatch.setenv(dissect_app.RESULTS_ENV, str(tmp_path / "results"))
    # The demo takes formulas over its labels, recomputed from the package's own files.
    assert dissect_app.redescribe_blocker(trained) is None
    # A copy of it elsewhere, even without a bundle's thumbnails, is still an imported bundle.
    copy = shutil.copytree(trained.path, tmp_path / "results" / "copy")
    shutil.rmtree(copy / "thumbnails")
    assert "results bundle" in dissect_app.redescribe_blocker(load_run(copy))
    # A labelled run of one's own (no import record) is refused only when its files are gone.
    own = shutil.copytree(trained.path, tmp_path / "results" / "own")
    shutil.rmtree(own / "thumbnails")
    manifest = json.loads((own / "manifest.json").read_text())
    del manifest["imported"]
    (own / "manifest.json").write_text(json.dumps(manifest))
    assert "probe images are not on this machine" in dissect_app.redescribe_blocker(load_run(own))
    manifest["probe"]["spec"]["root"] = str(DEMO_DIR / PROBE_DIR)
    manifest["target_checkpoint"] = str(tmp_path / "gone.pth")
    (own / "manifest.json").write_text(json.dumps(manifest))
    assert "weights file is not on this machine" in dissect_app.redescribe_blocker(load_run(own))
    manifest["target_checkpoint"] = str(MODELS["trained"].checkpoint())
    (own / "manifest.json").write_text(json.dumps(manifest))
    assert dissect_app.redescribe_blocker(load_run(own)) is None
    bundled = shutil.copytree(trained.path, tmp_path / "elsewhere" / "bundled")
    assert "results bundle" in dissect_app.redescribe_blocker(load_run(bundled))
    csv = tmp_path / "loose.csv"
    csv.write_text("layer,unit,description,similarity\nconv1,0,Dress,0.5\n")
    assert "result file" in dissect_app.redescribe_blocker(load_run(csv))

"""The labelled-probe concept source: concepts from the probe images' own labels."""
from __future__ import annotations

import pytest
import torch

from dissect_core.engine.concept_sources import CONCEPT_SOURCES, labelled_probe
from dissect_core.common.errors import InvalidInputError, MissingResourceError
from dissect_core.engine.pipeline import DescribeConfig, config_from_run, describe
from dissect_core.engine.probe_sets import image_folder
from dissect_core.runs.run_folders import load_run

from planted import COLOURS, UNIT_COLOURS, make_planted_probe, planted_target


@pytest.fixture(scope="module")
def planted_probe(tmp_path_factory):
    root = tmp_path_factory.mktemp("labelled") / "probe"
    truth = make_planted_probe(root, per_colour=20)
    return root, truth


def labels_config(probe_root, tmp, **overrides) -> DescribeConfig:
    # clip_model stays the default ViT-B/16: loading it offline would fail, so these
    # runs also show that the labels source never touches CLIP.
    settings = dict(
        target_model=planted_target(), target_layers=("detect",), d_probe=str(probe_root),
        concept_source="labels", device="cpu", batch_size=64, num_workers=0,
        activation_dir=str(tmp / "cache"), result_dir=str(tmp / "results"),
    )
    settings.update(overrides)
    return DescribeConfig(**settings)


@pytest.mark.parametrize("similarity_fn", ["soft_wpmi", "wpmi", "cos_similarity", "cos_similarity_cubed"])
def test_class_subfolders_label_every_planted_unit(planted_probe, tmp_path, similarity_fn):
    root, _ = planted_probe
    result = describe(labels_config(root, tmp_path, similarity_fn=similarity_fn))
    assert result.run.descriptions["description"].tolist() == UNIT_COLOURS
    manifest = result.run.manifest
    assert manifest.config["concept_source"] == "labels"
    assert manifest.clip_model == "labels"
    assert manifest.concept_set.n_concepts == len(COLOURS)
    assert manifest.concept_set.source == "class sub-folders"
    # One unit per label, but the label names are sorted, not a classifier's outputs: no automatic check.
    assert len(UNIT_COLOURS) == len(COLOURS) and manifest.output_check == []
    # The result says so, and what to do; likewise for the quality figures this small probe set cannot give.
    skipped = {stage.stage: stage for stage in result.skipped}
    assert "dissect evaluate RUN_DIR --class_names FILE" in skipped["output-layer check"].fix
    if similarity_fn.startswith("cos"):  # quality figures re-score with the PMI functions only
        assert "Use `similarity_fn` soft_wpmi or wpmi to have them." == skipped["label quality"].fix
    else:
        assert ("label quality" in skipped) == (result.run.label_quality is None)
    assert [line.text for line in result.summary() if line.kind == "skipped"] == [
        f"Skipped {stage.stage}: {stage.reason} {stage.fix}" for stage in result.skipped]


def test_labels_csv_gives_several_labels_per_image(planted_probe, tmp_path):
    root, truth = planted_probe
    csv = tmp_path / "labels.csv"
    rows = ["image,label"]
    for relative, (colour, _) in truth.items():
        rows += [f"{relative},{colour} square", f"{relative},noise"]  # every image is also "noise"
    csv.write_text("\n".join(rows) + "\n")
    result = describe(labels_config(root, tmp_path, probe_labels=str(csv)))
    assert result.run.descriptions["description"].tolist() == [f"{c} square" for c in UNIT_COLOURS]
    labelled = labelled_probe(image_folder(root), str(csv))
    assert "noise" in labelled.concepts.concepts
    assert labelled.concepts.source == "labels CSV labels.csv"


def test_indicator_scaling_keeps_softmax_on_the_label(planted_probe, tmp_path):
    root, truth = planted_probe
    csv = tmp_path / "labels.csv"
    first, second = list(truth)[:2]
    csv.write_text("image,label\n" + "".join(f"{image},{truth[image][0]}\n" for image in truth)
                   + f"{first},extra\n")
    labelled = labelled_probe(image_folder(root), str(csv))
    features, names = labelled.image_features, labelled.concepts.concepts
    probe = image_folder(root)
    row_of = {probe.item_label(i): i for i in range(len(probe))}
    # A single label has cosine 1 with its concept; two labels share the norm.
    assert features[row_of[second]].tolist() == [float(name == truth[second][0]) for name in names]
    assert features[row_of[first]].norm().item() == pytest.approx(1.0)
    assert features[row_of[first], names.index("extra")].item() == pytest.approx(2 ** -0.5)
    # soft-WPMI's softmax (a = 10) over the concepts puts almost all mass on the label.
    p = torch.nn.functional.normalize(features) @ torch.nn.functional.normalize(labelled.text_features).T
    q = torch.softmax(10 * p[row_of[second]], dim=0)
    assert q[names.index(truth[second][0])] > 0.999


def test_second_run_reuses_activations_and_similarity(planted_probe, tmp_path):
    root, _ = planted_probe
    describe(labels_config(root, tmp_path))
    again = describe(labels_config(root, tmp_path))
    assert "activations detect" in again.reused and "similarity detect" in again.reused
    assert not any("CLIP" in stage for stage in again.reused)


def test_changed_labels_are_not_served_from_the_cache(planted_probe, tmp_path):
    root, truth = planted_probe
    describe(labels_config(root, tmp_path))
    csv = tmp_path / "labels.csv"
    csv.write_text("image,label\n" + "".join(f"{image},{colour.upper()}\n" for image, (colour, _) in truth.items()))
    relabelled = describe(labels_config(root, tmp_path, probe_labels=str(csv)))
    assert "similarity detect" not in relabelled.reused
    assert relabelled.run.descriptions["description"].tolist() == [c.upper() for c in UNIT_COLOURS]


def test_images_without_a_label_are_refused(tmp_path):
    root = tmp_path / "probe"
    make_planted_probe(root, per_colour=2)
    (root / "red" / "000.png").rename(root / "loose.png")
    with pytest.raises(InvalidInputError, match="1 of 12 probe images have no label .*loose.png"):
        labelled_probe(image_folder(root))


@pytest.mark.parametrize("text, message", [
    ("file,class\nred/000.png,red\n", "header 'image,label'"),
    ("image,label\nred/000.png,\n", "line 2: expected 'image,label'"),
    ("image,label\nelsewhere/1.png,red\n", "1 image.* not in the probe set.*'elsewhere/1.png'"),
    ("image,label\nred/000.png,red\n", "11 of 12 probe images have no label in labels.csv"),
])
def test_bad_labels_csv_says_what_is_wrong(tmp_path, text, message):
    root = tmp_path / "probe"
    make_planted_probe(root, per_colour=2)
    csv = tmp_path / "labels.csv"
    csv.write_text(text)
    with pytest.raises(InvalidInputError, match=message):
        labelled_probe(image_folder(root), str(csv))


def test_missing_labels_csv_and_unknown_source(planted_probe, tmp_path):
    root, _ = planted_probe
    with pytest.raises(MissingResourceError, match="nowhere.csv"):
        labelled_probe(image_folder(root), str(tmp_path / "nowhere.csv"))
    with pytest.raises(InvalidInputError, match="Unknown concept source 'tags'.*clip, labels"):
        describe(labels_config(root, tmp_path, concept_source="tags"))
    assert CONCEPT_SOURCES.names() == ["clip", "labels"]


def test_a_labels_run_cannot_take_a_concept_set(planted_probe, tmp_path):
    root, _ = planted_probe
    run = load_run(describe(labels_config(root, tmp_path)).run_dir)
    assert config_from_run(run).concept_source == "labels"
    with pytest.raises(InvalidInputError, match="labels"):
        config_from_run(run, concept_set="english_20k")

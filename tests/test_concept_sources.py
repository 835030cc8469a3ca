"""The labelled-probe concept source: concepts from the probe images' own labels."""
from __future__ import annotations

import pytest

from dissect_core.engine.label_quality import RESCORABLE
import torch

from dissect_core.choices.catalog import CONCEPT_SOURCES
from dissect_core.engine.concept_sources import labelled_probe
from dissect_core.choices.concept_sets import ConceptSet
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


# precision_at_k and iou count the top 20 images: the top 100 would hold 80 images tied at 0, among
# them all 20 of some other colour, tying it with the unit's own.
@pytest.mark.parametrize("similarity_fn, params", [
    (None, {}), ("soft_wpmi", {}), ("wpmi", {}), ("cos_similarity", {}), ("cos_similarity_cubed", {}),
    ("precision_at_k", {"top_k": 20}), ("iou", {"top_k": 20}),
])
def test_class_subfolders_label_every_planted_unit(planted_probe, tmp_path, similarity_fn, params):
    root, _ = planted_probe
    result = describe(labels_config(root, tmp_path, similarity_fn=similarity_fn, similarity_params=params))
    assert result.run.descriptions["description"].tolist() == UNIT_COLOURS
    manifest = result.run.manifest
    assert manifest.config["concept_source"] == "labels"
    assert manifest.similarity_fn == (similarity_fn or "auprc")  # the labelled probes' default
    assert manifest.clip_model == "labels"
    assert manifest.concept_set.n_concepts == len(COLOURS)
    assert manifest.concept_set.source == "class sub-folders"
    # One unit per label, but the label names are sorted, not a classifier's outputs: no automatic check.
    assert len(UNIT_COLOURS) == len(COLOURS) and manifest.output_check == []
    # Each unit fires on its colour's 20 images only, so all 20 are among its top 100 (the other 80
    # are tied at 0), and no colour has more images: every label is a (tied) majority.
    (check,) = manifest.majority_check
    assert (check.layer, check.top_k, check.agreeing) == ("detect", 100, len(UNIT_COLOURS))
    assert check.label_count == check.majority_count == [20] * len(UNIT_COLOURS)
    # The result says so, and what to do; likewise for the quality figures this small probe set cannot give.
    skipped = {stage.stage: stage for stage in result.skipped}
    assert "dissect evaluate RUN_DIR --class_names FILE" in skipped["output-layer check"].fix
    if (similarity_fn or "auprc").startswith("cos"):  # quality figures re-score the rescorable scores only
        assert f"Use `similarity_fn` {' or '.join(RESCORABLE)} to have them." == skipped["label quality"].fix
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


def test_a_labels_run_is_redescribed_with_formulas_from_the_cache(planted_probe, tmp_path):
    root, _ = planted_probe
    run = load_run(describe(labels_config(root, tmp_path)).run_dir)
    again = config_from_run(run)
    assert (again.concept_source, again.concept_set, again.similarity_fn) == ("labels", None, "auprc")
    formulas = tmp_path / "formulas.txt"
    formulas.write_text("red OR magenta\ngreen\n\nblue AND NOT red\ncyan OR yellow\nred AND green\n")
    # (The planted network has no name to be loaded by, so it is passed again.)
    result = describe(config_from_run(run, concept_set=str(formulas), target_model=planted_target()))
    assert "activations detect" in result.reused and "similarity detect" not in result.reused
    # Each unit fires on its colour's images only; the one formula that holds there has AP 1 or
    # (for an OR of two colours) the highest.
    holds_on = {"red": "red OR magenta", "magenta": "red OR magenta", "green": "green",
                "blue": "blue AND NOT red", "cyan": "cyan OR yellow", "yellow": "cyan OR yellow"}
    assert result.run.descriptions["description"].tolist() == [holds_on[colour] for colour in UNIT_COLOURS]
    assert result.run.manifest.concept_set.source == str(formulas)
    assert any("1 concept(s) of formulas hold for no probe image, e.g. 'red AND green'" in warning
               for warning in result.warnings)
    # The formula run is reproduced from its manifest with its formulas.
    assert config_from_run(load_run(result.run_dir)).concept_set == str(formulas)
    with pytest.raises(InvalidInputError, match=r"line 1 \('the'\): no label 'the'"):
        describe(config_from_run(run, concept_set=ConceptSet("words", ("the", "of"), "upload"),
                                 target_model=planted_target()))


def test_label_scores_are_refused_for_clip_concepts_before_anything_loads(planted_probe, tmp_path):
    root, _ = planted_probe
    with pytest.raises(InvalidInputError, match="auprc scores units against the probe images' labels"):
        describe(labels_config(root, tmp_path, concept_source="clip", similarity_fn="auprc",
                               concept_set=ConceptSet("colours", tuple(COLOURS), "upload")))

"""Concept lists of formulas over a labelled probe's labels (Mu & Andreas 2020)."""
from __future__ import annotations

import pytest
import torch

from dissect_core.choices.concept_sets import ConceptSet, parse_concepts
from dissect_core.cli import main
from dissect_core.common.errors import InvalidInputError
from dissect_core.engine.concept_sources import LabelledProbe, formula_probe
from dissect_core.engine.label_formulas import parse_formula, parse_formulas
from dissect_core.runs import demo_runs as demo
from dissect_core.runs.run_folders import load_run

LABELS = list(demo.CLASSES)  # Fashion-MNIST's: "T-shirt or top" holds a space and the word "or"


def test_the_issues_two_examples_parse():
    assert parse_formula("Sandal OR Sneaker OR Ankle boot").tree == (
        "or", (("label", "Sandal"), ("label", "Sneaker"), ("label", "Ankle boot")))
    assert parse_formula("Shirt AND NOT T-shirt or top").tree == (
        "and", (("label", "Shirt"), ("not", ("label", "T-shirt or top"))))


@pytest.mark.parametrize("text, tree", [
    ("Bag", ("label", "Bag")),
    # NOT binds tighter than AND, AND tighter than OR; parentheses group.
    ("NOT Bag AND Coat OR Dress", ("or", (("and", (("not", ("label", "Bag")), ("label", "Coat"))),
                                          ("label", "Dress")))),
    ("NOT (Bag OR Coat)", ("not", ("or", (("label", "Bag"), ("label", "Coat"))))),
    ("Ankle   boot", ("label", "Ankle boot")),  # words of a label are joined by single spaces
    ("ORANGE ANDES", ("label", "ORANGE ANDES")),  # operators are whole words
    ('"Rock AND roll" OR Jazz', ("or", (("label", "Rock AND roll"), ("label", "Jazz")))),
])
def test_grammar(text, tree):
    assert parse_formula(text).tree == tree


@pytest.mark.parametrize("text, message", [
    ("Sandal OR", "the line ends too soon; expected .*a label"),
    ("(Bag", "the line ends too soon; expected \\)"),
    ("AND Bag", "column 1: unexpected 'AND Bag'"),
    ("Bag OR OR Coat", "column 8: unexpected 'OR Coat'"),
    ('"a\\q"', "quoted label .* does not read"),
])
def test_syntax_errors_say_where(text, message):
    with pytest.raises(InvalidInputError, match=message):
        parse_formula(text)


def test_every_bad_line_is_reported_at_once_by_its_line_number():
    concepts = parse_concepts("Sandal OR Sneaker\n\nsandal\nShirt AND (Bag\nShirt AND NOT T-shirt or top\n"
                              "Tshirt OR Coat\n", "formulas", "formulas.txt")
    with pytest.raises(InvalidInputError) as error:
        parse_formulas(concepts, LABELS)
    message = str(error.value)
    assert "formulas: 3 of 5 line(s) are not formulas over the probe's labels" in message
    # Line numbers count the blank line 2, as an editor shows them.
    assert "line 3 ('sandal'): no label 'sandal' (did you mean 'Sandal'?)" in message
    assert "line 4 ('Shirt AND (Bag'): the line ends too soon" in message
    assert "line 6 ('Tshirt OR Coat'): no label 'Tshirt'" in message
    assert "line 1 " not in message and "line 5 " not in message


def test_a_formula_concept_is_the_boolean_combination_of_its_labels():
    generator = torch.Generator().manual_seed(0)
    has = torch.rand(200, len(LABELS), generator=generator) < 0.2  # several labels per image, or none
    has[has.sum(dim=1) == 0, 0] = True  # the labels source needs a label on every image
    features = has.float() / has.sum(dim=1, keepdim=True).float().sqrt()
    labelled = LabelledProbe(ConceptSet("labels", tuple(LABELS), "class sub-folders"), features,
                             torch.eye(len(LABELS)), "fingerprint")
    column = {name: c for c, name in enumerate(LABELS)}
    formulas = ConceptSet("formulas", ("Sandal OR Sneaker OR Ankle boot", "Shirt AND NOT T-shirt or top",
                                       "NOT (Bag OR Coat)", "Dress"), "formulas.txt")
    probe = formula_probe(labelled, formulas)
    expected = torch.stack([
        has[:, column["Sandal"]] | has[:, column["Sneaker"]] | has[:, column["Ankle boot"]],
        has[:, column["Shirt"]] & ~has[:, column["T-shirt or top"]],
        ~(has[:, column["Bag"]] | has[:, column["Coat"]]),
        has[:, column["Dress"]],
    ], dim=1)
    assert torch.equal(probe.indicator(), expected)
    assert probe.concepts.concepts == formulas.concepts and probe.fingerprint != labelled.fingerprint
    # Scaled as the labels are: unit rows for images with a concept; the others point elsewhere.
    norms = probe.image_features.norm(dim=1)
    assert torch.allclose(norms, torch.ones(200))
    cosines = torch.nn.functional.normalize(probe.image_features) @ torch.nn.functional.normalize(
        probe.text_features).T
    assert torch.equal(cosines[~expected.any(dim=1)], torch.zeros(int((~expected.any(dim=1)).sum()), 4))


def test_cli_redescribes_a_labelled_run_with_formulas_from_the_cache(tmp_path, capsys):
    command = ["describe", "--target_model", "small_cnn",
               "--target_checkpoint", str(demo.MODELS["trained"].checkpoint()),
               "--target_layers", "fc", "--d_probe", str(demo.DEMO_DIR / demo.PROBE_DIR),
               "--concept_source", "labels", "--device", "cpu", "--num_workers", "0", "--batch_size", "250",
               "--activation_dir", str(tmp_path / "cache"), "--result_dir", str(tmp_path / "results"), "--quiet"]
    assert main(command) == 0
    assert "fc: 10 units, 10 distinct concepts; 10 labels are the majority label of their top 100 images" in \
        capsys.readouterr().out
    formulas = tmp_path / "formulas.txt"
    formulas.write_text("Sandal OR Sneaker OR Ankle boot\nShirt AND NOT T-shirt or top\nTrouser\nBag\n")
    assert main([*command, "--concept_set", str(formulas)]) == 0
    assert "Reused from the cache: activations fc" in capsys.readouterr().out
    run = load_run(max((tmp_path / "results").iterdir(), key=lambda path: path.stat().st_mtime))
    labels = dict(zip(run.descriptions["unit"], run.descriptions["description"]))
    # The classifier's footwear outputs (Sandal 5, Sneaker 7, Ankle boot 9) fire on footwear, and its
    # Shirt, Trouser and Bag outputs on their classes.
    assert [labels[unit] for unit in (5, 7, 9)] == ["Sandal OR Sneaker OR Ankle boot"] * 3
    assert (labels[6], labels[1], labels[8]) == ("Shirt AND NOT T-shirt or top", "Trouser", "Bag")
    (check,) = run.manifest.majority_check
    assert main(["evaluate", str(run.path)]) == 0
    assert (f"fc: {check.agreeing} of 10 units ({check.share:.0%}) are labelled with the label most of their "
            "top 100 images carry") in capsys.readouterr().out

    formulas.write_text("Sandal OR\nsandal\n")
    assert main([*command, "--concept_set", str(formulas)]) == 2
    err = capsys.readouterr().err
    assert "line 1 ('Sandal OR'): the line ends too soon" in err and "line 2 ('sandal'): no label" in err


def test_the_demo_is_redescribed_from_the_packages_files_under_a_new_name(tmp_path):
    from dissect_core.choices.config import DescribeConfig
    from dissect_core.engine.pipeline import config_from_run, probe_label_names

    trained, untrained = (load_run(folder) for folder in demo.demo_runs())
    shoes = ConceptSet("shoes.txt", ("Sandal OR Sneaker",), "upload")
    config = config_from_run(trained, concept_set=shoes)
    # Not the manifest's paths (relative to the demo folder, as a bundle's are): the package's own files.
    assert config.target_checkpoint == str(demo.MODELS["trained"].checkpoint())
    assert config.d_probe == str(demo.DEMO_DIR / demo.PROBE_DIR)
    assert (config.activation_dir, config.result_dir) == (DescribeConfig.activation_dir, DescribeConfig.result_dir)
    assert (config.concept_source, config.concept_set, config.similarity_fn) == ("labels", shoes, "auprc")
    assert config.run_name == "small CNN · trained on Fashion-MNIST · shoes"
    assert config_from_run(untrained).target_checkpoint == str(demo.MODELS["untrained"].checkpoint())
    assert config_from_run(untrained).run_name == demo.MODELS["untrained"].run_name  # no new list: no new name
    assert probe_label_names(config_from_run(trained, activation_dir=str(tmp_path))) == tuple(sorted(demo.CLASSES))

"""dissect_core.runs.analysis on small hand-made frames with known answers, and on the reference CSVs."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from dissect_core.runs import analysis
from dissect_core.common.errors import InvalidInputError
from dissect_core.runs.run_folders import load_run


def frame(rows: list[tuple[str, int, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["layer", "unit", "description", "similarity"])


# Model A: layer4 is listed before layer2 on purpose (file order, not alphabetical).
A = frame([
    ("layer4", 0, "dog", 0.50), ("layer4", 1, "cat", 0.40), ("layer4", 2, "dog", 0.30),
    ("layer2", 0, "dotted", 0.20), ("layer2", 1, "dotted", 0.25), ("layer2", 2, "stripe", 0.10),
    ("layer2", 3, "dog", 0.15),
])
# Model B: shares layer2 and layer4 with A, has layer3 of its own.
B = frame([
    ("layer2", 0, "dotted", 0.30), ("layer2", 1, "green", 0.20), ("layer2", 2, "green", 0.22),
    ("layer2", 3, "green", 0.21),
    ("layer3", 0, "grid", 0.10),
    ("layer4", 0, "cat", 0.60), ("layer4", 1, "bus", 0.70), ("layer4", 2, "dog", 0.30),
])


def test_unique_concept_counts_per_layer_in_file_order_and_overall() -> None:
    counts = analysis.unique_concept_counts(A)
    assert counts == analysis.ConceptCounts({"layer4": 2, "layer2": 3}, overall=4)
    assert list(counts.per_layer) == ["layer4", "layer2"]
    # "dog" labels units in both layers of A and counts once overall.
    assert analysis.unique_concept_counts(B) == analysis.ConceptCounts({"layer2": 2, "layer3": 1, "layer4": 3}, 6)


def test_a_layer_called_overall_does_not_collide_with_the_overall_count() -> None:
    counts = analysis.unique_concept_counts(frame([("overall", 0, "dog", 0.1), ("overall", 1, "dog", 0.2),
                                                   ("layer4", 0, "cat", 0.3)]))
    assert counts == analysis.ConceptCounts({"overall": 1, "layer4": 1}, overall=2)


def test_layer_summary_values() -> None:
    summary = analysis.layer_summary(A)
    assert list(summary.columns) == list(analysis.SUMMARY_COLUMNS)
    assert summary["layer"].tolist() == ["layer4", "layer2"]
    assert summary["units"].tolist() == [3, 4]
    assert summary["distinct_concepts"].tolist() == [2, 3]
    assert summary["top_concept"].tolist() == ["dog", "dotted"]
    assert summary["top_concept_units"].tolist() == [2, 2]
    layer2 = summary.iloc[1]
    assert layer2["mean_similarity"] == pytest.approx(0.175)
    assert layer2["median_similarity"] == pytest.approx(0.175)
    assert (layer2["min_similarity"], layer2["max_similarity"]) == (0.10, 0.25)
    assert layer2["q1_similarity"] <= layer2["median_similarity"] <= layer2["q3_similarity"]


def test_layer_summary_breaks_ties_alphabetically() -> None:
    summary = analysis.layer_summary(frame([("l", 0, "zebra", 0.1), ("l", 1, "apple", 0.2)]))
    assert summary.loc[0, "top_concept"] == "apple"
    assert summary.loc[0, "top_concept_units"] == 1


def test_summarize_models_stacks_models_and_filters_layers() -> None:
    summary = analysis.summarize_models({"A": A, "B": B}, layers=["layer2"])
    assert summary[["model", "layer", "distinct_concepts"]].values.tolist() == [["A", "layer2", 3], ["B", "layer2", 2]]
    assert analysis.summarize_models({}).empty


def test_shared_concepts_filters_sorts_and_lists_units() -> None:
    shared = analysis.shared_concepts(B, min_units=1)
    assert shared["layer"].tolist() == ["layer2", "layer2", "layer3", "layer4", "layer4", "layer4"]
    assert shared.iloc[0].to_dict() == {"layer": "layer2", "concept": "green", "n_units": 3, "units": [1, 2, 3]}
    # Ties on n_units are ordered by concept name.
    assert shared[shared["layer"] == "layer4"]["concept"].tolist() == ["bus", "cat", "dog"]

    shared2 = analysis.shared_concepts(A, min_units=2)
    assert shared2[["layer", "concept", "n_units"]].values.tolist() == [["layer4", "dog", 2], ["layer2", "dotted", 2]]
    assert shared2["units"].tolist() == [[0, 2], [0, 1]]

    empty = analysis.shared_concepts(A, min_units=10)
    assert empty.empty and list(empty.columns) == ["layer", "concept", "n_units", "units"]


def test_compare_layers_names_layers_of_one_model_only() -> None:
    assert analysis.compare_layers(A, B) == (["layer4", "layer2"], [], ["layer3"])
    assert analysis.compare_layers(B, A) == (["layer2", "layer4"], ["layer3"], [])


def test_compare_models_only_a_only_b_both() -> None:
    comparison = analysis.compare_models(A, B)
    assert list(comparison.columns) == ["layer", "concept", "n_units_a", "n_units_b", "where"]
    assert "layer3" not in set(comparison["layer"])  # only in B: left out, named by compare_layers
    rows = {(r.layer, r.concept): (r.n_units_a, r.n_units_b, r.where) for r in comparison.itertuples()}
    assert rows == {
        ("layer4", "dog"): (2, 1, "both"),
        ("layer4", "cat"): (1, 1, "both"),
        ("layer4", "bus"): (0, 1, "only B"),
        ("layer2", "dotted"): (2, 1, "both"),
        ("layer2", "stripe"): (1, 0, "only A"),
        ("layer2", "dog"): (1, 0, "only A"),
        ("layer2", "green"): (0, 3, "only B"),
    }
    # Layer in A's file order, then both / only A / only B, then most units first.
    assert comparison["concept"].tolist() == ["dog", "cat", "bus", "dotted", "dog", "stripe", "green"]


def test_compare_models_without_common_layers_is_empty() -> None:
    assert analysis.compare_models(A, frame([("fc", 0, "dog", 0.1)])).empty
    assert analysis.jaccard_by_layer(A, frame([("fc", 0, "dog", 0.1)])).empty


def test_jaccard_by_layer() -> None:
    jaccard = analysis.jaccard_by_layer(A, B)
    assert jaccard["layer"].tolist() == ["layer4", "layer2"]
    layer4, layer2 = jaccard.iloc[0], jaccard.iloc[1]
    # layer4: {dog, cat} vs {cat, bus, dog} -> 2 shared of 3.
    assert (layer4["distinct_a"], layer4["distinct_b"], layer4["shared"]) == (2, 3, 2)
    assert layer4["jaccard"] == pytest.approx(2 / 3)
    # layer2: {dotted, stripe, dog} vs {dotted, green} -> 1 shared of 4.
    assert layer2["jaccard"] == pytest.approx(1 / 4)
    # Same index, same label: layer4 unit 2 (dog) and layer2 unit 0 (dotted).
    assert jaccard["same_unit_same_concept"].tolist() == [1, 1]


def test_units_with_concept() -> None:
    units = analysis.units_with_concept(A, "dog")
    assert units[["layer", "unit"]].values.tolist() == [["layer4", 0], ["layer4", 2], ["layer2", 3]]
    assert analysis.units_with_concept(A, "no such concept").empty


def test_rank_units_most_interpretable_first_nan_last() -> None:
    df = frame([("l", 0, "a", 0.2), ("l", 1, "b", math.nan), ("l", 2, "c", 0.9), ("l", 3, "d", 0.2)])
    ranked = analysis.rank_units(df, "l")
    assert ranked["rank"].tolist() == [1, 2, 3, 4]
    assert ranked["unit"].tolist() == [2, 0, 3, 1]
    assert list(ranked.columns) == ["rank", "unit", "concept", "similarity"]
    with pytest.raises(InvalidInputError, match="layer9"):
        analysis.rank_units(df, "layer9")


# --------------------------------------------------------------------------- reference CSVs

REFERENCE_RUNS = "clip_dissect_results/ashishsubedi_TML25_A4_27"


@pytest.fixture
def reference_pair(reference_dir):
    folder = reference_dir / REFERENCE_RUNS
    return (load_run(folder / "resnet18_25_07_16_18_08").descriptions,
            load_run(folder / "resnet18_places_25_07_16_17_57").descriptions)


@pytest.mark.reference
def test_reference_unique_counts(reference_pair) -> None:
    imagenet, places = reference_pair
    assert analysis.unique_concept_counts(imagenet) == analysis.ConceptCounts(
        {"layer2": 68, "layer3": 124, "layer4": 278}, overall=374)
    assert analysis.unique_concept_counts(places) == analysis.ConceptCounts(
        {"layer2": 66, "layer3": 135, "layer4": 314}, overall=428)
    assert analysis.layer_summary(imagenet)["units"].tolist() == [128, 256, 512]


@pytest.mark.reference
def test_reference_model_comparison(reference_pair) -> None:
    """The numbers of clip_dissect_reference.md §2 (shared labels, Jaccard, same unit and label)."""
    jaccard = analysis.jaccard_by_layer(*reference_pair)
    assert jaccard["shared"].tolist() == [31, 55, 110]
    assert jaccard["jaccard"].round(2).tolist() == [0.30, 0.27, 0.23]
    assert jaccard["same_unit_same_concept"].tolist() == [6, 4, 3]
    comparison = analysis.compare_models(*reference_pair)
    both = comparison[comparison["where"] == "both"].groupby("layer").size()
    assert both.to_dict() == {"layer2": 31, "layer3": 55, "layer4": 110}
    top = analysis.shared_concepts(reference_pair[0], min_units=4)
    assert top.iloc[0][["layer", "concept", "n_units"]].tolist() == ["layer2", "dotted", 23]


def test_best_unit_is_the_one_with_the_highest_similarity_not_the_first_row() -> None:
    units = analysis.units_with_concept(
        frame([("layer3", 186, "dog", 0.269), ("layer4", 446, "dog", 0.669), ("layer4", 1, "dog", 0.1)]), "dog")
    assert units.iloc[0]["unit"] == 186  # file order first
    best = analysis.best_unit(units)
    assert (best["layer"], best["unit"]) == ("layer4", 446)
    unscored = units.assign(similarity=float("nan"))
    assert analysis.best_unit(unscored)["unit"] == 186

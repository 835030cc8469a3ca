"""Figures of a sweep: depth profiles, category shares, concepts appearing and vanishing, the table."""
import pandas as pd
import pytest

from dissect_core.runs.run import Run
from dissect_core.runs.sweep_summary import (SweepPoint, category_share_by_depth, concept_changes, depth_profile,
                                             relative_depths, sweep_table)


def _run(label: str, layers: dict[str, list[str]]) -> Run:
    rows = [(layer, unit, concept, 1.0) for layer, concepts in layers.items() for unit, concept in enumerate(concepts)]
    return Run(label, pd.DataFrame(rows, columns=["layer", "unit", "description", "similarity"]))


POINTS = [
    SweepPoint(0, _run("step 0", {"conv1": ["red", "red"], "conv2": ["red", "dog", "dog"], "fc": ["dog"]}), step=0),
    SweepPoint(1, _run("step 100", {"conv1": ["red", "striped"], "conv2": ["dog", "cat", "kitchen"], "fc": ["cat"]}),
               step=100),
]


def test_depth_runs_from_first_to_last_layer_whatever_the_network_length():
    assert relative_depths(["conv1", "conv2", "fc"]) == {"conv1": 0.0, "conv2": 0.5, "fc": 1.0}
    assert relative_depths(["fc"]) == {"fc": 0.0}
    profile = depth_profile(POINTS)
    first = profile[profile["position"] == 0].set_index("layer")
    assert first.loc["conv2", "depth"] == 0.5 and first.loc["conv2", "distinct_concepts"] == 2
    assert list(profile["units"]) == [2, 3, 1, 2, 3, 1]


def test_concepts_that_appear_and_vanish_along_the_sweep():
    changes = concept_changes(POINTS)
    appears = set(changes[changes["change"] == "appears"]["concept"])
    vanishes = set(changes[changes["change"] == "vanishes"]["concept"])
    assert appears == {"striped", "cat", "kitchen"} and vanishes == set()
    reverse = concept_changes([SweepPoint(0, POINTS[1].run), SweepPoint(1, POINTS[0].run)])
    assert set(reverse[reverse["change"] == "vanishes"]["concept"]) == {"striped", "cat", "kitchen"}
    # the units a vanishing concept had in the run before
    assert reverse.set_index("concept").loc["cat", "units"] == 2


def test_category_shares_sum_to_one_per_run_and_layer():
    shares = category_share_by_depth(POINTS)
    assert shares.groupby(["position", "layer"])["share"].sum().tolist() == pytest.approx([1.0] * 6)


def test_table_leaves_absent_figures_empty_not_zero():
    table = sweep_table(POINTS)
    assert list(table["distinct_concepts"]) == [2, 5]
    assert table["stable_share"].isna().all() and table["output_top1"].isna().all()
    assert list(table["step"]) == [0, 100]


def test_a_sweep_index_naming_a_folder_outside_the_sweep_is_refused(tmp_path):
    import json

    from dissect_core.common.errors import InvalidInputError
    from dissect_core.runs.sweep_index import read_sweep_entries

    entry = {"position": 0, "folder": "../elsewhere", "name": None, "target_model": "m", "target_checkpoint": None,
             "step": None, "layer_rule": None, "layers": ["a"], "identity": "x"}
    (tmp_path / "sweep.json").write_text(json.dumps({"format": "dissect_core-sweep/1", "runs": [entry]}))
    with pytest.raises(InvalidInputError, match="not a folder name"):
        read_sweep_entries(tmp_path)


def test_labelled_runs_along_a_sweep_are_told_in_their_own_words():
    from dissect_core.runs.demo_runs import DEMO_DIR, SWEEP_DIR
    from dissect_core.runs.sweep_index import read_sweep
    from dissect_core.runs.sweep_summary import figures_along, sweep_table

    points = [SweepPoint(item.entry.position, item.run, item.entry.step) for item in read_sweep(DEMO_DIR / SWEEP_DIR)]
    table = sweep_table(points)
    assert set(table["method"]) == {"probe labels"}  # no CLIP was involved
    assert set(category_share_by_depth(points)["category"]) == {"class"}  # Fashion-MNIST's own classes
    for point, share in zip(points, table["majority_share"]):
        checks = point.run.manifest.majority_check
        assert share == sum(c.agreeing for c in checks) / sum(len(c.majority) for c in checks)
    figures = figures_along(points)
    output = figures[figures["figure"] == "output-layer check"]
    assert list(output["step"]) == list(table["step"])
    # The classifier's units carry their classes only once trained: none at the initial weights, all at the end.
    assert output["share"].iloc[0] == 0 and output["share"].iloc[-1] == 1


def test_a_training_sweeps_units_are_followed_along_it():
    from dissect_core.runs.demo_runs import CLASSES, DEMO_DIR, SWEEP_DIR
    from dissect_core.runs.sweep_index import read_sweep
    from dissect_core.runs.sweep_summary import one_network, unit_labels_along

    points = [SweepPoint(item.entry.position, item.run, item.entry.step) for item in read_sweep(DEMO_DIR / SWEEP_DIR)]
    assert one_network(points)
    labels = unit_labels_along(points, "fc")
    assert len(labels) == 10 * len(points)
    last = labels[labels["position"] == points[-1].position]
    # At the end of training each output unit carries its own class (the output-layer check).
    assert list(last["description"]) == list(CLASSES)
    # Runs of other networks (or other layers) have no common units to follow.
    other = Run(label="x", descriptions=pd.DataFrame({"layer": ["conv1"], "unit": [0], "description": ["Bag"],
                                                       "similarity": [0.1]}))
    assert not one_network([*points, SweepPoint(len(points), other)])

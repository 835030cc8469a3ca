"""The concept categoriser, against NetDissect-Lite's own categories of Broden labels."""
from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest

from dissect_core.runs.categories import CATEGORIES, categorise, category_mix

NETDISSECT = Path("clip_dissect_results") / "Trustworthy-ML-Lab_CLIP-dissect" / "NetDissect_results"


def test_each_source_gives_its_category():
    assert categorise("red-c") == "colour" and categorise("kitchen-s") == "scene"  # Broden's naming
    assert categorise("striped") == "texture" and categorise("wicker") == "material"  # DTD, OpenSurfaces
    # WordNet: most frequent noun sense, plurals and multi-word concepts by their head.
    assert [categorise(w) for w in ("red", "kitchen", "wheel", "wood", "dogs", "golden retriever", "idea")] == [
        "colour", "scene", "part", "material", "object", "object", "other"]
    assert categorise("qwertyuiop") == "other"


def test_category_mix_per_layer_in_file_order():
    descriptions = pd.DataFrame({"layer": ["layer4", "layer4", "layer4", "layer2"], "unit": [0, 1, 2, 0],
                                 "description": ["kitchen", "dog", "dog", "red"], "similarity": 1.0})
    mix = category_mix(descriptions)
    assert list(mix["layer"]) == ["layer4", "layer4", "layer2"]
    assert list(mix["category"]) == ["object", "scene", "colour"]
    assert list(mix["units"]) == [2, 1, 1]
    assert mix[mix["layer"] == "layer4"]["share"].sum() == pytest.approx(1.0)
    assert set(mix["category"]) <= set(CATEGORIES)


@pytest.mark.reference
def test_agreement_with_netdissect_categories(reference_dir: Path):
    truth = {}
    for path in sorted((reference_dir / NETDISSECT).glob("*.csv")):
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                truth[row["label"]] = {"color": "colour"}.get(row["category"], row["category"])
    assert len(truth) >= 300
    agree = sum(categorise(label) == category for label, category in truth.items()) / len(truth)
    # The README reports this figure (286 of 310 labels); labels without Broden's -c/-s
    # suffixes go through WordNet alone and agree less often (see the README).
    assert agree >= 0.9

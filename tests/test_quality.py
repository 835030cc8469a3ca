"""Quality figures on data whose right answer is known."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from dissect_core.common.errors import InvalidInputError
from dissect_core.engine.label_quality import (
    QualitySettings, distinct_interval, fisher_interval, layer_quality, minimum_probe_images, output_layer_check, output_layers,
    quality_files, rescore_labels,
)
from dissect_core.runs.quality_tables import read_label_quality, read_layer_quality, read_quality_points
from dissect_core.engine.similarity import similarity_matrix

N_IMAGES, N_CONCEPTS, DIM = 600, 40, 48
SMALL = {"top_k": 20}


def _world(seed: int = 0):
    """Images show concepts; CLIP features are the shown concepts' directions plus noise."""
    g = torch.Generator().manual_seed(seed)
    text = torch.randn(N_CONCEPTS, DIM, generator=g)
    shown = (torch.rand(N_IMAGES, N_CONCEPTS, generator=g) < 0.08).float()
    images = shown @ text + 0.3 * torch.randn(N_IMAGES, DIM, generator=g)
    return g, text, shown, images


def _run(name, images, text, acts, params):
    scores = similarity_matrix(name, images, text, acts, **params)
    values, indices = torch.topk(scores, 5, dim=1)
    names = [f"c{i}" for i in range(N_CONCEPTS)]
    descriptions = pd.DataFrame({"unit": range(acts.shape[1]), "description": [names[i] for i in indices[:, 0]],
                                 "similarity": values[:, 0].numpy()})
    return descriptions, values, indices, names


def _quality(name, images, text, acts, params=SMALL, **settings):
    descriptions, values, indices, names = _run(name, images, text, acts, params)
    return layer_quality("layer", descriptions, values, indices, names, images, text, acts, name, params,
                         QualitySettings(**settings))


@pytest.mark.parametrize("name", ["soft_wpmi", "wpmi"])
def test_rescoring_with_all_images_reproduces_the_run(name):
    g, text, shown, images = _world()
    acts = torch.randn(N_IMAGES, 16, generator=g) + shown[:, :16] * 2
    _, _, indices, _ = _run(name, images, text, acts, SMALL)
    candidates, unit_candidates = torch.unique(indices, return_inverse=True)
    labels = rescore_labels(name, SMALL, images, text, acts, candidates,
                            torch.ones(1, N_IMAGES, dtype=torch.int32))
    assert torch.equal(candidates[labels[0]], indices[:, 0])


def test_rescoring_a_resample_matches_the_full_function_on_the_resampled_images():
    g, text, shown, images = _world(1)
    acts = torch.randn(N_IMAGES, 16, generator=g) + shown[:, :16]
    _, _, indices, _ = _run("soft_wpmi", images, text, acts, SMALL)
    candidates = torch.unique(indices)
    draws = torch.randint(N_IMAGES, (N_IMAGES,), generator=g)
    counts = torch.bincount(draws, minlength=N_IMAGES).int().unsqueeze(0)
    labels = candidates[rescore_labels("soft_wpmi", SMALL, images, text, acts, candidates, counts)[0]]
    # The same resample, scored over all concepts by the run's own function.
    full = similarity_matrix("soft_wpmi", images[draws], text, acts[draws], **SMALL).argmax(dim=1)
    # Only a concept outside every unit's top five could differ; here none does for most units.
    assert (labels == full).float().mean() >= 0.9


def test_planted_units_are_stable_and_correlate():
    g, text, shown, images = _world(2)
    acts = shown[:, :12] * 3 + 0.2 * torch.randn(N_IMAGES, 12, generator=g)
    quality = _quality("soft_wpmi", images, text, acts)
    units = quality.units
    assert (units["description"] == [f"c{i}" for i in range(12)]).all()
    assert units["stability"].min() >= 0.9
    assert units["correlation"].min() > 0.5
    assert (units["correlation_low"] <= units["correlation"]).all()
    assert (units["correlation"] <= units["correlation_high"]).all()
    assert quality.stable_share == 1.0
    assert quality.distinct_low == quality.distinct == quality.distinct_high == 12  # every resample agrees
    assert quality.scatter_activation.shape == (500 if N_IMAGES * 0.5 >= 500 else 300, 12)


def test_random_activations_get_low_figures():
    g, text, shown, images = _world(3)
    acts = torch.rand(N_IMAGES, 32, generator=g)
    quality = _quality("soft_wpmi", images, text, acts)
    assert quality.units["stability"].mean() < 0.6
    assert quality.units["correlation"].abs().mean() < 0.15
    assert quality.stable_share < 0.3
    assert quality.distinct_low < quality.distinct_high  # the count moves with the sample


def test_margin_flags_near_synonyms():
    g, text, shown, images = _world(4)
    text[1] = text[0] + 0.01 * torch.randn(DIM, generator=g)  # concept 1 ≈ concept 0
    acts = shown[:, [0, 5]] * 3 + 0.2 * torch.randn(N_IMAGES, 2, generator=g)
    units = _quality("wpmi", images, text, acts).units
    assert units["near_synonym"].tolist()[0]
    assert set(units["runner_up"].iloc[:1]) | set(units["description"].iloc[:1]) == {"c0", "c1"}
    assert not units["near_synonym"].tolist()[1]


def test_too_few_images_names_the_minimum():
    g, text, shown, images = _world(5)
    acts = torch.rand(N_IMAGES, 4, generator=g)
    needed = minimum_probe_images(100, QualitySettings())
    assert needed == 200
    with pytest.raises(InvalidInputError, match=f"at least {minimum_probe_images(400, QualitySettings())}"):
        _quality("soft_wpmi", images, text, acts, params={"top_k": 400})


def test_other_similarity_functions_are_refused_with_a_reason():
    g, text, shown, images = _world(6)
    acts = torch.rand(N_IMAGES, 4, generator=g)
    with pytest.raises(InvalidInputError, match="soft_wpmi or wpmi"):
        _quality("cos_similarity", images, text, acts, params={})


def test_distinct_interval_is_the_bootstrap_spread_around_the_full_count():
    # Resamples with 3, 4, 4, 4, 5 distinct labels (median 4); the full sample had 6.
    labels = torch.tensor([[0, 1, 2, 2, 2], [0, 1, 2, 3, 3], [0, 1, 2, 3, 0], [4, 1, 2, 3, 3], [0, 1, 2, 3, 4]])
    assert distinct_interval(labels, 6, 0.95, most=10) == (5, 7)
    assert distinct_interval(labels[1:4], 4, 0.95, most=10) == (4, 4)


def test_distinct_interval_stays_inside_what_is_possible():
    # The same spread (−1, +1 around the median) placed around a full count of 6: with only 6
    # concepts (or 6 units) there cannot be 7 distinct labels, and never fewer than one.
    labels = torch.tensor([[0, 1, 2, 2, 2], [0, 1, 2, 3, 3], [0, 1, 2, 3, 0], [4, 1, 2, 3, 3], [0, 1, 2, 3, 4]])
    assert distinct_interval(labels, 6, 0.95, most=6) == (5, 6)
    assert distinct_interval(labels, 1, 0.95, most=6) == (1, 2)


def test_the_demo_layers_distinct_intervals_are_possible():
    # Each layer's interval of distinct labels lies within 1..min(units, concepts) and holds the count.
    from dissect_core.runs.demo_runs import demo_runs
    from dissect_core.runs.run_folders import load_run

    for folder in demo_runs():
        run = load_run(folder)
        concepts = run.manifest.concept_set.n_concepts
        for row in run.layer_quality.itertuples():
            assert 1 <= row.distinct_low <= row.distinct <= row.distinct_high <= min(row.units, concepts), row


def test_fisher_interval_widens_with_fewer_images():
    r = torch.tensor([0.5])
    narrow = fisher_interval(r, 1000, 0.95)
    wide = fisher_interval(r, 20, 0.95)
    assert wide[0] < narrow[0] < 0.5 < narrow[1] < wide[1]
    assert abs(float(narrow[0]) - 0.452) < 0.005  # tanh(atanh(.5) − 1.96/√997)


def _classifier_frames(labels: list[str], top5: list[list[str]]):
    descriptions = pd.DataFrame({"layer": "fc", "unit": range(len(labels)), "description": labels,
                                 "similarity": 1.0})
    top = pd.DataFrame([("fc", u, r, c, 1.0) for u, row in enumerate(top5) for r, c in enumerate(row)],
                       columns=["layer", "unit", "rank", "concept", "score"])
    return descriptions, top


def test_output_layer_check_on_a_planted_classifier():
    classes = ["cat", "dog", "car", "tree"]
    # A trained classifier: unit i gets class i; unit 3 only has its class second.
    descriptions, top = _classifier_frames(["cat", "dog", "car", "car"],
                                           [["cat", "dog"], ["dog", "cat"], ["car", "tree"], ["car", "tree"]])
    check = output_layer_check("fc", descriptions, top, classes)
    assert (check.top1, check.top5, check.units) == (0.75, 1.0, 4)
    assert output_layers(descriptions, 4) == ["fc"]
    # An untrained one: labels unrelated to the unit's class.
    descriptions, top = _classifier_frames(["dog", "car", "cat", "cat"], [["dog"], ["car"], ["cat"], ["cat"]])
    assert output_layer_check("fc", descriptions, top, classes).top1 == 0.0
    with pytest.raises(InvalidInputError, match="4 units but there are 3 class names"):
        output_layer_check("fc", descriptions, top, classes[:3])


def test_quality_files_round_trip_and_refuse_tampering(tmp_path):
    g, text, shown, images = _world(7)
    acts = shown[:, :6] * 3 + 0.2 * torch.randn(N_IMAGES, 6, generator=g)
    quality = _quality("soft_wpmi", images, text, acts, resamples=5, scatter_points=50)
    files = quality_files([quality], {"layer": np.arange(N_IMAGES) + 1000})
    units = read_label_quality(files["label_quality.csv"])
    assert list(units.columns)[:4] == ["layer", "unit", "description", "similarity"]
    pd.testing.assert_series_equal(units["stability"], quality.units["stability"].astype("float64"),
                                   check_exact=False, rtol=1e-6)
    layers = read_layer_quality(files["label_quality_layers.csv"])
    assert layers.iloc[0]["distinct"] == quality.distinct
    [(image_ids, activation, similarity)] = read_quality_points(files["label_quality_points.npz"], 1)
    assert activation.shape == similarity.shape == (50, 6) and image_ids.min() >= 1000
    broken = files["label_quality.csv"].replace(b",True", b",maybe").replace(b",False", b",maybe")
    with pytest.raises(InvalidInputError, match="near_synonym"):
        read_label_quality(broken)
    with pytest.raises(InvalidInputError, match="npz"):
        read_quality_points(b"not a zip", 1)
    with pytest.raises(InvalidInputError, match="layer 2"):
        read_quality_points(files["label_quality_points.npz"], 2)

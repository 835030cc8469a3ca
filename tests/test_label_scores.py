"""Similarity functions for labelled probes (precision_at_k, auprc, iou) and the majority check."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from dissect_core.common.errors import InvalidInputError
from dissect_core.engine.label_quality import layer_quality, rescore_labels
from dissect_core.engine.label_scores import LabelPairs, label_score_matrix, majority_check
from dissect_core.engine.similarity import similarity_matrix


def labelled_features(indicator: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What the labels concept source builds: 1/√k on each of an image's k labels, one-hot concepts."""
    counts = indicator.sum(dim=1, keepdim=True).clamp(min=1).float()
    return indicator.float() / counts.sqrt(), torch.eye(indicator.shape[1])


def average_precision_above_chance(acts: torch.Tensor, has: torch.Tensor, weights: torch.Tensor) -> float:
    """Σ over positive images of w_i · (weighted share of positives among images scoring ≥ a_i), / Σ w_i;
    less the weighted share of positives among all images."""
    total = sum(float(weights[i]) for i in range(len(acts)) if has[i])
    if total == 0:
        return 0.0
    score = 0.0
    for i in range(len(acts)):
        if has[i] and weights[i] > 0:
            above = acts >= acts[i]
            score += float(weights[i]) * float((weights * has)[above].sum() / weights[above].sum())
    return score / total - total / float(weights.sum())


def weighted_top_list(acts: torch.Tensor, weights: torch.Tensor, top_k: int) -> list[int]:
    """The top_k list with each image repeated as often as its weight (acts have no ties)."""
    listed = []
    for image in torch.argsort(acts, descending=True).tolist():
        listed += [image] * int(weights[image])
    return listed[:top_k]


@pytest.fixture
def random_case():
    generator = torch.Generator().manual_seed(0)
    indicator = torch.rand(80, 5, generator=generator) < 0.3
    indicator[0] = False  # an image without any label
    tied = torch.randint(0, 6, (80, 4), generator=generator).float()  # many tied activations
    distinct = torch.randn(80, 4, generator=generator)
    weights = torch.randint(0, 3, (80,), generator=generator).double()  # bootstrap-like counts
    return indicator, tied, distinct, weights


def test_auprc_is_average_precision_above_chance_with_ties_and_weights(random_case):
    indicator, tied, _, weights = random_case
    pairs = LabelPairs.from_indicator(indicator)
    for image_weights in (torch.ones(80, dtype=torch.float64), weights):
        scores = label_score_matrix("auprc", pairs, tied, {}, image_weights)
        expected = torch.tensor([[average_precision_above_chance(tied[:, unit].double(), indicator[:, concept],
                                                                  image_weights)
                                  for concept in range(5)] for unit in range(4)], dtype=torch.float64)
        # Sums of at most 80 ratios in float64: far below 1e-9.
        assert torch.allclose(scores, expected, atol=1e-9)


def test_precision_and_iou_count_the_weighted_top_list(random_case):
    indicator, _, distinct, weights = random_case
    pairs = LabelPairs.from_indicator(indicator)
    precision = label_score_matrix("precision_at_k", pairs, distinct, {"top_k": 10}, weights)
    iou = label_score_matrix("iou", pairs, distinct, {"top_k": 10}, weights)
    for unit in range(4):
        top = weighted_top_list(distinct[:, unit], weights, 10)
        for concept in range(5):
            hits = sum(bool(indicator[image, concept]) for image in top)
            positives = float((weights * indicator[:, concept]).sum())
            assert precision[unit, concept].item() == pytest.approx(hits / 10)
            assert iou[unit, concept].item() == pytest.approx(hits / (10 + positives - hits))


def test_label_scores_label_the_unit_that_fires_on_a_label(random_case):
    indicator, _, _, _ = random_case
    # Unit k fires on the images of label k (plus noise): each score labels it k.
    acts = indicator[:, :4].float() + 0.1 * torch.rand(80, 4, generator=torch.Generator().manual_seed(1))
    image_features, text_features = labelled_features(indicator)
    for name, params in (("precision_at_k", {"top_k": 10}), ("auprc", {}), ("iou", {"top_k": 10})):
        scores = similarity_matrix(name, image_features, text_features, acts, **params)
        assert scores.argmax(dim=1).tolist() == [0, 1, 2, 3]


def test_a_dead_unit_scores_chance_whatever_the_order_of_the_images():
    # All activations tied: every image is at the one threshold, so AP is each label's share of the
    # images, in any order of the images, and the score (AP above chance) is 0 for every label.
    indicator = torch.tensor([[1, 0], [1, 0], [1, 0], [0, 1]], dtype=torch.bool)
    for images in (indicator, indicator.flip(0)):
        scores = label_score_matrix("auprc", LabelPairs.from_indicator(images), torch.zeros(4, 1), {})
        assert scores.tolist() == [[0.0, 0.0]]


def test_a_label_on_every_image_does_not_win_auprc():
    # Unit 0 fires on "a" (a quarter of the images) and "everything" is on all: AP 1 for both,
    # but only "a" beats chance.
    has_a = torch.arange(8) < 2
    indicator = torch.stack([has_a, torch.ones(8, dtype=torch.bool)], dim=1)
    scores = label_score_matrix("auprc", LabelPairs.from_indicator(indicator), has_a.float().view(8, 1), {})
    assert scores.tolist() == [[0.75, 0.0]]


def test_label_scores_refuse_clip_features_and_say_what_to_use():
    image_features, text_features = torch.randn(20, 8), torch.randn(3, 8)
    with pytest.raises(InvalidInputError, match="labels concept source.*use soft_wpmi"):
        similarity_matrix("auprc", image_features, text_features, torch.randn(20, 2))


def test_precision_needs_top_k_images():
    indicator = torch.eye(4, dtype=torch.bool).repeat(2, 1)
    image_features, text_features = labelled_features(indicator)
    with pytest.raises(InvalidInputError, match="8 images but precision_at_k counts each unit's top 100"):
        similarity_matrix("precision_at_k", image_features, text_features, torch.randn(8, 2))


def test_rescoring_with_every_image_once_gives_the_runs_labels(random_case):
    indicator, _, distinct, weights = random_case
    image_features, text_features = labelled_features(indicator)
    candidates = torch.tensor([0, 2, 3])
    for name, params in (("auprc", {}), ("precision_at_k", {"top_k": 10}), ("iou", {"top_k": 10})):
        scores = similarity_matrix(name, image_features, text_features, distinct, **params)
        labels = rescore_labels(name, params, image_features, text_features, distinct, candidates,
                                torch.stack([torch.ones(80, dtype=torch.int32), weights.int()]))
        assert labels[0].tolist() == scores[:, candidates].argmax(dim=1).tolist()
        weighted = label_score_matrix(name, LabelPairs.from_indicator(indicator), distinct, params, weights)
        assert labels[1].tolist() == weighted[:, candidates].argmax(dim=1).tolist()


def test_quality_figures_of_a_label_score_run():
    generator = torch.Generator().manual_seed(2)
    labels = torch.arange(300) % 3
    indicator = torch.nn.functional.one_hot(labels, 3).bool()
    acts = indicator.float() * 2 + torch.rand(300, 3, generator=generator)  # unit k fires on label k
    image_features, text_features = labelled_features(indicator)
    scores = similarity_matrix("auprc", image_features, text_features, acts)
    values, indices = torch.topk(scores, 3, dim=1)
    names = ["a", "b", "c"]
    descriptions = pd.DataFrame({"unit": range(3), "description": [names[i] for i in indices[:, 0].tolist()],
                                 "similarity": values[:, 0].numpy()})
    quality = layer_quality("layer", descriptions, values, indices, names, image_features, text_features, acts,
                            "auprc", {})
    assert quality.units["description"].tolist() == names
    assert quality.units["stability"].tolist() == [1.0, 1.0, 1.0]
    assert quality.units["heldout_label"].tolist() == names
    assert (quality.units["correlation"] > 0.8).all()  # activation ≈ 2·indicator + U(0, 1) noise


def test_majority_check_counts_labels_among_the_top_images():
    # Unit 0's top 4 images: 3 "a", 1 "b"; unit 1's: 2 "a", 2 "b" (a tie: both count as the majority).
    indicator = torch.tensor([[1, 0], [1, 0], [1, 0], [0, 1], [0, 1], [0, 1]], dtype=torch.bool)
    acts = torch.tensor([[6., 6.], [5., 5.], [4., 0.], [3., 4.], [0., 3.], [0., 0.]])
    check = majority_check("layer", indicator, acts, torch.tensor([1, 1]), ["a", "b"], top_k=4)
    assert (check.layer, check.top_k, check.units) == ("layer", 4, 2)
    assert check.majority == ["a", "a"] and check.majority_count == [3, 2] and check.label_count == [1, 2]
    assert check.agreeing == 1 and check.share == 0.5

"""Similarity functions for labelled probes, and the top-k majority check of labelled runs.

With the labels concept source (``dissect_core.engine.concept_sources``) every probe image
carries 0/1 labels, and the image × concept matrix P holds those labels' indicators.
soft-WPMI on such a P subtracts λ times a label's log-likelihood over the layer's other
units; with hard labels a top image without the label costs 3.5–6.2 nats, so at λ = 1
the label is the one most *distinctive* of the unit among the layer's units, which can
be a label few of its top images carry. The functions here score a unit against a
label by how well its activations pick out the label's images, one unit at a time:

* ``precision_at_k``: the share of the unit's ``top_k`` images that carry the label.
  The label it picks is the most frequent label among the unit's top images.
* ``auprc``: the average precision of the unit's activations as a ranking of all probe
  images for the label (the area under the precision–recall curve, as scikit-learn's
  ``average_precision_score`` computes it: tied activations form one threshold), less
  the label's share of the images, which is what a ranking by chance scores. It weighs
  the whole ranking, so a label wins by being near the top *and* rare below it; without
  the chance level a label on nearly every image would score nearly 1 for every unit.
* ``iou``: Network Dissection's intersection over union at the image level:
  |top_k ∩ L| / |top_k ∪ L| for the unit's ``top_k`` images and the label's images L.
  Against ``precision_at_k`` it prefers labels with about ``top_k`` images.

They need label indicators: a concept's text feature one-hot, the images' features
non-negative (what the labels source builds, formulas included). CLIP features are
refused with a message naming the fix.

Each score takes image weights too (how often each probe image is counted): the
label-quality figures (``dissect_core.engine.label_quality``) re-score bootstrap resamples and
the fit half of the probe set with them. A weight w repeats an image w times; the
average precision with weights is scikit-learn's with ``sample_weight``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

import torch

from dissect_core.choices.catalog import LABEL_SCORES
from dissect_core.common.errors import InvalidInputError
from dissect_core.common.progress import ProgressFn, report
from dissect_core.runs.manifest import MajorityCheck

if TYPE_CHECKING:
    from dissect_core.engine.similarity import ScoringSettings

# The top images the majority check counts labels in, whatever the similarity function
# (soft-WPMI's default top_k), so that runs scored differently compare.
MAJORITY_TOP_K = 100
# Elements of the largest (images or label pairs) × units block formed at once.
_BLOCK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class LabelPairs:
    """The labels of the probe images as (image, concept) pairs: which images carry which label."""

    images: torch.Tensor  # (L,) long, probe rows
    concepts: torch.Tensor  # (L,) long, sorted: each concept's pairs are contiguous
    n_images: int
    n_concepts: int

    @classmethod
    def from_indicator(cls, indicator: torch.Tensor) -> "LabelPairs":
        concepts, images = indicator.T.nonzero(as_tuple=True)
        return cls(images, concepts, indicator.shape[0], indicator.shape[1])

    def columns(self, keep: torch.Tensor) -> "LabelPairs":
        """Only the concepts ``keep`` (indices), renumbered 0..len(keep)−1 in that order."""
        new_index = torch.full((self.n_concepts,), -1, dtype=torch.long)
        new_index[keep] = torch.arange(keep.numel())
        mapped = new_index[self.concepts]
        chosen = mapped >= 0
        order = torch.argsort(mapped[chosen], stable=True)
        return LabelPairs(self.images[chosen][order], mapped[chosen][order], self.n_images, keep.numel())

    def transposed_matrix(self, dtype: torch.dtype) -> torch.Tensor:
        """The sparse (concepts × images) 0/1 matrix."""
        values = torch.ones(self.images.numel(), dtype=dtype)
        return torch.sparse_coo_tensor(torch.stack([self.concepts, self.images]), values,
                                       (self.n_concepts, self.n_images), check_invariants=True).coalesce()


def label_indicator(image_features: torch.Tensor, text_features: torch.Tensor, name: str) -> torch.Tensor:
    """The (images × concepts) bool matrix "image carries concept", from a labelled probe's
    features; an error saying what to use instead for features that are not label indicators."""
    text = text_features.float()
    nonzero = text != 0
    one_hot = bool((nonzero.sum(dim=1) == 1).all()) and bool((text[nonzero] > 0).all())
    if not one_hot or bool((image_features < 0).any()):
        raise InvalidInputError(
            f"The similarity function {name} scores units against the probe images' labels, so it needs the "
            "labels concept source (`concept_source` labels, with a probe folder of class sub-folders or a "
            "labels CSV); these concepts have CLIP features. For CLIP concepts use soft_wpmi (the "
            "method's default) or another similarity function."
        )
    column = nonzero.float().argmax(dim=1)
    return image_features.index_select(1, column.to(image_features.device)) > 0


def check_probe_size(name: str, n_images: int, params: dict) -> None:
    """Refuse a probe set smaller than the function's top_k, before the probe pass."""
    if name in LABEL_SCORES and "top_k" in params and n_images < params["top_k"]:
        raise InvalidInputError(
            f"The probe set has {n_images} images but {name} counts each unit's top {params['top_k']}. "
            f"Use a larger probe set or lower top_k (e.g. top_k={n_images})."
        )


def check_concept_source(name: str, concept_source: str) -> None:
    """A label score named for a CLIP run: said before anything is loaded."""
    if name in LABEL_SCORES and concept_source == "clip":
        raise InvalidInputError(
            f"The similarity function {name} scores units against the probe images' labels; it needs "
            "`concept_source` labels. With CLIP concepts use soft_wpmi (the method's default) or another "
            "similarity function."
        )


# ----------------------------------------------------------------------------- the scores


def _unit_blocks(n_rows: int, n_units: int) -> range:
    width = max(1, min(n_units, _BLOCK_ELEMENTS // max(1, n_rows)))
    return range(0, n_units, width)


def _top_shares(acts: torch.Tensor, weights: Optional[torch.Tensor], top_k: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each unit's top_k list with every image repeated as often as its weight: the rows
    (D × units) of its highest activations and how many of the top_k places each fills."""
    n_images = acts.shape[0]
    depth = min(n_images, top_k)
    while True:
        rows = torch.topk(acts, depth, dim=0).indices
        if weights is None:
            return rows, torch.ones(rows.shape, dtype=torch.float64, device=acts.device)
        counts = weights[rows]
        reached = counts.cumsum(dim=0)
        if depth == n_images or bool((reached[-1] >= top_k).all()):
            break
        depth = min(n_images, 2 * depth)
    return rows, (top_k - (reached - counts)).clamp(min=0).minimum(counts)


def _top_hits(pairs: LabelPairs, acts: torch.Tensor, weights: Optional[torch.Tensor], top_k: int,
              progress: Optional[ProgressFn], stage: str) -> torch.Tensor:
    """(units × concepts) float64: how many of each unit's top_k places hold an image with the concept."""
    n_units = acts.shape[1]
    labels_t = pairs.transposed_matrix(torch.float64).to(acts.device)
    hits = torch.empty(n_units, pairs.n_concepts, dtype=torch.float64, device=acts.device)
    blocks = _unit_blocks(pairs.n_images, n_units)
    for number, start in enumerate(blocks):
        block = acts[:, start:start + blocks.step]
        rows, shares = _top_shares(block, weights, top_k)
        placed = torch.zeros(pairs.n_images, block.shape[1], dtype=torch.float64, device=acts.device)
        placed.scatter_(0, rows, shares)
        hits[start:start + block.shape[1]] = torch.sparse.mm(labels_t, placed).T
        report(progress, stage, number + 1, len(blocks))
    return hits


def _average_precision(pairs: LabelPairs, acts: torch.Tensor, weights: Optional[torch.Tensor],
                       progress: Optional[ProgressFn], stage: str) -> torch.Tensor:
    """(units × concepts) average precision of each unit's activations for each concept, less
    the concept's (weighted) share of the images.

    For concept c with positive images i (weight w_i): AP = Σ_i w_i·prec(t_i) / Σ_i w_i, where
    t_i is image i's activation and prec(t) the weighted share of images with activation ≥ t
    that carry c (all images tied at t count, as one threshold). Per unit the images are
    sorted once; each (image, concept) pair then finds its threshold's counts by a sort of
    the pairs on (concept, tie group), so no images × concepts matrix is formed.
    """
    n_images, n_units = acts.shape
    device = acts.device
    weight = (torch.ones(n_images, dtype=torch.float64, device=device) if weights is None
              else weights.to(device=device, dtype=torch.float64))
    pair_images, pair_concepts = pairs.images.to(device), pairs.concepts.to(device)
    pair_weight = weight[pair_images]
    positives = torch.zeros(pairs.n_concepts, dtype=torch.float64, device=device).index_add_(
        0, pair_concepts, pair_weight)
    # Sorted by (concept, …), the pairs of a concept keep their stretch of positions in every unit's
    # order, so the positive weight of the concepts before it is the same for all units.
    positive_before = (torch.cumsum(positives, 0) - positives)[pair_concepts]  # by sorted pair position
    scores = torch.empty(n_units, pairs.n_concepts, dtype=torch.float64, device=device)
    inf = torch.tensor(math.inf, dtype=torch.float64, device=device)
    blocks = _unit_blocks(max(n_images, pair_images.numel()), n_units)
    for number, start in enumerate(blocks):
        block = acts[:, start:start + blocks.step]
        width = block.shape[1]
        values, order = torch.sort(block, dim=0, descending=True)
        ends = torch.ones_like(values, dtype=torch.bool)
        ends[:-1] = values[:-1] != values[1:]  # the last image of each run of tied activations
        starts = torch.ones_like(ends)
        starts[1:] = ends[:-1]
        # Weight of all images down to the end of each image's tie group.
        through = torch.where(ends, weight[order].cumsum(dim=0), inf)
        through = torch.flip(torch.cummin(torch.flip(through, [0]), dim=0).values, [0])
        position = torch.empty_like(order).scatter_(0, order, torch.arange(n_images, device=device)
                                                    .unsqueeze(1).expand(-1, width).contiguous())
        group = torch.cumsum(starts.long(), dim=0).gather(0, position)  # tie group of each image
        image_through = through.gather(0, position)
        # Sort each unit's pairs by (concept, tie group): a concept's positives down to a threshold
        # are a running sum within the concept's stretch, read at the end of the tie group.
        key = pair_concepts.unsqueeze(1) * (n_images + 1) + group[pair_images]
        sorted_key, pair_order = torch.sort(key, dim=0)
        sorted_weight = pair_weight[pair_order]
        # (The running sum over all pairs never decreases, so the reversed running minimum of its
        # values at the groups' ends reads each pair's group end; the concept's start is taken off after.)
        key_ends = torch.ones_like(sorted_key, dtype=torch.bool)
        key_ends[:-1] = sorted_key[:-1] != sorted_key[1:]
        running = torch.where(key_ends, sorted_weight.cumsum(dim=0), inf)
        running = torch.flip(torch.cummin(torch.flip(running, [0]), dim=0).values, [0])
        running -= positive_before.unsqueeze(1)
        # An image of weight 0 at the top has nothing counted down to it: its (weightless) term is 0.
        precision = running / image_through.gather(0, pair_images[pair_order]).clamp(min=1e-12)
        total = torch.zeros(pairs.n_concepts, width, dtype=torch.float64, device=device)
        total.index_add_(0, pair_concepts, sorted_weight * precision)
        scores[start:start + width] = (total / positives.clamp(min=1e-12).unsqueeze(1)).T
        report(progress, stage, number + 1, len(blocks))
    return scores - positives / weight.sum()


def label_score_matrix(name: str, pairs: LabelPairs, acts: torch.Tensor, params: dict,
                       weights: Optional[torch.Tensor] = None, progress: Optional[ProgressFn] = None,
                       stage: str = "similarity") -> torch.Tensor:
    """(units × concepts) float64 scores of the label score ``name`` (params resolved), with
    each probe image counted ``weights[i]`` times (all once when None)."""
    acts = acts.float()
    if weights is not None:
        weights = weights.to(device=acts.device, dtype=torch.float64)
    if name == "auprc":
        return _average_precision(pairs, acts, weights, progress, stage)
    top_k = params["top_k"]
    hits = _top_hits(pairs, acts, weights, top_k, progress, stage)
    if name == "precision_at_k":
        return hits / top_k
    if name == "iou":
        counted = torch.ones(pairs.n_images, dtype=torch.float64, device=acts.device) if weights is None else weights
        positives = torch.zeros(pairs.n_concepts, dtype=torch.float64, device=acts.device).index_add_(
            0, pairs.concepts.to(acts.device), counted[pairs.images.to(acts.device)])
        return hits / (top_k + positives.unsqueeze(0) - hits)
    raise InvalidInputError(f"{name} is not a label score; label scores: {', '.join(LABEL_SCORES)}.")


def rescore_label_scores(name: str, params: dict, image_features: torch.Tensor, text_features: torch.Tensor,
                         activations: torch.Tensor, candidates: torch.Tensor, weights: torch.Tensor,
                         progress: Optional[ProgressFn] = None, stage: str = "label quality") -> torch.Tensor:
    """Each unit's label under each weighting (rows of ``weights``) among ``candidates``, as
    indices into ``candidates`` (``label_quality.rescore_labels`` for the label scores). A label's
    score does not depend on the other concepts, so this is exact for the candidates."""
    pairs = LabelPairs.from_indicator(label_indicator(image_features, text_features, name).cpu()).columns(candidates)
    labels = torch.empty(weights.shape[0], activations.shape[1], dtype=torch.long)
    for row in range(weights.shape[0]):
        scores = label_score_matrix(name, pairs, activations, params, weights[row])
        labels[row] = torch.argmax(scores, dim=1).cpu()
        report(progress, stage, row + 1, weights.shape[0])
    return labels


# The functions ``catalog.SIMILARITY_FUNCTIONS`` registers (the signature of similarity.py's).

def _scores(name: str, img: torch.Tensor, txt: torch.Tensor, acts: torch.Tensor, call: "ScoringSettings") -> torch.Tensor:
    pairs = LabelPairs.from_indicator(label_indicator(img, txt, name).cpu())
    check_probe_size(name, acts.shape[0], call.params)
    return label_score_matrix(name, pairs, acts, call.params, None, call.progress, call.stage).float()


def precision_at_k_scores(img: torch.Tensor, txt: torch.Tensor, acts: torch.Tensor, call: "ScoringSettings") -> torch.Tensor:
    return _scores("precision_at_k", img, txt, acts, call)


def auprc_scores(img: torch.Tensor, txt: torch.Tensor, acts: torch.Tensor, call: "ScoringSettings") -> torch.Tensor:
    return _scores("auprc", img, txt, acts, call)


def iou_scores(img: torch.Tensor, txt: torch.Tensor, acts: torch.Tensor, call: "ScoringSettings") -> torch.Tensor:
    return _scores("iou", img, txt, acts, call)


# ----------------------------------------------------------------------------- the majority check


def majority_check(layer: str, indicator: torch.Tensor, acts: torch.Tensor, labels: torch.Tensor,
                   concepts: Sequence[str], top_k: int) -> MajorityCheck:
    """How many units' labels (``labels``: a concept index per unit) are carried by as many of
    the unit's ``top_k`` images as any label (at most all the images)."""
    top_k = min(top_k, acts.shape[0])
    counts = _top_hits(LabelPairs.from_indicator(indicator.cpu()), acts.float().cpu(), None, top_k, None, "")
    best_count, best = counts.max(dim=1)
    own = counts.gather(1, labels.cpu().view(-1, 1)).squeeze(1)
    return MajorityCheck(
        layer=layer, top_k=top_k, agreeing=int((own == best_count).sum()),
        majority=[concepts[i] for i in best.tolist()],
        majority_count=[int(round(c)) for c in best_count.tolist()],
        label_count=[int(round(c)) for c in own.tolist()],
    )

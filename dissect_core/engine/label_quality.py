"""How far to trust each unit's label: stability, simulation correlation, margin.

Everything here works on what a run already cached (pooled activations, CLIP image
and text features, the similarity step's top concepts); nothing needs a new forward
pass, and nothing builds an images × concepts matrix.

* **stability**: the share of bootstrap resamples of the probe images (drawn with
  replacement, seeded) in which the unit keeps its label. Each resample re-scores the
  unit, with the run's similarity function, against the *candidates*: the union over
  the layer's units of their top ``candidates`` concepts of the full run. For
  soft-WPMI and WPMI that is exact for those concepts (an image's softmax row does
  not change when other images are resampled, and p(t) is taken over all units of the
  layer), so the only approximation is that a concept outside every unit's top few
  cannot win a resample: a label that loses to such an outsider is counted as kept.
  The label scores (``dissect_core.engine.label_scores``) score each concept on its own, so
  they are exact for the candidates too.
  A resample changes only which images form a unit's top-k set (its full ranking with
  each image repeated as often as it was drawn), so softmax rows are needed only for
  the images that some resample puts in some unit's top-k set, each row's normaliser
  computed once over all concepts, in chunks.
* **simulation correlation** (Linear Explanations, ICML 2024; the correlation score of
  Neuron_Eval, ICML 2025): the probe images are split (seeded) into a fit part and a
  held-out part. The label is chosen again from the fit part only (same re-scoring),
  and over the held-out images the Pearson correlation between the unit's activation
  and that label's image–text cosine is measured, with a Fisher-z confidence interval.
* **margin**: the gap between the top two concepts' scores, and the cosine of their
  CLIP text features; above ``synonym_cosine`` the runner-up is a near-synonym (a coin
  toss between equivalent words), below it a close runner-up is a distinct concept
  (the unit may be polysemantic).

Per layer: the share of stable units (stability ≥ ``stable_threshold``), the mean
correlation, and the number of distinct labels with a bootstrap interval over the same
resamples (see :func:`distinct_interval`).
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import ClassVar, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from dissect_core.choices.catalog import LABEL_SCORES
from dissect_core.choices.config import QUALITY_RESAMPLES
from dissect_core.common.errors import InvalidInputError
from dissect_core.common.progress import ProgressFn, report
from dissect_core.engine.cache import DamagedEntry
from dissect_core.engine.label_scores import rescore_label_scores
from dissect_core.runs.quality_tables import (
    LABEL_QUALITY_FILE, LAYER_COLUMNS, LAYER_QUALITY_FILE, QUALITY_COLUMNS, QUALITY_POINTS_FILE, STABLE_THRESHOLD,
    read_label_quality,
)
from dissect_core.engine.similarity import resolve_params

# Similarity functions whose re-scoring on resamples is implemented (exact on the candidates);
# the label scores re-score in dissect_core.engine.label_scores.
RESCORABLE = ("soft_wpmi", "wpmi", *LABEL_SCORES)


MIN_HELDOUT_IMAGES = 10


@dataclass(frozen=True)
class QualitySettings:
    """Knobs of the quality figures; the defaults are what runs use."""

    resamples: int = QUALITY_RESAMPLES  # bootstrap resamples of the probe images
    candidates: int = 5  # top concepts per unit re-scored on each resample
    heldout_fraction: float = 0.5  # share of probe images held out for the correlation
    seed: int = 0
    stable_threshold: float = STABLE_THRESHOLD
    synonym_cosine: float = 0.9  # text-feature cosine above which the top two are near-synonyms
    confidence: float = 0.95  # of the correlation and distinct-count intervals
    scatter_points: int = 500  # held-out images kept per layer for the activation-vs-similarity scatter

    def check(self) -> None:
        if self.resamples < 2:
            raise InvalidInputError(f"resamples must be at least 2, got {self.resamples}.")
        if self.candidates < 2:
            raise InvalidInputError(f"candidates must be at least 2, got {self.candidates}.")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise InvalidInputError(f"heldout_fraction must lie strictly between 0 and 1, got {self.heldout_fraction}.")
        if not 0.0 < self.confidence < 1.0:
            raise InvalidInputError(f"confidence must lie strictly between 0 and 1, got {self.confidence}.")
        if self.scatter_points < 1:
            raise InvalidInputError(f"scatter_points must be at least 1, got {self.scatter_points}.")


@dataclass
class LayerQuality:
    """The quality figures of one layer.

    ``units`` has one row per unit (the columns of :data:`QUALITY_COLUMNS` after
    ``layer``). ``scatter_images`` are probe-row indices of held-out images;
    ``scatter_activation`` and ``scatter_similarity`` (images × units, float16) hold
    each unit's activation and its scored label's image–text cosine on them.
    """

    layer: str
    units: pd.DataFrame
    distinct: int
    distinct_low: int
    distinct_high: int
    stable_share: float
    mean_correlation: float
    scatter_images: np.ndarray = field(repr=False)
    scatter_activation: np.ndarray = field(repr=False)
    scatter_similarity: np.ndarray = field(repr=False)

    KIND: ClassVar[str] = "label_quality"  # its folder in the cache (cache.CacheEntry)

    def to_payload(self) -> dict:
        """A cache payload (tensors, text and numbers only: loadable with weights_only)."""
        return {
            "layer": self.layer,
            "units_csv": self.units.to_csv(index=False, lineterminator="\n"),
            "counts": torch.tensor([self.distinct, self.distinct_low, self.distinct_high]),
            "figures": torch.tensor([self.stable_share, self.mean_correlation], dtype=torch.float64),
            "scatter_images": torch.from_numpy(self.scatter_images.astype(np.int64)),
            "scatter_activation": torch.from_numpy(self.scatter_activation),
            "scatter_similarity": torch.from_numpy(self.scatter_similarity),
        }

    @classmethod
    def from_payload(cls, payload: Mapping, n_units: int) -> "LayerQuality":
        """The figures a payload holds, when they are those of ``n_units`` units."""
        try:
            distinct, low, high = payload["counts"].tolist()
            stable_share, mean_correlation = payload["figures"].tolist()
            quality = cls(payload["layer"], read_label_quality(payload["units_csv"].encode("utf-8")), distinct,
                          low, high, stable_share, mean_correlation, payload["scatter_images"].numpy(),
                          payload["scatter_activation"].numpy(), payload["scatter_similarity"].numpy())
        except (InvalidInputError, KeyError, AttributeError, TypeError, ValueError) as exc:
            raise DamagedEntry(f"its label-quality figures do not read back ({exc})") from None
        shapes = {quality.scatter_activation.shape, quality.scatter_similarity.shape}
        if len(quality.units) != n_units or len(shapes) != 1 or shapes.pop()[1:] != (n_units,):
            raise DamagedEntry(f"its label-quality figures are not those of {n_units} units")
        return quality


# ----------------------------------------------------------------------------- small pure pieces


def minimum_probe_images(top_k: int, settings: QualitySettings) -> int:
    """Fewest probe images for which the fit part has top_k images and the held-out part
    at least MIN_HELDOUT_IMAGES."""
    n = top_k
    while True:
        fit, heldout = _split_sizes(n, settings.heldout_fraction)
        if fit >= top_k and heldout >= MIN_HELDOUT_IMAGES:
            return n
        n += 1


def _split_sizes(n_images: int, heldout_fraction: float) -> tuple[int, int]:
    heldout = int(round(n_images * heldout_fraction))
    return n_images - heldout, heldout


def fisher_interval(r: torch.Tensor, n: int, confidence: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Confidence interval of Pearson correlations ``r`` over ``n`` pairs (Fisher's z)."""
    if n <= 3:
        raise InvalidInputError(f"A correlation interval needs more than 3 images, got {n}.")
    z_crit = math.sqrt(2.0) * torch.erfinv(torch.tensor(confidence, dtype=torch.float64)).item()
    z = torch.atanh(r.double().clamp(-0.999999, 0.999999))
    half = z_crit / math.sqrt(n - 3)
    return torch.tanh(z - half).to(r.dtype), torch.tanh(z + half).to(r.dtype)


def pearson_columns(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each column of ``x`` with the same column of ``y`` (NaN for a
    constant column, e.g. a dead unit)."""
    x = x.double() - x.double().mean(dim=0)
    y = y.double() - y.double().mean(dim=0)
    denominator = x.norm(dim=0) * y.norm(dim=0)
    r = (x * y).sum(dim=0) / denominator
    return torch.where(denominator > 0, r, torch.full_like(r, float("nan"))).float()


def bootstrap_counts(n_images: int, resamples: int, generator: torch.Generator) -> torch.Tensor:
    """(resamples × n_images) int: how often each image is drawn in each resample."""
    counts = torch.empty(resamples, n_images, dtype=torch.int32)
    for b in range(resamples):
        draws = torch.randint(n_images, (n_images,), generator=generator)
        counts[b] = torch.bincount(draws, minlength=n_images).int()
    return counts


def distinct_interval(labels: torch.Tensor, full_count: int, confidence: float, most: int) -> tuple[int, int]:
    """Interval of the number of distinct labels: the spread of the per-resample counts (rows of
    ``labels``) around their median, placed around the full-sample count, and kept inside what
    is possible: at least one label, at most ``most`` (the fewer of the layer's units and the
    concepts).

    Resampling with replacement itself lowers the count (a duplicated image that tops
    several units pulls them towards one concept), so the raw percentiles can miss the
    full-sample count; their spread still measures how much the count moves with the sample.
    Placed around the full count, that spread can pass the possible range (10 of 10 concepts
    read "10 [10–11]"), hence the clipping.
    """
    counts = np.array([len(torch.unique(row)) for row in labels])
    tail = (1.0 - confidence) / 2
    low, median, high = np.quantile(counts, [tail, 0.5, 1.0 - tail], method="inverted_cdf")
    least = min(1, most)
    return (int(min(max(full_count - (median - low), least), most)),
            int(min(max(full_count + (high - median), least), most)))


def text_margin(top_values: torch.Tensor, top_indices: torch.Tensor, text_features: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Score gap between each unit's top two concepts, and the cosine of their text features."""
    if top_values.shape[1] < 2:
        raise InvalidInputError("The margin needs at least the top two concepts of each unit.")
    gap = top_values[:, 0] - top_values[:, 1]
    first = torch.nn.functional.normalize(text_features[top_indices[:, 0]].float(), dim=1)
    second = torch.nn.functional.normalize(text_features[top_indices[:, 1]].float(), dim=1)
    return gap, (first * second).sum(dim=1)


# ----------------------------------------------------------------------------- re-scoring


def _ranked_prefix(acts: torch.Tensor, weights: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each weight vector's top-k list per unit, as positions in the units' full ranking.

    A weight vector gives each image a multiplicity (bootstrap counts, or 0/1 for a
    split); the weighted top-k of unit k is its ranking with each image repeated that
    many times, cut at top_k. Returns ``ranking`` (D × K probe rows, the top D images
    of each unit) and ``positions`` (W × K × top_k indices into ``ranking``'s rows), with
    D as deep as the weight vectors need.
    """
    n_images = acts.shape[0]
    depth = min(n_images, 2 * top_k)
    while True:
        ranking = torch.topk(acts, depth, dim=0).indices  # (D, K)
        multiplicity = weights[:, ranking].long()  # (W, D, K)
        reached = multiplicity.cumsum(dim=1)  # (W, D, K)
        if depth == n_images or bool((reached[:, -1, :] >= top_k).all()):
            break
        depth = min(n_images, 2 * depth)
    # Position j of the weighted list is the first rank whose running count exceeds j.
    running = reached.permute(0, 2, 1).contiguous()  # (W, K, D)
    wanted = torch.arange(top_k).expand(running.shape[0], running.shape[1], top_k).contiguous()
    positions = torch.searchsorted(running, wanted, right=True)
    return ranking, positions


def _softmax_columns(image_features: torch.Tensor, text_features: torch.Tensor, rows: torch.Tensor,
                     columns: torch.Tensor, a: float, chunk_bytes: int) -> torch.Tensor:
    """softmax(a · cos(image, concept)) over *all* concepts, kept only for ``columns``,
    for the images ``rows``; computed in chunks of images so no rows × concepts
    matrix is ever whole."""
    txt = torch.nn.functional.normalize(text_features.float(), dim=1)
    txt_t = txt.T.contiguous()
    chosen_t = txt[columns].T.contiguous()
    out = torch.empty(rows.numel(), columns.numel())
    chunk = max(16, chunk_bytes // (4 * txt.shape[0]))
    for start in range(0, rows.numel(), chunk):
        img = torch.nn.functional.normalize(image_features[rows[start:start + chunk]].float(), dim=1)
        log_norm = torch.logsumexp(a * (img @ txt_t), dim=1, keepdim=True)
        out[start:start + chunk] = torch.exp(a * (img @ chosen_t) - log_norm)
    return out


def rescore_labels(name: str, params: dict, image_features: torch.Tensor, text_features: torch.Tensor,
                   activations: torch.Tensor, candidates: torch.Tensor, weights: torch.Tensor,
                   *, chunk_bytes: int = 64 << 20, progress: Optional[ProgressFn] = None,
                   stage: str = "label quality") -> torch.Tensor:
    """Each unit's label under each weighting of the probe images, among ``candidates``.

    ``weights`` (W × N, non-negative integers) gives each probe image's multiplicity;
    all ones reproduces the full run. Returns (W × K) indices into ``candidates``.
    Scores are the similarity function ``name``'s (soft_wpmi, wpmi or a label score) for the candidate
    concepts, with p(t) over all K units, as in the run.
    """
    if name not in RESCORABLE:
        raise InvalidInputError(
            f"Re-scoring is implemented for {', '.join(RESCORABLE)}, not {name}."
        )
    params = resolve_params(name, params)
    if name in LABEL_SCORES:
        return rescore_label_scores(name, params, image_features, text_features, activations, candidates,
                                    weights, progress, stage)
    top_k, min_prob = params["top_k"], params["min_prob"]
    n_units = activations.shape[1]
    acts = activations.float()
    ranking, positions = _ranked_prefix(acts, weights, top_k)
    # Only images some weighting puts in some unit's top-k need softmax rows; rows[w, k, j]
    # is the row of unit k's j-th image under weighting w.
    used = ranking[positions, torch.arange(n_units).view(1, n_units, 1)]
    images, rows = torch.unique(used, return_inverse=True)
    del used
    probs = _softmax_columns(image_features, text_features, images, candidates, params["a"], chunk_bytes)
    if name == "soft_wpmi":
        probs.sub_(1)  # Q − 1; the term is log(1 + p_j (Q − 1) + min_prob)
        rank_weights = params["p_start"] - (torch.arange(top_k) / top_k * (params["p_start"] - params["p_end"]))
        rank_weights = rank_weights.view(1, top_k, 1)
    else:
        probs.add_(min_prob)  # the term is log(Q + min_prob)
    n_candidates = candidates.numel()
    unit_block = max(1, min(n_units, (chunk_bytes // 4) // (top_k * n_candidates)))
    labels = torch.empty(weights.shape[0], n_units, dtype=torch.long)
    for w in range(weights.shape[0]):
        log_likelihood = torch.empty(n_units, n_candidates)
        for start in range(0, n_units, unit_block):
            stop = min(start + unit_block, n_units)
            terms = probs[rows[w, start:stop]]  # (block, top_k, C)
            if name == "soft_wpmi":
                terms.mul_(rank_weights).add_(1 + min_prob)
            log_likelihood[start:stop] = terms.log_().sum(dim=1)
        log_prior = torch.logsumexp(log_likelihood, dim=0, keepdim=True) - math.log(n_units)
        labels[w] = torch.argmax(log_likelihood - params["lam"] * log_prior, dim=1)
        report(progress, stage, w + 1, weights.shape[0])
    return labels


# ----------------------------------------------------------------------------- one layer


def layer_quality(layer: str, descriptions: pd.DataFrame, top_values: torch.Tensor, top_indices: torch.Tensor,
                  concepts: Sequence[str], image_features: torch.Tensor, text_features: torch.Tensor,
                  activations: torch.Tensor, similarity_fn: str, similarity_params: dict,
                  settings: QualitySettings = QualitySettings(), progress: Optional[ProgressFn] = None
                  ) -> LayerQuality:
    """The quality figures of one layer of a run.

    ``descriptions`` holds the layer's rows (``unit, description, similarity``, one per
    unit, units 0..K−1); ``top_values``/``top_indices`` (K × ≥2) are the run's best
    concepts per unit (indices into ``concepts``); ``image_features`` (N × d) and
    ``activations`` (N × K) are aligned probe rows; ``text_features`` (M × d).
    """
    settings.check()
    if similarity_fn not in RESCORABLE:
        raise InvalidInputError(
            f"Stability and correlation are computed for runs scored with {' or '.join(RESCORABLE)}; "
            f"this run used {similarity_fn}."
        )
    params = resolve_params(similarity_fn, similarity_params)
    n_images, n_units = activations.shape
    if image_features.shape[0] != n_images:
        raise InvalidInputError(
            f"{image_features.shape[0]} CLIP image features but {n_images} activation rows for layer {layer}."
        )
    if top_indices.shape[0] != n_units or len(descriptions) != n_units:
        raise InvalidInputError(f"Layer {layer} has {n_units} units but {len(descriptions)} descriptions.")
    top_k = params.get("top_k", 1)  # auprc ranks all images: any fit part will do
    needed = minimum_probe_images(top_k, settings)
    if n_images < needed:
        raise InvalidInputError(
            f"Layer {layer}: the quality figures need at least {needed} probe images (a fit part of "
            f"top_k={top_k} images plus a held-out part of {MIN_HELDOUT_IMAGES}, with "
            f"heldout_fraction={settings.heldout_fraction}); this run has {n_images}."
        )
    generator = torch.Generator().manual_seed(settings.seed)
    order = torch.randperm(n_images, generator=generator)
    n_fit, _ = _split_sizes(n_images, settings.heldout_fraction)
    fit_mask = torch.zeros(n_images, dtype=torch.int32)
    fit_mask[order[:n_fit]] = 1
    heldout = torch.sort(order[n_fit:]).values
    weights = torch.cat([bootstrap_counts(n_images, settings.resamples, generator), fit_mask.unsqueeze(0)])

    kept = min(settings.candidates, top_indices.shape[1])
    candidates, unit_candidates = torch.unique(top_indices[:, :kept], return_inverse=True)
    labels = rescore_labels(similarity_fn, params, image_features, text_features, activations, candidates,
                            weights, progress=progress, stage=f"label quality {layer}")
    run_label = unit_candidates[:, 0]  # the run's label, as a candidate index
    boot = labels[:-1]
    stability = (boot == run_label).float().mean(dim=0)
    full_count = int(descriptions["description"].nunique())
    distinct_low, distinct_high = distinct_interval(boot, full_count, settings.confidence,
                                                    most=min(n_units, len(concepts)))

    # Simulation: the label chosen on the fit part, scored on the held-out part.
    fit_label = candidates[labels[-1]]  # concept indices, one per unit
    distinct_fit, unit_of = torch.unique(fit_label, return_inverse=True)
    img = torch.nn.functional.normalize(image_features[heldout].float(), dim=1)
    txt = torch.nn.functional.normalize(text_features[distinct_fit].float(), dim=1)
    cosines = (img @ txt.T)[:, unit_of]  # (held-out, K): each unit's label cosine
    held_acts = activations[heldout].float()
    r = pearson_columns(held_acts, cosines)
    low, high = fisher_interval(r, heldout.numel(), settings.confidence)

    gap, pair_cosine = text_margin(top_values, top_indices, text_features)
    frame = descriptions[["unit", "description", "similarity"]].reset_index(drop=True).copy()
    frame.insert(0, "layer", layer)
    frame["stability"] = stability.numpy()
    frame["correlation"] = r.numpy()
    frame["correlation_low"] = low.numpy()
    frame["correlation_high"] = high.numpy()
    frame["heldout_label"] = [concepts[i] for i in fit_label.tolist()]
    frame["margin"] = gap.float().numpy()
    frame["runner_up"] = [concepts[i] for i in top_indices[:, 1].tolist()]
    frame["runner_up_cosine"] = pair_cosine.numpy()
    frame["near_synonym"] = (pair_cosine >= settings.synonym_cosine).numpy()

    pick = torch.randperm(heldout.numel(), generator=generator)[: settings.scatter_points]
    pick = torch.sort(pick).values
    correlation = float(np.nanmean(r.numpy())) if bool(torch.isfinite(r).any()) else float("nan")
    return LayerQuality(
        layer=layer,
        units=frame[list(QUALITY_COLUMNS)],
        distinct=full_count,
        distinct_low=distinct_low,
        distinct_high=distinct_high,
        stable_share=float((stability >= settings.stable_threshold).float().mean()),
        mean_correlation=correlation,
        scatter_images=heldout[pick].numpy(),
        scatter_activation=held_acts[pick].numpy().astype(np.float16),
        scatter_similarity=cosines[pick].numpy().astype(np.float16),
    )


# ----------------------------------------------------------------------------- output-layer check


@dataclass(frozen=True)
class OutputCheck:
    """CLIP-Dissect's own check: on the classifier layer unit i should be labelled class i."""

    layer: str
    units: int
    top1: float  # share of units whose label is their class's name
    top5: Optional[float]  # share whose class is among their top five concepts (None without them)


def output_layer_check(layer: str, descriptions: pd.DataFrame, top_concepts: Optional[pd.DataFrame],
                       class_names: Sequence[str]) -> OutputCheck:
    """Top-1/top-5 accuracy of "unit i ↔ class i" for one layer.

    ``descriptions`` and ``top_concepts`` are a run's frames (all layers or one);
    ``class_names[i]`` is class i's name, which must be one of the run's concepts.
    Names are compared as strings, so two classes with the same name (ImageNet has
    two "crane"s) are both right when labelled with it.
    """
    rows = descriptions[descriptions["layer"] == layer].sort_values("unit")
    if len(rows) != len(class_names) or list(rows["unit"]) != list(range(len(class_names))):
        raise InvalidInputError(
            f"Layer {layer} has {len(rows)} units but there are {len(class_names)} class names; "
            "the output-layer check needs one unit per class, numbered from 0."
        )
    truth = np.asarray(list(class_names), dtype=object)
    top1 = float((rows["description"].to_numpy(dtype=object) == truth).mean())
    top5 = None
    if top_concepts is not None:
        ranked = top_concepts[(top_concepts["layer"] == layer) & (top_concepts["rank"] < 5)]
        hits = ranked["concept"].to_numpy(dtype=object) == truth[ranked["unit"].to_numpy(dtype=int)]
        top5 = float(len(set(ranked["unit"].to_numpy()[hits])) / len(truth))
    return OutputCheck(layer, len(truth), top1, top5)


def output_layers(descriptions: pd.DataFrame, n_classes: int) -> list[str]:
    """The layers with exactly one unit per class (the classifier, in practice)."""
    counts = descriptions.groupby("layer", sort=False)["unit"].count()
    return [layer for layer, count in counts.items() if count == n_classes]


# ----------------------------------------------------------------------------- run-folder files

def layer_table(layers: Sequence[LayerQuality]) -> pd.DataFrame:
    """One row per layer: the layer figures of :class:`LayerQuality`."""
    rows = [(quality.layer, len(quality.units), quality.stable_share, quality.mean_correlation,
             quality.distinct, quality.distinct_low, quality.distinct_high) for quality in layers]
    return pd.DataFrame(rows, columns=list(LAYER_COLUMNS))


def quality_files(layers: Sequence[LayerQuality], image_indices: dict[str, np.ndarray]) -> dict[str, bytes]:
    """The three files of a run's quality figures, by name.

    ``image_indices[layer]`` maps the layer's aligned probe rows to probe-set indices, so
    the scatter's points name their images as ``top_images.csv`` does.
    """
    units = pd.concat([quality.units for quality in layers], ignore_index=True)
    arrays = {}
    for number, quality in enumerate(layers):
        arrays[f"images_{number}"] = np.asarray(image_indices[quality.layer])[quality.scatter_images].astype(np.int64)
        arrays[f"activation_{number}"] = quality.scatter_activation
        arrays[f"similarity_{number}"] = quality.scatter_similarity
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return {
        LABEL_QUALITY_FILE: units.to_csv(index=False, lineterminator="\n").encode("utf-8"),
        LAYER_QUALITY_FILE: layer_table(layers).to_csv(index=False, lineterminator="\n").encode("utf-8"),
        QUALITY_POINTS_FILE: buffer.getvalue(),
    }


def read_class_names(data: bytes, name: str = "class-name list") -> list[str]:
    """Class names, one per line in class order (line i+1 is class i). Blank lines are an
    error rather than skipped, since skipping one would shift every later class."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{name} is not UTF-8 text (byte {exc.start}).") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    blank = [number + 1 for number, line in enumerate(lines) if not line.strip()]
    if not lines or blank:
        where = f"line {blank[0]} is blank" if blank else "it is empty"
        raise InvalidInputError(f"{name}: {where}. Give one class name per line, class 0 first.")
    return [line.strip() for line in lines]


def run_output_checks(descriptions: pd.DataFrame, top_concepts: Optional[pd.DataFrame],
                      class_names: Sequence[str]) -> list[OutputCheck]:
    """The output-layer check on every layer with one unit per class; an error naming the
    unit counts when there is none."""
    layers = output_layers(descriptions, len(class_names))
    if not layers:
        counts = descriptions.groupby("layer", sort=False)["unit"].count()
        sizes = ", ".join(f"{layer} {count}" for layer, count in counts.items())
        raise InvalidInputError(
            f"No layer has one unit per class: {len(class_names)} class names, units per layer: {sizes}. "
            "Dissect the classifier layer (e.g. fc) with the class names as concepts."
        )
    return [output_layer_check(layer, descriptions, top_concepts, class_names) for layer in layers]

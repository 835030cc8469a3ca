"""Unit × concept similarity matrices: the scoring step of CLIP-Dissect.

Inputs are raw CLIP image features I (N×d), raw CLIP text features T (M×d) and the
pooled activations A (N×K) of one layer's K units on the same N probe images. Every
function returns a K×M float32 matrix; a unit's label is the argmax of its row.

Both feature sets are cast to float32 and each row is L2-normalised, so
P = I·Tᵀ holds image×concept cosines (no CLIP logit scale), as in the reference.

* ``soft_wpmi`` (default). Q = softmax(a·P) over concepts, per image. For unit k with
  top images s_0..s_{top_k-1} (``torch.topk`` over images, descending) and weights
  p_j = p_start − (j/top_k)·(p_start − p_end)::

      log p(t_m|E_k) = Σ_j log(1 + p_j·(Q[s_j,m] − 1) + min_prob)
      log p(t_m)     = logsumexp_k log p(t_m|E_k) − log K
      score[k,m]     = log p(t_m|E_k) − lam·log p(t_m)

  p(t) is the mean over *all units passed in*, so a unit's label depends on the
  other units of the call (pass one whole layer, as the reference does).
* ``wpmi``: the same with Q = softmax(a·P) and terms log(Q[s_j,m] + min_prob).
* ``cos_similarity``: columns of P and A L2-normalised over images (no centering),
  score = Âᵀ·P̂. An all-zero activation column gives a NaN row, as in the reference.
* ``cos_similarity_cubed``: columns centred, cubed, divided by max(‖column‖, min_norm),
  score = Ãᵀ·P̃.
* ``rank_reorder``: see :func:`_rank_reorder`.

Memory. The reference materialises P (N×M, 5 GB for Broden × 20k concepts) and its
softmax. Here ``soft_wpmi``/``wpmi`` only compute rows of Q for images in the union
of the units' top-k sets, about a thousand rows per matmul, and keep a row only while
a later rank still needs it, within a fixed budget (512 MiB by default; rows beyond
it are recomputed). The cosine functions and ``rank_reorder`` work on blocks of
concepts (256 MiB of P at a time).

Exactness. ``soft_wpmi``/``wpmi`` evaluate every term with the reference's float32
operations in the reference's order, and add the top_k terms of a unit in the order
of PyTorch's CPU ``sum`` over a (top_k, M) tensor (see :class:`_OrderedSum`). On the
CPU the scores are therefore bit-for-bit the reference's, whatever the chunk sizes,
so labels agree even on near-ties (verified with torch 2.14 on 1 and 2 threads; the
order is ATen's, so another torch version or thread count may differ in the last bit).
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Optional, Union

import torch

from .errors import InvalidInputError
from .progress import ProgressFn, report

SIMILARITY_FUNCTIONS: tuple[str, ...] = (
    "soft_wpmi",
    "wpmi",
    "cos_similarity",
    "cos_similarity_cubed",
    "rank_reorder",
)

# Constants of the reference implementation (CLIP-Dissect, similarity.py).
DEFAULT_PARAMS: dict[str, dict] = {
    "soft_wpmi": {"top_k": 100, "a": 10.0, "lam": 1.0, "min_prob": 1e-7, "p_start": 0.998, "p_end": 0.97},
    "wpmi": {"top_k": 28, "a": 2.0, "lam": 0.6, "min_prob": 1e-7},
    "cos_similarity": {},
    "cos_similarity_cubed": {"min_norm": 1e-3},
    "rank_reorder": {"top_fraction": 0.05, "p": 3.0, "scale_p": 0.5, "seed": 0},
}

# Tuning knobs: they change speed and memory, never the result, so they are not part
# of the resolved params (nor of cache keys).
_TUNING_DEFAULTS: dict[str, int] = {
    "_row_batch": 1024,  # images whose softmax rows are computed in one matmul
    "_block_elements": 1 << 20,  # terms evaluated per block of units (a few MB: stays in cache)
    "_store_bytes": 512 << 20,  # budget for softmax rows (a batch plus rows kept for later ranks)
    "_block_bytes": 256 << 20,  # budget for one block of P in the cosine functions
}

# MKL picks another kernel for matmuls with very few rows, whose results differ in
# the last bit from the same rows of a large product: pad small batches to this size.
_MIN_MATMUL_ROWS = 16

_INT_PARAMS = {"top_k", "seed"}


# ----------------------------------------------------------------------------- parameters


def _check_value(name: str, key: str, value: Any) -> Union[int, float]:
    """Type- and range-check one parameter; return it as int or float."""
    if key in _INT_PARAMS:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise InvalidInputError(f"{name} parameter {key} must be an integer, got {value!r}.")
        value = int(value)
    else:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise InvalidInputError(f"{name} parameter {key} must be a finite number, got {value!r}.")
        value = float(value)
    if key == "top_k" and value < 1:
        raise InvalidInputError(f"{name} parameter top_k must be at least 1, got {value}.")
    if key in ("min_prob", "min_norm", "p") and value <= 0:
        raise InvalidInputError(f"{name} parameter {key} must be positive, got {value}.")
    if key in ("p_start", "p_end") and not 0.0 <= value <= 1.0:
        raise InvalidInputError(f"{name} parameter {key} is a probability and must lie in [0, 1], got {value}.")
    if key == "top_fraction" and not 0.0 < value <= 1.0:
        raise InvalidInputError(f"{name} parameter top_fraction must lie in (0, 1], got {value}.")
    return value


def resolve_params(name: str, params: Optional[dict] = None) -> dict:
    """Return ``name``'s reference defaults updated with ``params``, checked.

    Raises InvalidInputError for an unknown function name, an unknown parameter or
    a value of the wrong type or range. The result holds every parameter that
    affects the scores, so it can be recorded in a cache key or a manifest.
    """
    if name not in DEFAULT_PARAMS:
        raise InvalidInputError(
            f"Unknown similarity function {name!r}; choose one of {', '.join(SIMILARITY_FUNCTIONS)}."
        )
    defaults = DEFAULT_PARAMS[name]
    params = dict(params or {})
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        valid = ", ".join(defaults) if defaults else "none"
        raise InvalidInputError(
            f"Unknown parameter(s) {', '.join(unknown)} for similarity function {name}; valid parameters: {valid}."
        )
    resolved = {key: _check_value(name, key, params.get(key, default)) for key, default in defaults.items()}
    return resolved


def _split_tuning(name: str, params: dict) -> tuple[dict, dict]:
    """Separate the private tuning knobs (leading underscore) from the math params."""
    tuning = dict(_TUNING_DEFAULTS)
    math_params = {}
    for key, value in params.items():
        if key.startswith("_"):
            if key not in _TUNING_DEFAULTS:
                raise InvalidInputError(
                    f"Unknown tuning option {key} for similarity function {name}; "
                    f"valid options: {', '.join(_TUNING_DEFAULTS)}."
                )
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise InvalidInputError(f"Tuning option {key} must be a positive integer, got {value!r}.")
            tuning[key] = int(value)
        else:
            math_params[key] = value
    return math_params, tuning


# ----------------------------------------------------------------------------- inputs


def _as_matrix(label: str, tensor: Any) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor):
        raise InvalidInputError(f"{label} must be a torch.Tensor, got {type(tensor).__name__}.")
    if tensor.dim() != 2:
        raise InvalidInputError(f"{label} must be a 2-D matrix, got shape {tuple(tensor.shape)}.")
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise InvalidInputError(f"{label} must hold real numbers, got dtype {tensor.dtype}.")
    if 0 in tensor.shape:
        raise InvalidInputError(f"{label} is empty (shape {tuple(tensor.shape)}).")
    # NaN and ±inf make the sum non-finite; only then is the slower exact test needed
    # (a sum of large finite values can overflow too).
    if (tensor.is_floating_point() and not math.isfinite(float(tensor.sum()))
            and not bool(torch.isfinite(tensor).all())):
        raise InvalidInputError(
            f"{label} contains NaN or infinite values; recompute it (a NaN usually comes from a broken "
            "model output or a corrupt cache file)."
        )
    return tensor


def _check_inputs(image_features: Any, text_features: Any, activations: Any) -> None:
    image_features = _as_matrix("image_features", image_features)
    text_features = _as_matrix("text_features", text_features)
    activations = _as_matrix("activations", activations)
    if image_features.shape[0] != activations.shape[0]:
        raise InvalidInputError(
            f"image_features has {image_features.shape[0]} rows (shape {tuple(image_features.shape)}) but "
            f"activations has {activations.shape[0]} (shape {tuple(activations.shape)}); both need one row "
            "per probe image, in the same order."
        )
    if image_features.shape[1] != text_features.shape[1]:
        raise InvalidInputError(
            f"image_features are {image_features.shape[1]}-dimensional (shape {tuple(image_features.shape)}) "
            f"but text_features are {text_features.shape[1]}-dimensional (shape {tuple(text_features.shape)}); "
            "both must come from the same CLIP model."
        )


def _unit_rows(label: str, features: torch.Tensor) -> torch.Tensor:
    """float32 copy with each row divided by its L2 norm (the reference's normalisation)."""
    features = features.float()
    norms = features.norm(dim=-1, keepdim=True)
    zero = (norms == 0).nonzero()
    if zero.numel():
        raise InvalidInputError(
            f"{label} row {int(zero[0, 0])} is all zeros, so it has no direction to compare; "
            "recompute the CLIP features."
        )
    return features / norms


def _need_images(name: str, n_images: int, top_k: int) -> None:
    if n_images < top_k:
        raise InvalidInputError(
            f"The probe set has {n_images} images but {name} needs at least top_k={top_k} of them "
            f"(it uses each unit's top {top_k} images). Use a larger probe set or lower top_k "
            f"(e.g. top_k={n_images})."
        )


# ----------------------------------------------------------------------------- public entry point


def similarity_matrix(
    name: str,
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    activations: torch.Tensor,
    *,
    device: Union[torch.device, str, None] = None,
    progress: Optional[ProgressFn] = None,
    **params: Any,
) -> torch.Tensor:
    """Score every unit against every concept with the similarity function ``name``.

    ``image_features`` (N×d) and ``text_features`` (M×d) are raw CLIP features in any
    float dtype; ``activations`` (N×K) are the pooled unit activations on the same N
    images. ``params`` override :data:`DEFAULT_PARAMS` (the reference constants);
    options with a leading underscore only tune speed and memory. The work runs on
    ``device`` (the CPU when None); the K×M float32 result is returned on the CPU.

    ``rank_reorder`` draws random permutations; the reference leaves them unseeded, here
    they come from a generator seeded with the ``seed`` parameter (default 0), so the
    result is reproducible.
    """
    resolve_params(name)  # an unknown name is reported before anything else
    math_params, tuning = _split_tuning(name, params)
    resolved = resolve_params(name, math_params)
    _check_inputs(image_features, text_features, activations)
    n_images = image_features.shape[0]
    if name in ("soft_wpmi", "wpmi"):
        _need_images(name, n_images, resolved["top_k"])
    elif name == "rank_reorder" and int(n_images * resolved["top_fraction"]) < 2:
        raise InvalidInputError(
            f"The probe set has {n_images} images; rank_reorder ranks each unit's top "
            f"int(top_fraction·N) = {int(n_images * resolved['top_fraction'])} images and needs at least 2. "
            "Use a larger probe set or raise top_fraction."
        )
    try:
        compute_on = torch.device(device) if device is not None else torch.device("cpu")
    except (RuntimeError, TypeError) as exc:
        raise InvalidInputError(f"Unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'.") from exc
    stage = f"similarity {name}"
    with torch.no_grad():
        acts = activations.to(compute_on).float()
        if name in ("soft_wpmi", "wpmi"):
            scores = _pmi(name, image_features, text_features, acts, resolved, tuning, compute_on, progress, stage)
        else:
            img = _unit_rows("image_features", image_features.to(compute_on))
            txt = _unit_rows("text_features", text_features.to(compute_on))
            if name == "cos_similarity":
                scores = _cosine(img, txt, acts, None, tuning, progress, stage)
            elif name == "cos_similarity_cubed":
                scores = _cosine(img, txt, acts, resolved["min_norm"], tuning, progress, stage)
            else:
                scores = _rank_reorder(img, txt, acts, resolved, tuning, progress, stage)
    return scores.cpu()


# ----------------------------------------------------------------------------- soft_wpmi / wpmi


class _OrderedSum:
    """Adds K×C term matrices rank by rank in the order of PyTorch's CPU ``sum`` over dim 0.

    ATen sums a (top_k, M) float tensor over its rows with a cascade: rows are added
    one by one into a level-0 accumulator; after every full chunk of 2**power rows it
    is added into level 1 and cleared, level 1 into level 2 after 2**power chunks, and
    so on; at the end the levels are added together. Columns handled as scalars or
    single vectors (the last M mod 32 when M ≥ 8, the last M mod 4 otherwise) instead
    interleave the rows into ``lanes=4`` partial sums: rows 4i+r go through the
    cascade of lane r, leftover rows are added to lane 0, then the lanes are added in
    order. Following the same order makes our sums bit-identical to the reference's
    ``torch.sum(terms, dim=0)`` on the CPU.
    """

    _LEVELS = 4

    def __init__(self, size: int, shape: tuple[int, int], lanes: int, device: torch.device):
        rows = size // lanes
        ceil_log2 = 1 if rows <= 2 else (rows - 1).bit_length()
        self._power = max(4, ceil_log2 // self._LEVELS)
        self._mask = (1 << self._power) - 1
        self._lanes, self._cascaded = lanes, rows * lanes
        self._shape, self._device = shape, device
        self._acc: list[list[Optional[torch.Tensor]]] = [
            [torch.zeros(shape, device=device)] + [None] * (self._LEVELS - 1) for _ in range(lanes)
        ]
        self._rank = 0
        self._totals: list[torch.Tensor] = []
        if self._cascaded == 0:
            self._collapse()

    def target(self) -> torch.Tensor:
        """The accumulator to which the caller adds this rank's terms."""
        if self._rank < self._cascaded:
            return self._acc[self._rank % self._lanes][0]
        return self._totals[0]

    def end_rank(self) -> None:
        """Record that this rank's terms have been added; carry full chunks upwards."""
        self._rank += 1
        if self._rank <= self._cascaded and self._rank % self._lanes == 0:
            rows = self._rank // self._lanes
            if rows & self._mask == 0:
                for lanes in self._acc:
                    for level in range(1, self._LEVELS):
                        if lanes[level] is None:
                            lanes[level] = torch.zeros(self._shape, device=self._device)
                        lanes[level].add_(lanes[level - 1])
                        lanes[level - 1].zero_()
                        if rows & (self._mask << (level * self._power)):
                            break
        if self._rank == self._cascaded:
            self._collapse()

    def _collapse(self) -> None:
        for lanes in self._acc:
            total = lanes[0]
            for level in range(1, self._LEVELS):
                if lanes[level] is not None:
                    total.add_(lanes[level])
            self._totals.append(total)
        self._acc = []

    def total(self) -> torch.Tensor:
        total = self._totals[0]
        for other in self._totals[1:]:
            total.add_(other)
        return total


class _RowStore:
    """Softmax rows of the probe images, computed in batches and kept while needed.

    Ranks are processed in order. One (kept + area, M) tensor holds the rows. When a
    rank needs rows that are not resident, one matmul computes them, plus the rows of
    the following ranks while they fit, into the *area* (the last rows of the tensor),
    where they are used in place. Before the area is overwritten, rows that a later
    rank needs again move to a *kept* slot; if the kept slots are full, the rows needed
    furthest in the future are dropped and recomputed when needed (Belady's rule).
    Freed kept slots are reused first, so only about as many pages as rows alive at
    once are ever touched.
    """

    def __init__(self, compute: Callable[[torch.Tensor, torch.Tensor], None], images_per_rank: torch.Tensor,
                 n_images: int, n_concepts: int, row_batch: int, store_bytes: int, device: torch.device):
        self._compute = compute
        top_k, n_units = images_per_rank.shape
        self._ranks = [torch.unique(row, return_inverse=True) for row in images_per_rank]
        # Distinct (image, rank) uses, sorted by image then rank; _use_next points at each
        # image's next use and reaches _use_end when it has none left.
        uses = torch.unique(images_per_rank * top_k + torch.arange(top_k).unsqueeze(1))
        self._use_rank = uses % top_k
        counts = torch.bincount(uses // top_k, minlength=n_images)
        self._use_end = counts.cumsum(0)
        self._use_next = self._use_end - counts
        # At most half the budget for the area; but one rank's images (at most one per
        # unit) must fit in the area and among the kept rows.
        budget_rows = store_bytes // (4 * n_concepts)
        self._area_rows = max(min(row_batch, budget_rows // 2), n_units, _MIN_MATMUL_ROWS)
        self._kept = min(max(budget_rows - self._area_rows, n_units), n_images)
        self.rows = torch.empty(self._kept + self._area_rows, n_concepts, device=device)
        self._slot_of = torch.full((n_images,), -1, dtype=torch.long)
        self._free = list(range(self._kept - 1, -1, -1))  # a stack: low slots are reused first
        self._in_area = torch.empty(0, dtype=torch.long)

    def prepare(self, rank: int) -> torch.Tensor:
        """Make every image of ``rank`` resident; return the row slot for each unit."""
        needed, unit_to_needed = self._ranks[rank]
        if bool((self._slot_of[needed] < 0).any()):
            self._refill(rank)
        return self._slot_of[needed][unit_to_needed]

    def finish_rank(self, rank: int) -> None:
        """Advance the images used at ``rank``; free the kept slots of those not needed again."""
        used = self._ranks[rank][0]
        self._use_next[used] += 1
        done = used[self._use_next[used] == self._use_end[used]]
        slots = self._slot_of[done]
        self._free.extend(slots[(slots >= 0) & (slots < self._kept)].tolist())
        self._slot_of[done] = -1

    def _pending(self, images: torch.Tensor) -> torch.Tensor:
        return images[self._use_next[images] < self._use_end[images]]

    def _next_use(self, images: torch.Tensor) -> torch.Tensor:
        return self._use_rank[self._use_next[images]]

    def _refill(self, rank: int) -> None:
        needed = self._ranks[rank][0]
        survivors = self._pending(self._in_area)
        survivors = survivors[self._slot_of[survivors] >= self._kept]
        if survivors.numel():
            self._keep(survivors)
        self._slot_of[self._in_area[self._slot_of[self._in_area] >= self._kept]] = -1
        # This rank's missing rows, then whole following ranks while the area has room.
        batch = [needed[self._slot_of[needed] < 0]]
        queued = torch.zeros_like(self._slot_of, dtype=torch.bool)
        queued[batch[0]] = True
        size = batch[0].numel()
        for later in range(rank + 1, len(self._ranks)):
            images = self._ranks[later][0]
            extra = images[(self._slot_of[images] < 0) & ~queued[images]]
            if size + extra.numel() > self._area_rows:
                break
            batch.append(extra)
            queued[extra] = True
            size += extra.numel()
        images = torch.cat(batch)
        self._slot_of[images] = self._kept + torch.arange(images.numel())
        self._in_area = images
        self._compute(images, self.rows[self._kept:])

    def _keep(self, survivors: torch.Tensor) -> None:
        """Move rows from the area to kept slots, dropping the ones needed last if full."""
        if survivors.numel() > len(self._free):
            resident = ((self._slot_of >= 0) & (self._slot_of < self._kept)).nonzero().squeeze(1)
            candidates = torch.cat([resident, survivors])
            # Rows this rank uses come first (their next use is now) and always fit.
            order = torch.argsort(self._next_use(candidates), stable=True)
            dropped = candidates[order[self._kept:]]
            drop_resident = dropped[self._slot_of[dropped] < self._kept]
            self._free.extend(self._slot_of[drop_resident].tolist())
            self._slot_of[drop_resident] = -1
            chosen = torch.zeros_like(self._slot_of, dtype=torch.bool)
            chosen[candidates[order[: self._kept]]] = True
            survivors = survivors[chosen[survivors]]
        if survivors.numel():
            slots = torch.tensor([self._free.pop() for _ in range(survivors.numel())], dtype=torch.long)
            sources = self._slot_of[survivors].to(self.rows.device)
            self.rows.index_copy_(0, slots.to(self.rows.device), self.rows.index_select(0, sources))
            self._slot_of[survivors] = slots


def _pmi(name: str, image_features: torch.Tensor, text_features: torch.Tensor, acts: torch.Tensor,
         params: dict, tuning: dict, device: torch.device, progress: Optional[ProgressFn],
         stage: str) -> torch.Tensor:
    """soft_wpmi / wpmi without materialising the N×M image×concept matrix."""
    top_k, a, min_prob = params["top_k"], params["a"], params["min_prob"]
    n_units = acts.shape[1]
    txt = _unit_rows("text_features", text_features.to(device))
    n_concepts = txt.shape[0]

    # ranked[j, k] = image at rank j of unit k; only the union of these images matters.
    ranked = torch.topk(acts, top_k, dim=0).indices.cpu()
    images, rank_rows = torch.unique(ranked, return_inverse=True)
    img = _unit_rows("image_features", image_features.index_select(0, images.to(image_features.device)).to(device))
    txt_t = txt.T  # the reference's layout for I·Tᵀ (changing it changes the last bits)

    weights = None
    if name == "soft_wpmi":
        # p_j exactly as the reference builds it (float32, same operation order).
        weights = params["p_start"] - (torch.arange(top_k) / top_k * (params["p_start"] - params["p_end"]))
        weights = weights.to(device)

    def compute(rows: torch.Tensor, area: torch.Tensor) -> None:
        # Matmul, scale and softmax in place where the rows will be read.
        count = rows.numel()
        if count < _MIN_MATMUL_ROWS:
            rows = torch.cat([rows, rows[:1].expand(_MIN_MATMUL_ROWS - count)])
        out = area[: rows.numel()]
        torch.mm(img.index_select(0, rows.to(device)), txt_t, out=out)
        out.mul_(a)
        if out.device.type == "cpu":
            # In place: no fresh N×M pages (page faults cost as much as the softmax here).
            torch.ops.aten._softmax.out(out, 1, False, out=out)
        else:
            out.copy_(torch.softmax(out, dim=1))
        # Store the first operation of each term, which depends on the image only.
        if name == "soft_wpmi":
            out.sub_(1)  # Q − 1
        else:
            out.add_(min_prob)  # Q + min_prob

    store = _RowStore(compute, rank_rows, images.numel(), n_concepts, tuning["_row_batch"],
                      tuning["_store_bytes"], device)
    # Columns that torch.sum adds with full vectors of 4×8 columns, and the rest.
    head = 32 * (n_concepts // 32) if n_concepts >= 8 else 4 * (n_concepts // 4)
    sums = _OrderedSum(top_k, (n_units, n_concepts), 1, device)
    tail_sums = _OrderedSum(top_k, (n_units, n_concepts - head), 4, device) if head < n_concepts else None
    unit_block = min(max(1, tuning["_block_elements"] // n_concepts), n_units)
    terms = torch.empty(unit_block, n_concepts, device=device)
    for rank in range(top_k):
        slot_of_unit = store.prepare(rank).to(device)
        accumulator = sums.target()
        tail_accumulator = tail_sums.target() if tail_sums is not None else None
        for start in range(0, n_units, unit_block):
            stop = min(start + unit_block, n_units)
            block = terms[: stop - start]
            torch.index_select(store.rows, 0, slot_of_unit[start:stop], out=block)
            if weights is not None:
                block.mul_(weights[rank]).add_(1).add_(min_prob)  # 1 + p_j·(Q − 1) + min_prob
            block.log_()
            accumulator[start:stop].add_(block)
            if tail_accumulator is not None:
                tail_accumulator[start:stop].add_(block[:, head:])
        sums.end_rank()
        if tail_sums is not None:
            tail_sums.end_rank()
        store.finish_rank(rank)
        report(progress, stage, rank + 1, top_k)
    del store, terms

    log_likelihood = sums.total()
    if tail_sums is not None:
        log_likelihood[:, head:] = tail_sums.total()
    log_prior = torch.logsumexp(log_likelihood, dim=0, keepdim=True) - torch.log(
        n_units * torch.ones([1], device=device)
    )
    return log_likelihood.sub_(params["lam"] * log_prior)


# ----------------------------------------------------------------------------- cosine similarities


def _concept_block(n_images: int, tuning: dict) -> int:
    """Concepts per block so one N×block float32 block of P fits the budget."""
    block = tuning["_block_bytes"] // (4 * n_images)
    return max(32, block // 32 * 32)


def _cosine(img: torch.Tensor, txt: torch.Tensor, acts: torch.Tensor, min_norm: Optional[float],
            tuning: dict, progress: Optional[ProgressFn], stage: str) -> torch.Tensor:
    """cos_similarity (``min_norm`` None) or cos_similarity_cubed, block by block of concepts."""
    if min_norm is None:
        acts = acts / torch.norm(acts, p=2, dim=0, keepdim=True)
    else:
        acts = (acts - torch.mean(acts, dim=0, keepdim=True)) ** 3
        acts = acts / torch.clip(torch.norm(acts, p=2, dim=0, keepdim=True), min_norm)
    acts_t = acts.T
    n_concepts = txt.shape[0]
    block = _concept_block(img.shape[0], tuning)
    scores = torch.empty(acts.shape[1], n_concepts, device=img.device)
    total = math.ceil(n_concepts / block)
    for number, start in enumerate(range(0, n_concepts, block)):
        cosines = img @ txt[start:start + block].T
        if min_norm is None:
            cosines /= torch.norm(cosines, p=2, dim=0, keepdim=True)
        else:
            cosines -= torch.mean(cosines, dim=0, keepdim=True)
            cosines.pow_(3)
            cosines /= torch.clip(torch.norm(cosines, p=2, dim=0, keepdim=True), min_norm)
        torch.mm(acts_t, cosines, out=scores[:, start:start + block])
        report(progress, stage, number + 1, total)
    return scores


# ----------------------------------------------------------------------------- rank_reorder


def _rank_reorder(img: torch.Tensor, txt: torch.Tensor, acts: torch.Tensor, params: dict,
                  tuning: dict, progress: Optional[ProgressFn], stage: str) -> torch.Tensor:
    """rank_reorder: how well each concept's cosines reorder a unit's top activations.

    For unit k take its n = int(top_fraction·N) highest activations a (descending) and
    their images. For concept m, rank those images by cosine (0 = lowest); giving the
    image of rank r the r-th smallest of a yields a "reordered" activation vector. Then
    err_m = mean_i |a_i − reordered_i|^p / b, where b = mean |ã − ã[perm]|^p over five
    random permutations of the ascending values ã, and
    score[k,m] = −err_m / c̄_m^scale_p with c̄_m the mean cosine of those n images.
    A negative c̄_m gives NaN, as in the reference, and so does b = 0 (all top
    activations equal, e.g. a dead unit). The permutations come from a torch generator
    seeded with ``seed`` (the reference uses the unseeded global generator), five per
    unit in unit order.
    """
    power, scale_p = params["p"], params["scale_p"]
    n_images, n_units = acts.shape
    top_n = int(n_images * params["top_fraction"])
    values, ranked = torch.topk(acts, top_n, dim=0)  # (top_n, K), descending
    ascending = torch.flip(values, dims=[0])
    generator = torch.Generator().manual_seed(params["seed"])
    baselines = []
    for unit in range(n_units):
        column = ascending[:, unit:unit + 1]
        shuffled = torch.cat([column[torch.randperm(top_n, generator=generator).to(acts.device)] for _ in range(5)],
                             dim=1)
        baselines.append(torch.mean(torch.abs(column - shuffled) ** power))

    images, rows = torch.unique(ranked, return_inverse=True)
    img = img.index_select(0, images)
    n_concepts = txt.shape[0]
    block = _concept_block(images.numel(), tuning)
    positions = torch.arange(top_n, device=acts.device)
    errors = torch.empty(n_units, n_concepts, device=acts.device)
    blocks = math.ceil(n_concepts / block)
    for number, start in enumerate(range(0, n_concepts, block)):
        cosines = img @ txt[start:start + block].T  # (|U|, block)
        for unit in range(n_units):
            # Concepts as rows so sorting runs along contiguous memory.
            chosen = cosines.index_select(0, rows[:, unit]).T.contiguous()  # (block, top_n)
            mean_cosine = chosen.mean(dim=1)
            order = torch.argsort(chosen, dim=1)
            rank_of = torch.empty_like(order).scatter_(1, order, positions.expand_as(order))
            reordered = ascending[:, unit][rank_of]
            error = torch.mean(torch.abs(values[:, unit] - reordered) ** power, dim=1) / baselines[unit]
            errors[unit, start:start + block] = error / mean_cosine ** scale_p
            report(progress, stage, number * n_units + unit + 1, blocks * n_units)
    return -errors

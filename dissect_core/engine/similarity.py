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

Every registered function is called as ``fn(image_features, text_features, activations,
settings)`` with a :class:`ScoringSettings`; :func:`similarity_matrix` is the entry point.

Memory and time. The reference materialises P (N×M, 5 GB for Broden × 20k concepts) and
its softmax. Here ``soft_wpmi``/``wpmi`` compute each softmax row once, only for images
in the union of the units' top-k sets, a thousand rows per matmul, and keep one K×M
float32 sum (40 MB for 512 units × 20k concepts); see :func:`_pmi`. Their cost is that
matmul and K·top_k·M log1p terms, formed a few MiB at a time so that each step finds the
previous one's rows in the CPU's cache. The cosine functions and ``rank_reorder`` work on
blocks of concepts (256 MiB of P at a time).

Precision. ``soft_wpmi``/``wpmi`` split each term into a constant and a small log1p
term, so their float32 sums stay close to the exact (float64) values: within about 5e-6
at the standard sizes of ``benchmarks/bench_soft_wpmi.py`` and 5e-7 at Broden's, where
the reference's float32 sum of 100 logs near −5 each is off by about 2e-4. A label
differs from the reference's only where two concepts' scores tie within that.
"""
from __future__ import annotations

import math
import numbers
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

import numpy as np
import torch

from dissect_core.choices.catalog import SIMILARITY_FUNCTIONS
from dissect_core.common.errors import InvalidInputError
from dissect_core.common.progress import ProgressFn, report

# Tuning knobs: they change speed and memory, and the scores at most by float32 rounding
# (the order in which terms are added), so they are not part of the resolved params (nor
# of cache keys).
_TUNING_DEFAULTS: dict[str, int] = {
    "_row_batch": 1024,  # images whose softmax rows are computed in one matmul
    "_pair_bytes": 4 << 20,  # budget for the rows of terms formed at once
    "_worker_terms": 1 << 24,  # terms of a chunk from which the CPU threads share it out
    "_block_bytes": 256 << 20,  # budget for one block of P in the cosine functions
}

_INT_PARAMS = {"top_k", "seed"}


@dataclass(frozen=True)
class ScoringSettings:
    """What a registered similarity function gets besides its three matrices.

    Every entry of ``catalog.SIMILARITY_FUNCTIONS`` is called as
    ``fn(image_features, text_features, activations, settings)``: raw CLIP image (N×d)
    and text (M×d) features on any device and in any float dtype, float32 activations
    (N×K) already on ``settings.device``; it returns the K×M float32 scores on that
    device. :func:`similarity_matrix` checks the inputs and builds the settings.
    """

    params: Mapping[str, Union[int, float]]  # the function's parameters, checked, defaults filled in (resolve_params)
    tuning: Mapping[str, int]  # speed and memory knobs (leading underscore): the scores only by rounding
    device: torch.device  # where the work runs
    progress: Optional[ProgressFn] = None  # receives (stage, done, total) as the work advances
    stage: str = "similarity"  # the stage name given to ``progress``


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
    defaults = SIMILARITY_FUNCTIONS.get(name).defaults  # an unknown name lists the valid ones
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
    if bool((norms == 0).any()):
        raise InvalidInputError(
            f"{label} row {int((norms == 0).nonzero()[0, 0])} is all zeros, so it has no direction to compare; "
            "recompute the CLIP features."
        )
    return features / norms


def check_probe_size(name: str, n_images: int, params: dict) -> None:
    """Refuse a probe set too small for the similarity function (``params`` resolved),
    so the pipeline can say so before the probe pass rather than after it."""
    if name in ("soft_wpmi", "wpmi") and n_images < params["top_k"]:
        raise InvalidInputError(
            f"The probe set has {n_images} images but {name} needs at least top_k={params['top_k']} of them "
            f"(it uses each unit's top {params['top_k']} images). Use a larger probe set or lower top_k "
            f"(e.g. top_k={n_images})."
        )
    if name == "rank_reorder" and int(n_images * params["top_fraction"]) < 2:
        raise InvalidInputError(
            f"The probe set has {n_images} images; rank_reorder ranks each unit's top "
            f"int(top_fraction·N) = {int(n_images * params['top_fraction'])} images and needs at least 2. "
            "Use a larger probe set or raise top_fraction."
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
    images. ``params`` override the function's registered defaults (the reference constants);
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
    check_probe_size(name, image_features.shape[0], resolved)
    try:
        compute_on = torch.device(device) if device is not None else torch.device("cpu")
    except (RuntimeError, TypeError) as exc:
        raise InvalidInputError(f"Unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'.") from exc
    stage = f"similarity {name}"
    compute = SIMILARITY_FUNCTIONS.get(name).value
    with torch.no_grad():
        scores = compute(image_features, text_features, activations.to(compute_on).float(),
                         ScoringSettings(resolved, tuning, compute_on, progress, stage))
    return scores.cpu()


# ----------------------------------------------------------------------------- soft_wpmi / wpmi


def _log1p_(block: torch.Tensor) -> None:
    """log1p of a contiguous block, in place: on the CPU through numpy, whose log1p is
    vectorised (torch's CPU log1p is not: about twenty times as long here, and six
    times as long as torch's own log)."""
    if block.device.type == "cpu":
        array = block.numpy()
        np.log1p(array, out=array)
    else:
        block.log1p_()


def _pmi(name: str, image_features: torch.Tensor, text_features: torch.Tensor, acts: torch.Tensor,
         settings: ScoringSettings) -> torch.Tensor:
    """soft_wpmi / wpmi without materialising the N×M image×concept matrix.

    Every term is log(offset_j + scale_j·Q[s,m]) for the image s at rank j of a unit:
    soft_wpmi has scale p_j and offset 1 − p_j + min_prob, wpmi scale 1 and offset
    min_prob. Written as log(offset_j) + log1p(w_j·Q[s,m]) with w_j = scale_j/offset_j,
    the first part sums to the same constant C for every unit and concept (added back
    in float64), and the float32 sum of the small, positive log1p terms stays accurate.

    Only images in the union of the units' top-k sets matter. Each image's row of
    E = exp(a·P) comes from one matmul and its softmax denominator Z from one sum, so
    Q = E/Z is never formed: a term is log1p(E[s,m]·w_j/Z_s). :func:`_chunked_sums` adds
    up the terms a chunk of rows and a block of terms at a time; a call that fits in one
    chunk and one block has its terms all formed at once by :func:`_whole_sums`.
    """
    params, tuning, device = settings.params, settings.tuning, settings.device
    top_k, a, min_prob = params["top_k"], params["a"], params["min_prob"]
    n_units = acts.shape[1]
    txt = _unit_rows("text_features", text_features.to(device))

    ranked = torch.topk(acts, top_k, dim=0).indices.cpu()  # ranked[j, k]: image at rank j of unit k
    images, slots = torch.unique(ranked, return_inverse=True)
    img = _unit_rows("image_features", image_features.index_select(0, images.to(image_features.device)).to(device))
    img.mul_(a)  # so that one matmul gives a·P

    # float64 weights in numpy: a third of the time of torch's ops on such short vectors
    if name == "soft_wpmi":
        scale = params["p_start"] - np.arange(top_k) / top_k * (params["p_start"] - params["p_end"])
        offset = 1 - scale + min_prob
    else:
        scale = np.ones(top_k)
        offset = np.full(top_k, min_prob)
    constant = float(np.log(offset).sum())
    ratio = torch.from_numpy(scale / offset).to(device)

    # With one chunk of rows and one block of terms the chunked path's pair bookkeeping and
    # sparse matmul buy nothing. Measured (2 CPU threads, soft_wpmi, best of 300 calls): all
    # at once 0.73 against chunked 0.93 ms at 0.16M terms (200 × 100 × 16), 1.95 against
    # 2.29 ms at 0.5M; from 1M to 4M terms within the noise (±10 %) either way; at 8M and
    # 12.8M chunked 12 % and 43 % faster (its blocks stay in the cache).
    if images.numel() <= tuning["_row_batch"] and ranked.numel() * txt.shape[0] * 4 <= tuning["_pair_bytes"]:
        sums = _whole_sums(img, txt, slots.T.flatten().to(device), ratio, a)
        report(settings.progress, settings.stage, 1, 1)
    else:
        sums = _chunked_sums(img, txt, slots, ratio, a, settings)
    log_likelihood = sums.double().add_(constant)
    log_prior = torch.logsumexp(log_likelihood, dim=0, keepdim=True) - math.log(n_units)
    return log_likelihood.sub_(params["lam"] * log_prior).float()


def _exp_cosines(img: torch.Tensor, txt: torch.Tensor, a: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """exp(a·P) for the rows of ``img`` (already scaled by a), in ``out`` if given."""
    exps = torch.mm(img, txt.T, out=out)
    # a·P lies in [−a, a]: exp stays within float32's normal range for a ≤ 80. A larger
    # a needs each row's maximum subtracted, which cancels in the softmax.
    if a > 80:
        exps.sub_(exps.amax(dim=1, keepdim=True))
    return exps.exp_()


def _whole_sums(img: torch.Tensor, txt: torch.Tensor, pair_slot: torch.Tensor, ratio: torch.Tensor,
                a: float) -> torch.Tensor:
    """Σ_j log1p(w_j·Q[s_j, m]) per unit, every term formed at once (``pair_slot``: the
    union row of each (unit, rank) pair, by unit then rank)."""
    exps = _exp_cosines(img, txt, a)
    top_k = ratio.numel()
    factors = ratio.repeat(pair_slot.numel() // top_k).div_(exps.sum(dim=1)[pair_slot]).float()
    terms = exps.index_select(0, pair_slot).mul_(factors.unsqueeze(1))
    _log1p_(terms)
    return terms.view(-1, top_k, txt.shape[0]).sum(dim=1)


def _chunked_sums(img: torch.Tensor, txt: torch.Tensor, slots: torch.Tensor, ratio: torch.Tensor, a: float,
                  settings: ScoringSettings) -> torch.Tensor:
    """Σ_j log1p(w_j·Q[s_j, m]) per unit (``slots[j, k]``: the union row of unit k's image
    at rank j), the union's rows ``_row_batch`` at a time.

    For each chunk of rows, the (rank, unit) pairs whose image is in the chunk, ordered by
    unit, are handled a block of about ``_pair_bytes`` at a time (small enough to stay in
    the CPU's cache between the steps; an image can be in every unit's top set, so this
    also bounds memory): gather their rows of E, multiply each by w_j/Z_s, log1p, and add
    each row into its unit's sum. Each unit's rows are added in the same order however the
    work is split (threads, block size), so the split does not change the sums.

    On the CPU a chunk with ``_worker_terms`` terms or more is split at unit boundaries
    into one range of pairs per torch thread, each worked through by a thread of its own
    with torch single-threaded in it (:func:`_pair_workers`): torch's own threads would
    run the short block steps one after the other, and the numpy log1p between them alone.
    """
    tuning, device = settings.tuning, settings.device
    top_k, n_units = slots.shape
    n_images, n_concepts = img.shape[0], txt.shape[0]

    # The (rank, unit) pairs ordered by chunk of images, then by unit, then by rank, so a
    # chunk's pairs are a range and each unit's pairs within it a range.
    row_batch = tuning["_row_batch"]
    pair_slot = slots.T.flatten()  # by unit, then rank
    pair_unit = torch.arange(n_units).repeat_interleave(top_k)
    pair_rank = torch.arange(top_k).repeat(n_units)
    if n_images > row_batch:  # several chunks: by chunk first (a stable sort keeps the rest)
        order = torch.sort(pair_slot // row_batch, stable=True).indices
        pair_slot, pair_unit, pair_rank = pair_slot[order], pair_unit[order], pair_rank[order]
    bounds = torch.searchsorted(pair_slot, torch.arange(0, n_images + row_batch, row_batch)).tolist()
    units_cpu = pair_unit
    pair_slot, pair_unit, pair_rank = pair_slot.to(device), pair_unit.to(device), pair_rank.to(device)
    pair_block = min(max(1, tuning["_pair_bytes"] // (4 * n_concepts)), slots.numel())

    sums = torch.zeros(n_units, n_concepts, device=device)
    pair_ids = torch.arange(pair_block, device=device)
    ones = torch.ones(pair_block, device=device)
    exps = torch.empty(min(row_batch, n_images), n_concepts, device=device)
    threads = torch.get_num_threads() if device.type == "cpu" else 1
    buffers = [torch.empty(pair_block, n_concepts, device=device)]  # one per thread that forms terms

    def add_pairs(chunk: torch.Tensor, start: int, factors: torch.Tensor, first: int, lo: int, hi: int,
                  terms: torch.Tensor) -> None:
        """Add the terms of pairs lo..hi (a whole number of units) into those units' sums."""
        if lo == hi:
            return
        unit_lo, unit_hi = int(units_cpu[lo]), int(units_cpu[hi - 1]) + 1
        for block_lo in range(lo, hi, pair_block):
            block_hi = min(block_lo + pair_block, hi)
            size = block_hi - block_lo
            block = torch.index_select(chunk, 0, pair_slot[block_lo:block_hi] - start, out=terms[:size])
            block.mul_(factors[block_lo - first:block_hi - first].unsqueeze(1))
            _log1p_(block)
            # sums[unit] += its block rows, as a sparse (unit × pair) 0/1 matrix times the block:
            # faster than index_add_ on the CPU, which with two threads can take ten times as
            # long as with one. The indices are in range by construction, so torch's invariant
            # check (a scan per block) is skipped.
            owners = torch.sparse_coo_tensor(torch.stack([pair_unit[block_lo:block_hi] - unit_lo, pair_ids[:size]]),
                                             ones[:size], size=(unit_hi - unit_lo, size), check_invariants=False)
            sums[unit_lo:unit_hi].addmm_(owners, block)

    n_chunks = len(bounds) - 1
    pool = _pair_workers(threads) if threads > 1 else None
    for number, start in enumerate(range(0, n_images, row_batch)):
        chunk = _exp_cosines(img[start:start + row_batch], txt, a, out=exps[: min(row_batch, n_images - start)])
        first, last = bounds[number], bounds[number + 1]
        factors = ratio[pair_rank[first:last]].div_(chunk.sum(dim=1)[pair_slot[first:last] - start]).float()
        # After each of its parallel steps torch's idle thread spins for some milliseconds,
        # competing with the workers: they pay off for a chunk of some ten milliseconds' terms.
        if pool is None or (last - first) * n_concepts < tuning["_worker_terms"]:
            add_pairs(chunk, start, factors, first, first, last, buffers[0])
        else:
            cuts = _split_at_units(units_cpu, first, last, threads)
            buffers += [torch.empty_like(buffers[0]) for _ in range(threads - len(buffers))]
            list(pool.map(lambda part: add_pairs(chunk, start, factors, first, cuts[part], cuts[part + 1],
                                                 buffers[part]), range(threads)))
            torch.set_num_threads(threads)  # see _pair_workers
        report(settings.progress, settings.stage, number + 1, n_chunks)
    return sums


def _split_at_units(units: torch.Tensor, first: int, last: int, parts: int) -> list[int]:
    """Cut the pairs first..last, ordered by unit, into ``parts`` ranges of whole units
    with about equal numbers of pairs; returns the parts+1 bounds."""
    span = units[first:last]
    cuts = [first + int(torch.searchsorted(span, span[(last - first) * part // parts])) for part in range(1, parts)]
    return [first, *cuts, last]


_pair_pools: dict[int, ThreadPoolExecutor] = {}
os.register_at_fork(after_in_child=_pair_pools.clear)  # a forked child has none of the threads


def _pair_workers(threads: int) -> ThreadPoolExecutor:
    """``threads`` threads in which torch runs single-threaded, started once and kept.

    ``torch.set_num_threads(1)`` in a new thread sets that thread's OpenMP and MKL thread
    counts, and also the default that threads starting later take: the caller puts that
    default back with ``torch.set_num_threads`` once the workers have run (its own counts
    are unchanged by either call).
    """
    if threads not in _pair_pools:
        _pair_pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="pmi-terms",
                                                  initializer=torch.set_num_threads, initargs=(1,))
    return _pair_pools[threads]


# ----------------------------------------------------------------------------- cosine similarities


def _concept_block(n_images: int, tuning: dict) -> int:
    """Concepts per block so one N×block float32 block of P fits the budget."""
    block = tuning["_block_bytes"] // (4 * n_images)
    return max(32, block // 32 * 32)


def _cosine(img: torch.Tensor, txt: torch.Tensor, acts: torch.Tensor, min_norm: Optional[float],
            settings: ScoringSettings) -> torch.Tensor:
    """cos_similarity (``min_norm`` None) or cos_similarity_cubed, block by block of concepts."""
    if min_norm is None:
        acts = acts / torch.norm(acts, p=2, dim=0, keepdim=True)
    else:
        acts = (acts - torch.mean(acts, dim=0, keepdim=True)) ** 3
        acts = acts / torch.clip(torch.norm(acts, p=2, dim=0, keepdim=True), min_norm)
    acts_t = acts.T
    n_concepts = txt.shape[0]
    block = _concept_block(img.shape[0], settings.tuning)
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
        report(settings.progress, settings.stage, number + 1, total)
    return scores


# ----------------------------------------------------------------------------- rank_reorder


def _rank_reorder(img: torch.Tensor, txt: torch.Tensor, acts: torch.Tensor,
                  settings: ScoringSettings) -> torch.Tensor:
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
    params = settings.params
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
    block = _concept_block(images.numel(), settings.tuning)
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
            report(settings.progress, settings.stage, number * n_units + unit + 1, blocks * n_units)
    return -errors


# ----------------------------------------------------------------------------- the registered functions


def _normalised(image_features: torch.Tensor, text_features: torch.Tensor,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return (_unit_rows("image_features", image_features.to(device)),
            _unit_rows("text_features", text_features.to(device)))


# The functions that ``catalog.SIMILARITY_FUNCTIONS`` registers (see ScoringSettings).

def soft_wpmi_scores(img: torch.Tensor, txt: torch.Tensor, acts: torch.Tensor, s: ScoringSettings) -> torch.Tensor:
    return _pmi("soft_wpmi", img, txt, acts, s)


def wpmi_scores(img: torch.Tensor, txt: torch.Tensor, acts: torch.Tensor, s: ScoringSettings) -> torch.Tensor:
    return _pmi("wpmi", img, txt, acts, s)


def cosine_scores(img: torch.Tensor, txt: torch.Tensor, acts: torch.Tensor, s: ScoringSettings) -> torch.Tensor:
    return _cosine(*_normalised(img, txt, s.device), acts, None, s)


def cubed_cosine_scores(img: torch.Tensor, txt: torch.Tensor, acts: torch.Tensor, s: ScoringSettings) -> torch.Tensor:
    return _cosine(*_normalised(img, txt, s.device), acts, s.params["min_norm"], s)


def rank_reorder_scores(img: torch.Tensor, txt: torch.Tensor, acts: torch.Tensor, s: ScoringSettings) -> torch.Tensor:
    return _rank_reorder(*_normalised(img, txt, s.device), acts, s)

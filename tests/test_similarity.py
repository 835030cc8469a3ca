"""Tests for dissect_core.engine.similarity against naive loops written from the formulas.

The oracles below work on Python floats (double precision) with plain loops over
units, ranks, images and concepts, so they share no code with the chunked
implementation.
"""
from __future__ import annotations

import math

import pytest
import torch

from dissect_core.common.errors import InvalidInputError
from dissect_core.choices.catalog import SIMILARITY_FUNCTIONS
from dissect_core.engine import similarity
from dissect_core.engine.similarity import resolve_params, similarity_matrix

# ----------------------------------------------------------------------------- naive oracles


def _rows_normalised(features: torch.Tensor) -> list[list[float]]:
    rows = features.double().tolist()
    return [[x / math.sqrt(sum(y * y for y in row)) for x in row] for row in rows]


def naive_cosines(image_features: torch.Tensor, text_features: torch.Tensor) -> list[list[float]]:
    images, texts = _rows_normalised(image_features), _rows_normalised(text_features)
    return [[sum(x * y for x, y in zip(image, text)) for text in texts] for image in images]


def naive_softmax_rows(cosines: list[list[float]], a: float) -> list[list[float]]:
    out = []
    for row in cosines:
        exps = [math.exp(a * c) for c in row]
        total = sum(exps)
        out.append([e / total for e in exps])
    return out


def top_images(activations: torch.Tensor, unit: int, count: int) -> list[int]:
    column = activations[:, unit].tolist()
    return sorted(range(len(column)), key=lambda i: -column[i])[:count]


def naive_pmi(log_likelihood: list[list[float]], lam: float) -> list[list[float]]:
    n_units, n_concepts = len(log_likelihood), len(log_likelihood[0])
    scores = [[0.0] * n_concepts for _ in range(n_units)]
    for m in range(n_concepts):
        column = [log_likelihood[k][m] for k in range(n_units)]
        peak = max(column)
        log_prior = peak + math.log(sum(math.exp(v - peak) for v in column)) - math.log(n_units)
        for k in range(n_units):
            scores[k][m] = log_likelihood[k][m] - lam * log_prior
    return scores


def naive_soft_wpmi_log_likelihood(image_features, text_features, activations, top_k=100, a=10.0,
                                   min_prob=1e-7, p_start=0.998, p_end=0.97) -> list[list[float]]:
    probs = naive_softmax_rows(naive_cosines(image_features, text_features), a)
    n_units, n_concepts = activations.shape[1], text_features.shape[0]
    log_likelihood = [[0.0] * n_concepts for _ in range(n_units)]
    for k in range(n_units):
        for j, image in enumerate(top_images(activations, k, top_k)):
            p_j = p_start - j / top_k * (p_start - p_end)
            for m in range(n_concepts):
                log_likelihood[k][m] += math.log(1 + p_j * (probs[image][m] - 1) + min_prob)
    return log_likelihood


def naive_soft_wpmi(image_features, text_features, activations, top_k=100, a=10.0, lam=1.0,
                    min_prob=1e-7, p_start=0.998, p_end=0.97) -> torch.Tensor:
    log_likelihood = naive_soft_wpmi_log_likelihood(image_features, text_features, activations, top_k, a,
                                                    min_prob, p_start, p_end)
    return torch.tensor(naive_pmi(log_likelihood, lam))


def naive_wpmi_log_likelihood(image_features, text_features, activations, top_k=28, a=2.0,
                              min_prob=1e-7) -> list[list[float]]:
    probs = naive_softmax_rows(naive_cosines(image_features, text_features), a)
    n_units, n_concepts = activations.shape[1], text_features.shape[0]
    log_likelihood = [[0.0] * n_concepts for _ in range(n_units)]
    for k in range(n_units):
        for image in top_images(activations, k, top_k):
            for m in range(n_concepts):
                log_likelihood[k][m] += math.log(probs[image][m] + min_prob)
    return log_likelihood


def naive_wpmi(image_features, text_features, activations, top_k=28, a=2.0, lam=0.6, min_prob=1e-7):
    log_likelihood = naive_wpmi_log_likelihood(image_features, text_features, activations, top_k, a, min_prob)
    return torch.tensor(naive_pmi(log_likelihood, lam))


def naive_cos(image_features, text_features, activations, cubed=False, min_norm=1e-3):
    cosines = naive_cosines(image_features, text_features)
    acts = activations.double().tolist()
    n_images = len(acts)

    def column(matrix, c):
        values = [matrix[i][c] for i in range(n_images)]
        if cubed:
            mean = sum(values) / n_images
            values = [(v - mean) ** 3 for v in values]
            norm = max(math.sqrt(sum(v * v for v in values)), min_norm)
        else:
            norm = math.sqrt(sum(v * v for v in values))
        return [v / norm for v in values]

    unit_columns = [column(acts, k) for k in range(len(acts[0]))]
    concept_columns = [column(cosines, m) for m in range(len(cosines[0]))]
    return torch.tensor([[sum(u * c for u, c in zip(unit, concept)) for concept in concept_columns]
                         for unit in unit_columns])


def naive_rank_reorder(image_features, text_features, activations, top_fraction=0.05, p=3.0,
                       scale_p=0.5, seed=0):
    cosines = naive_cosines(image_features, text_features)
    n_images, n_units = activations.shape
    n = int(n_images * top_fraction)
    generator = torch.Generator().manual_seed(seed)  # five permutations per unit, in unit order
    scores = []
    for k in range(n_units):
        images = top_images(activations, k, n)
        values = [float(activations[i, k]) for i in images]  # descending
        ascending = values[::-1]
        perms = [torch.randperm(n, generator=generator).tolist() for _ in range(5)]
        baseline = sum(abs(ascending[i] - ascending[perm[i]]) ** p for perm in perms for i in range(n)) / (5 * n)
        row = []
        for m in range(len(cosines[0])):
            column = [cosines[i][m] for i in images]
            mean = sum(column) / n
            ranks = [sum(1 for other in column if other < c) for c in column]
            error = sum(abs(values[i] - ascending[ranks[i]]) ** p for i in range(n)) / n / baseline
            row.append(float("nan") if mean < 0 else -error / mean ** scale_p)
        scores.append(row)
    return torch.tensor(scores)


# ----------------------------------------------------------------------------- data


def random_case(n_images=12, n_concepts=5, n_units=3, dim=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    image_features = torch.randn(n_images, dim, generator=generator) * 3
    text_features = torch.randn(n_concepts, dim, generator=generator)
    activations = torch.rand(n_images, n_units, generator=generator)  # no ties
    return image_features, text_features, activations


def planted_case(per_concept=110, n_concepts=6, dim=16, targets=(2, 0, 5), seed=0):
    """Each image shows one concept; unit k fires on exactly the images showing targets[k]."""
    generator = torch.Generator().manual_seed(seed)
    text_features = torch.randn(n_concepts, dim, generator=generator)
    shown = torch.arange(n_concepts).repeat_interleave(per_concept)
    image_features = text_features[shown] + 0.3 * torch.randn(len(shown), dim, generator=generator)
    activations = 0.1 * torch.rand(len(shown), len(targets), generator=generator)
    for unit, concept in enumerate(targets):
        activations[shown == concept, unit] += 1.0
    return image_features, text_features, activations, list(targets)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol=1e-5, rtol=1e-5):
    assert actual.dtype == torch.float32 and actual.device.type == "cpu"
    torch.testing.assert_close(actual.double(), expected.double(), atol=atol, rtol=rtol, equal_nan=True)


# ----------------------------------------------------------------------------- math against the oracles


def test_soft_wpmi_matches_naive_loop_small():
    image_features, text_features, activations = random_case()
    params = dict(top_k=4, a=10.0, lam=1.0, min_prob=1e-7, p_start=0.998, p_end=0.97)
    actual = similarity_matrix("soft_wpmi", image_features, text_features, activations, **params)
    assert_close(actual, naive_soft_wpmi(image_features, text_features, activations, **params))


def test_soft_wpmi_matches_naive_loop_with_reference_defaults():
    image_features, text_features, activations = random_case(n_images=130, n_concepts=6, n_units=3, dim=8)
    actual = similarity_matrix("soft_wpmi", image_features, text_features, activations)
    # Sums of 100 float32 logs of size ~5: allow for float32 rounding.
    assert_close(actual, naive_soft_wpmi(image_features, text_features, activations), atol=2e-4, rtol=1e-5)


def test_soft_wpmi_other_parameters():
    image_features, text_features, activations = random_case(seed=1)
    params = dict(top_k=5, a=3.0, lam=0.5, min_prob=1e-3, p_start=0.9, p_end=0.5)
    actual = similarity_matrix("soft_wpmi", image_features, text_features, activations, **params)
    assert_close(actual, naive_soft_wpmi(image_features, text_features, activations, **params))


def test_soft_wpmi_with_a_large_temperature_factor():
    """a > 80 would overflow exp in float32: each softmax row is shifted by its maximum."""
    image_features, text_features, activations = random_case(seed=12)
    params = dict(top_k=4, a=300.0)
    actual = similarity_matrix("soft_wpmi", image_features, text_features, activations, **params)
    assert actual.isfinite().all()
    assert_close(actual, naive_soft_wpmi(image_features, text_features, activations, **params), atol=1e-4)


def test_wpmi_matches_naive_loop():
    image_features, text_features, activations = random_case(n_images=40, seed=2)
    actual = similarity_matrix("wpmi", image_features, text_features, activations)
    assert_close(actual, naive_wpmi(image_features, text_features, activations), atol=5e-5)
    small = similarity_matrix("wpmi", image_features, text_features, activations, top_k=3, a=5.0, lam=1.0)
    assert_close(small, naive_wpmi(image_features, text_features, activations, top_k=3, a=5.0, lam=1.0))


def test_cos_similarity_matches_naive_loop():
    image_features, text_features, activations = random_case(seed=3)
    actual = similarity_matrix("cos_similarity", image_features, text_features, activations)
    assert_close(actual, naive_cos(image_features, text_features, activations))


def test_cos_similarity_cubed_matches_naive_loop():
    image_features, text_features, activations = random_case(seed=4)
    actual = similarity_matrix("cos_similarity_cubed", image_features, text_features, activations)
    assert_close(actual, naive_cos(image_features, text_features, activations, cubed=True))
    # A large min_norm takes effect: every column is divided by min_norm instead of its norm.
    clipped = similarity_matrix("cos_similarity_cubed", image_features, text_features, activations, min_norm=50.0)
    assert_close(clipped, naive_cos(image_features, text_features, activations, cubed=True, min_norm=50.0))


def test_rank_reorder_matches_naive_loop_including_nan():
    image_features, text_features, activations = random_case(n_images=60, n_concepts=6, dim=3, seed=5)
    params = dict(top_fraction=0.1, p=3.0, scale_p=0.5, seed=7)
    actual = similarity_matrix("rank_reorder", image_features, text_features, activations, **params)
    expected = naive_rank_reorder(image_features, text_features, activations, **params)
    assert expected.isnan().any() and not expected.isnan().all()  # the case covers both branches
    assert_close(actual, expected, atol=1e-4, rtol=1e-4)


def test_rank_reorder_is_reproducible_and_seeded():
    image_features, text_features, activations = random_case(n_images=80, seed=6)
    first = similarity_matrix("rank_reorder", image_features, text_features, activations, top_fraction=0.1)
    again = similarity_matrix("rank_reorder", image_features, text_features, activations, top_fraction=0.1)
    other = similarity_matrix("rank_reorder", image_features, text_features, activations, top_fraction=0.1, seed=1)
    assert torch.equal(first.nan_to_num(), again.nan_to_num())
    assert not torch.equal(first.nan_to_num(), other.nan_to_num())


# ----------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("name", ["soft_wpmi", "wpmi", "cos_similarity", "cos_similarity_cubed"])
def test_planted_concepts_are_found(name):
    image_features, text_features, activations, targets = planted_case()
    scores = similarity_matrix(name, image_features, text_features, activations)
    assert scores.shape == (3, 6)
    assert scores.argmax(dim=1).tolist() == targets


def test_dead_unit_gives_nan_cosines_as_in_the_reference():
    image_features, text_features, activations = random_case()
    activations[:, 1] = 0
    scores = similarity_matrix("cos_similarity", image_features, text_features, activations)
    assert scores[1].isnan().all() and not scores[[0, 2]].isnan().any()
    cubed = similarity_matrix("cos_similarity_cubed", image_features, text_features, activations)
    assert torch.equal(cubed[1], torch.zeros(5))  # min_norm keeps the cubed variant finite


@pytest.mark.parametrize("name", ["soft_wpmi", "wpmi"])
def test_chunk_sizes_do_not_change_the_result(name):
    image_features, text_features, activations = random_case(n_images=400, n_concepts=70, n_units=20, dim=8)
    reference = similarity_matrix(name, image_features, text_features, activations)
    # Three images per matmul and one (rank, unit) pair at a time add each unit's float32
    # log1p terms in another order. A float32 sum of n positive terms is within (n−1)·u·S of
    # the exact sum S (u = 2⁻²⁴); here S is at most 60 for soft_wpmi's 100 terms and 337 for
    # wpmi's 28. A score also carries the prior, an average of such sums, so two orders'
    # scores differ by at most 2·2·(n−1)·u·S: 1.4e-3 and 2.2e-3.
    n_terms, largest_sum = {"soft_wpmi": (100, 60.0), "wpmi": (28, 337.0)}[name]
    bound = 4 * (n_terms - 1) * 2.0 ** -24 * largest_sum
    tiny = similarity_matrix(name, image_features, text_features, activations, _row_batch=3, _pair_bytes=1)
    torch.testing.assert_close(tiny, reference, atol=bound, rtol=0)
    assert torch.equal(tiny.argmax(dim=1), reference.argmax(dim=1))


def _recording(taken: list, path: str):
    """similarity's function ``path``, appending its name to ``taken`` when called."""
    original = getattr(similarity, path)

    def record(*args):
        taken.append(path)
        return original(*args)
    return record


@pytest.mark.parametrize("name, params", [
    ("soft_wpmi", {}),
    ("soft_wpmi", {"top_k": 5, "a": 3.0, "lam": 0.5, "min_prob": 1e-3, "p_start": 0.9, "p_end": 0.5}),
    ("soft_wpmi", {"a": 300.0}),
    ("soft_wpmi", {"top_k": 30, "p_start": 1.0, "p_end": 0.99, "min_prob": 1e-9}),
    ("wpmi", {}),
])
def test_whole_and_chunked_sums_agree(name, params, monkeypatch):
    """A call whose top images fit one chunk of rows and whose terms fit one block of
    ``_pair_bytes`` has its terms formed all at once; one byte less sends the same call
    through the chunked path. Both form the same float32 terms (the same matmul and steps)
    and add each unit's in another order."""
    image_features, text_features, activations = random_case(n_images=400, n_concepts=70, n_units=20, dim=8)
    full = resolve_params(name, params)
    top_k, lam, min_prob = full["top_k"], full["lam"], full["min_prob"]
    taken = []
    for path in ("_whole_sums", "_chunked_sums"):
        monkeypatch.setattr(similarity, path, _recording(taken, path))
    whole = similarity_matrix(name, image_features, text_features, activations, **params)
    all_terms_bytes = 4 * top_k * activations.shape[1] * text_features.shape[0]
    chunked = similarity_matrix(name, image_features, text_features, activations, **params,
                                _pair_bytes=all_terms_bytes - 1)
    assert taken == ["_whole_sums", "_chunked_sums"]

    # A float32 sum of n = top_k positive terms is within (n−1)·u·S of its exact value S in
    # any order (u = 2⁻²⁴), so the two paths' sums differ by at most 2·(n−1)·u·S. A score is
    # its unit's sum minus lam·log p(t), a logsumexp average of the sums: at most (1 + lam)
    # times that apart, plus at most u·|score| for each result's rounding to float32. S is the
    # exact log-likelihood less the constant C = Σ_j log(offset_j), which is added in float64.
    if name == "soft_wpmi":
        log_likelihood = naive_soft_wpmi_log_likelihood(image_features, text_features, activations, top_k,
                                                        full["a"], min_prob, full["p_start"], full["p_end"])
        constant = sum(math.log(1 - (full["p_start"] - j / top_k * (full["p_start"] - full["p_end"])) + min_prob)
                       for j in range(top_k))
    else:
        log_likelihood = naive_wpmi_log_likelihood(image_features, text_features, activations, top_k, full["a"],
                                                   min_prob)
        constant = top_k * math.log(min_prob)
    largest_sum = (torch.tensor(log_likelihood) - constant).max().item()
    u = 2.0 ** -24
    bound = 2 * (1 + lam) * (top_k - 1) * u * largest_sum + 2 * u * whole.abs().max().item()
    torch.testing.assert_close(chunked, whole, atol=bound, rtol=0)
    # The same label wherever the runner-up is further than twice the bound from the best
    # (16 to 20 of the 20 units in these cases; a closer pair may swap on another CPU).
    best_two = whole.topk(2, dim=1).values
    clear = best_two[:, 0] - best_two[:, 1] > 2 * bound
    assert clear.sum() >= activations.shape[1] // 2
    assert torch.equal(chunked.argmax(dim=1)[clear], whole.argmax(dim=1)[clear])


def test_threads_split_the_work_without_losing_any():
    """On the CPU each torch thread works through its own range of units: one thread and
    three (more than the machine may have), with small blocks, give the same scores."""
    image_features, text_features, activations = random_case(n_images=400, n_concepts=70, n_units=20, dim=8)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = similarity_matrix("soft_wpmi", image_features, text_features, activations, _row_batch=50)
        torch.set_num_threads(3)
        split = similarity_matrix("soft_wpmi", image_features, text_features, activations, _row_batch=50,
                                  _pair_bytes=1000, _worker_terms=1)
    finally:
        torch.set_num_threads(threads)
    # Each unit's terms are added in the same order either way; only the matmul's rounding may
    # differ where its threads split the work differently, a few float32 ulps of sums up to
    # 60 (4e-6 each).
    torch.testing.assert_close(split, alone, atol=1e-5, rtol=0)
    assert torch.equal(split.argmax(dim=1), alone.argmax(dim=1))
    exact = naive_soft_wpmi(image_features, text_features, activations)
    assert_close(split, exact, atol=1e-4)


@pytest.mark.parametrize("name", ["cos_similarity", "cos_similarity_cubed", "rank_reorder"])
def test_concept_blocks_do_not_change_the_result(name):
    image_features, text_features, activations = random_case(n_images=100, n_concepts=70, n_units=4, dim=8)
    whole = similarity_matrix(name, image_features, text_features, activations)
    blocked = similarity_matrix(name, image_features, text_features, activations, _block_bytes=1)
    torch.testing.assert_close(whole, blocked, atol=1e-6, rtol=1e-5, equal_nan=True)


def _dense_soft_wpmi(image_features, text_features, activations, dtype):
    """The reference's dense computation (all N×M softmax rows, a sum of logs per unit) in ``dtype``."""
    top_k, a, min_prob = 100, 10, 1e-7
    image = image_features.to(dtype) / image_features.to(dtype).norm(dim=-1, keepdim=True)
    text = text_features.to(dtype) / text_features.to(dtype).norm(dim=-1, keepdim=True)
    probs = torch.softmax(a * (image @ text.T), dim=1)
    ranked = torch.topk(activations, dim=0, k=top_k)[1]
    weights = (0.998 - (torch.arange(top_k, dtype=dtype) / top_k * (0.998 - 0.97))).unsqueeze(1)
    rows = []
    for unit in range(activations.shape[1]):
        gathered = probs.gather(0, ranked[:, unit:unit + 1].expand(-1, probs.shape[1]))
        rows.append(torch.sum(torch.log(1 + weights * (gathered - 1) + min_prob), dim=0, keepdim=True))
    log_likelihood = torch.cat(rows)
    log_prior = torch.logsumexp(log_likelihood, dim=0, keepdim=True) - math.log(log_likelihood.shape[0])
    return log_likelihood - log_prior, log_likelihood


def test_matches_the_reference_dense_computation():
    """As close to the exact (float64) scores as the reference's float32 sums, and the same labels."""
    image_features, text_features, activations = random_case(n_images=300, n_concepts=45, n_units=9, dim=16)
    actual = similarity_matrix("soft_wpmi", image_features, text_features, activations, _row_batch=64)
    exact, log_likelihood = _dense_soft_wpmi(image_features, text_features, activations, torch.float64)
    reference, _ = _dense_soft_wpmi(image_features, text_features, activations, torch.float32)
    ours_error = (actual.double() - exact).abs().max()
    reference_error = (reference.double() - exact).abs().max()
    assert ours_error <= max(reference_error, 1e-5)
    # Scores are differences of log-likelihoods near −500: 1e-6 of their size is float32 rounding.
    assert (actual.double() - reference.double()).abs().max() <= 1e-6 * log_likelihood.abs().max()
    assert torch.equal(actual.argmax(dim=1), reference.argmax(dim=1))


def test_terms_as_small_as_min_prob():
    """p_start = 1 makes a term as small as log(min_prob): the sums must stay finite and exact."""
    image_features, text_features, activations = random_case(n_images=60, n_concepts=7, n_units=4, dim=8, seed=11)
    params = dict(top_k=30, p_start=1.0, p_end=0.99, min_prob=1e-9)
    actual = similarity_matrix("soft_wpmi", image_features, text_features, activations, **params)
    expected = naive_soft_wpmi(image_features, text_features, activations, **params)
    assert actual.isfinite().all()
    assert_close(actual, expected, atol=1e-4)


def test_prior_is_taken_over_all_units_passed():
    image_features, text_features, activations = random_case(n_images=20, seed=8)
    params = dict(top_k=4)
    two = similarity_matrix("soft_wpmi", image_features, text_features, activations[:, :2], **params)
    three = similarity_matrix("soft_wpmi", image_features, text_features, activations, **params)
    shift = two - three[:2]  # = lam·(log p(t) over three units − log p(t) over two)
    assert shift.abs().max() > 1e-3
    torch.testing.assert_close(shift[0], shift[1], atol=1e-5, rtol=0)
    # The log-likelihood part of each unit is unchanged: adding the shift back recovers it.
    naive_three = naive_soft_wpmi(image_features, text_features, activations, top_k=4)
    naive_two = naive_soft_wpmi(image_features, text_features, activations[:, :2], top_k=4)
    assert_close(shift, (naive_two - naive_three[:2]).float(), atol=1e-5)


def test_half_precision_inputs_are_accepted():
    image_features, text_features, activations = random_case(n_images=30, seed=9)
    half = similarity_matrix("soft_wpmi", image_features.half(), text_features.half(), activations.half(), top_k=5)
    single = similarity_matrix("soft_wpmi", image_features.half().float(), text_features.half().float(),
                               activations.half().float(), top_k=5)
    assert half.dtype == torch.float32
    assert torch.equal(half, single)


def test_progress_is_reported():
    calls = []
    image_features, text_features, activations = random_case(n_images=20)
    similarity_matrix("soft_wpmi", image_features, text_features, activations, top_k=6, _row_batch=4,
                      progress=lambda stage, done, total: calls.append((stage, done, total)))
    assert calls[-1][0] == "similarity soft_wpmi" and calls[-1][1] == calls[-1][2] > 1
    assert [done for _, done, _ in calls] == sorted(done for _, done, _ in calls)


def test_explicit_cpu_device():
    image_features, text_features, activations = random_case()
    on_cpu = similarity_matrix("wpmi", image_features, text_features, activations, top_k=3, device="cpu")
    assert torch.equal(on_cpu, similarity_matrix("wpmi", image_features, text_features, activations, top_k=3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", SIMILARITY_FUNCTIONS.names())
def test_cuda_matches_cpu(name):
    image_features, text_features, activations = random_case(n_images=200, n_concepts=40, n_units=6, dim=8)
    on_cpu = similarity_matrix(name, image_features, text_features, activations)
    on_gpu = similarity_matrix(name, image_features, text_features, activations, device="cuda")
    assert on_gpu.device.type == "cpu"
    torch.testing.assert_close(on_gpu, on_cpu, atol=1e-3, rtol=1e-4, equal_nan=True)
    if name in ("soft_wpmi", "wpmi"):  # this call forms its terms at once; the chunked path too
        chunked = similarity_matrix(name, image_features, text_features, activations, device="cuda", _pair_bytes=1000)
        torch.testing.assert_close(chunked, on_cpu, atol=1e-3, rtol=1e-4)


# ----------------------------------------------------------------------------- parameters and errors


def test_defaults_are_the_reference_constants():
    assert SIMILARITY_FUNCTIONS.names() == [
        "soft_wpmi", "wpmi", "cos_similarity", "cos_similarity_cubed", "rank_reorder",
        "precision_at_k", "auprc", "iou"]  # the last three: labelled probes only (tests/test_label_scores.py)
    assert resolve_params("soft_wpmi", {}) == dict(top_k=100, a=10, lam=1, min_prob=1e-7, p_start=0.998, p_end=0.97)
    assert resolve_params("wpmi", None) == dict(top_k=28, a=2, lam=0.6, min_prob=1e-7)
    assert resolve_params("cos_similarity", {}) == {}
    assert resolve_params("cos_similarity_cubed", {}) == dict(min_norm=1e-3)
    assert resolve_params("rank_reorder", {}) == dict(top_fraction=0.05, p=3, scale_p=0.5, seed=0)
    for entry in SIMILARITY_FUNCTIONS:  # what help and `dissect list` show is what is used
        assert resolve_params(entry.name) == entry.defaults


def test_resolve_params_merges_and_normalises_types():
    resolved = resolve_params("soft_wpmi", {"top_k": 20, "a": 5})
    assert resolved == dict(top_k=20, a=5.0, lam=1.0, min_prob=1e-7, p_start=0.998, p_end=0.97)
    assert isinstance(resolved["a"], float) and isinstance(resolved["top_k"], int)
    assert resolve_params("soft_wpmi", {"a": 10}) == resolve_params("soft_wpmi", {"a": 10.0})


@pytest.mark.parametrize("params, words", [
    ({"topk": 5}, ["topk", "top_k", "p_start"]),
    ({"top_k": 2.5}, ["top_k", "integer"]),
    ({"top_k": 0}, ["top_k", "at least 1"]),
    ({"a": float("nan")}, ["a", "finite"]),
    ({"p_end": 1.5}, ["p_end", "[0, 1]"]),
])
def test_bad_params_are_explained(params, words):
    with pytest.raises(InvalidInputError) as error:
        resolve_params("soft_wpmi", params)
    for word in words:
        assert word in str(error.value)


def test_unknown_function_lists_the_valid_names():
    image_features, text_features, activations = random_case()
    with pytest.raises(InvalidInputError) as error:
        similarity_matrix("softwpmi", image_features, text_features, activations)
    assert "softwpmi" in str(error.value)
    for name in SIMILARITY_FUNCTIONS.names():
        assert name in str(error.value)


def test_unknown_parameter_through_similarity_matrix():
    image_features, text_features, activations = random_case()
    with pytest.raises(InvalidInputError, match="valid parameters: min_norm"):
        similarity_matrix("cos_similarity_cubed", image_features, text_features, activations, top_k=3)
    with pytest.raises(InvalidInputError, match="_row_batch"):
        similarity_matrix("soft_wpmi", image_features, text_features, activations, _chunk=3)


def test_shape_mismatches_name_the_shapes():
    image_features, text_features, activations = random_case(n_images=12, dim=4)
    with pytest.raises(InvalidInputError) as error:
        similarity_matrix("wpmi", image_features, text_features, activations[:10], top_k=3)
    assert "(12, 4)" in str(error.value) and "(10, 3)" in str(error.value)
    with pytest.raises(InvalidInputError) as error:
        similarity_matrix("wpmi", image_features, text_features[:, :3], activations, top_k=3)
    assert "(12, 4)" in str(error.value) and "(5, 3)" in str(error.value)
    with pytest.raises(InvalidInputError, match="2-D"):
        similarity_matrix("wpmi", image_features, text_features, activations[:, 0], top_k=3)


@pytest.mark.parametrize("which", [0, 1, 2])
def test_non_finite_inputs_are_rejected(which):
    inputs = list(random_case())
    inputs[which] = inputs[which].clone()
    inputs[which][1, 1] = float("nan") if which != 1 else float("inf")
    label = ("image_features", "text_features", "activations")[which]
    with pytest.raises(InvalidInputError, match=f"{label} contains NaN or infinite"):
        similarity_matrix("cos_similarity", *inputs)


def test_too_few_images_for_top_k():
    image_features, text_features, activations = random_case(n_images=40)
    with pytest.raises(InvalidInputError) as error:
        similarity_matrix("soft_wpmi", image_features, text_features, activations)
    message = str(error.value)
    assert "40 images" in message and "top_k=100" in message and "lower top_k" in message
    with pytest.raises(InvalidInputError, match="top_k=28"):
        similarity_matrix("wpmi", image_features[:20], text_features, activations[:20])
    with pytest.raises(InvalidInputError, match="top_fraction"):
        similarity_matrix("rank_reorder", image_features[:30], text_features, activations[:30])


def test_zero_feature_rows_are_rejected():
    image_features, text_features, activations = random_case()
    text_features[2] = 0
    with pytest.raises(InvalidInputError, match="text_features row 2 is all zeros"):
        similarity_matrix("soft_wpmi", image_features, text_features, activations, top_k=3)

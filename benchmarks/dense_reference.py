"""Dense soft-WPMI, as the reference computes it (benchmarks only), and the exact scores.

The reference (CLIP-Dissect, ``utils.get_similarity_from_activations`` and
``similarity.soft_wpmi``) materialises the full N×M image×concept cosine matrix P,
takes its softmax over concepts, and then loops over units, taking each unit's top-k
rows, their logs, and their sum with ``torch.sum(dim=0)``. :func:`dense_soft_wpmi`
does the same, taking the rows one of two ways:

* ``select="index_select"`` (the benchmarks' baseline): ``probs.index_select`` copies the
  k rows, the fastest dense form;
* ``select="gather"`` (the reference's own code): ``probs.gather`` over an index expanded
  to k×M, which reads an index as large as the rows themselves.

It differs from the reference only in freeing P as soon as its softmax exists (``P`` is
scaled in place), which keeps the peak at two N×M float32 matrices instead of three.
"""
from __future__ import annotations

import torch


def _unit_rows(features: torch.Tensor) -> torch.Tensor:
    features = features.float()
    return features / features.norm(dim=-1, keepdim=True)


def dense_cosines(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """P = I·Tᵀ with both sides row-normalised (N×M)."""
    return _unit_rows(image_features) @ _unit_rows(text_features).T


def dense_soft_wpmi(image_features: torch.Tensor, text_features: torch.Tensor, activations: torch.Tensor,
                    top_k: int = 100, a: float = 10, lam: float = 1, min_prob: float = 1e-7,
                    p_start: float = 0.998, p_end: float = 0.97, select: str = "index_select") -> torch.Tensor:
    if select not in ("index_select", "gather"):
        raise ValueError(f"select must be 'index_select' or 'gather', got {select!r}")
    with torch.no_grad():
        probs = dense_cosines(image_features, text_features)
        probs.mul_(a)
        probs = torch.softmax(probs, dim=1)  # the scaled cosines are freed here
        ranked = torch.topk(activations, dim=0, k=top_k)[1]
        weights = (p_start - (torch.arange(start=0, end=top_k) / top_k * (p_start - p_end))).unsqueeze(1)
        sums = []
        for unit in range(activations.shape[1]):
            if select == "gather":
                top = probs.gather(0, ranked[:, unit:unit + 1].expand(-1, probs.shape[1]))
            else:
                top = probs.index_select(0, ranked[:, unit])
            terms = 1 + weights * (top - 1)
            sums.append(torch.sum(torch.log(terms + min_prob), dim=0, keepdim=True))
        log_likelihood = torch.cat(sums, dim=0)
        log_prior = torch.logsumexp(log_likelihood, dim=0, keepdim=True) - torch.log(
            log_likelihood.shape[0] * torch.ones([1]))
        return log_likelihood - lam * log_prior


def exact_soft_wpmi(image_features: torch.Tensor, text_features: torch.Tensor, activations: torch.Tensor,
                    top_k: int = 100, a: float = 10, lam: float = 1, min_prob: float = 1e-7,
                    p_start: float = 0.998, p_end: float = 0.97, rows: int = 512) -> torch.Tensor:
    """The same formula in float64: the exact scores that both float32 results are compared with.

    Only images in some unit's top-k set contribute, so only their softmax rows are formed,
    ``rows`` images at a time to bound memory; every term is logged and summed in float64.
    """
    with torch.no_grad():
        image = image_features.double() / image_features.double().norm(dim=-1, keepdim=True)
        text = text_features.double() / text_features.double().norm(dim=-1, keepdim=True)
        ranked = torch.topk(activations, dim=0, k=top_k)[1]  # (top_k, K)
        weights = p_start - torch.arange(top_k, dtype=torch.float64) / top_k * (p_start - p_end)
        log_likelihood = torch.zeros(activations.shape[1], text.shape[0], dtype=torch.float64)
        images = torch.unique(ranked)
        for start in range(0, images.numel(), rows):
            chunk = images[start:start + rows]
            probs = torch.softmax(a * (image[chunk] @ text.T), dim=1)
            rank, unit = torch.nonzero(torch.isin(ranked, chunk), as_tuple=True)
            terms = probs[torch.searchsorted(chunk, ranked[rank, unit])]
            terms = torch.log(1 + weights[rank].unsqueeze(1) * (terms - 1) + min_prob)
            log_likelihood.index_add_(0, unit, terms)
        log_prior = torch.logsumexp(log_likelihood, dim=0, keepdim=True) - torch.log(
            torch.tensor(float(log_likelihood.shape[0]), dtype=torch.float64))
        return log_likelihood - lam * log_prior

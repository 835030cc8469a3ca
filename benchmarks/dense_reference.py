"""Dense soft-WPMI written the way the reference computes it (benchmark only).

The reference (CLIP-Dissect, ``utils.get_similarity_from_activations`` and
``similarity.soft_wpmi``) materialises the full N×M image×concept cosine matrix P,
takes its softmax over concepts, and then loops over units, gathering each unit's
top-k rows, taking logs and summing them with ``torch.sum(dim=0)``. This module does
the same, so it is the baseline for speed, memory and labels. It differs only in
freeing P as soon as its softmax exists (``P`` is scaled in place), which keeps the
peak at two N×M float32 matrices instead of three.
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
                    p_start: float = 0.998, p_end: float = 0.97) -> torch.Tensor:
    with torch.no_grad():
        probs = dense_cosines(image_features, text_features)
        probs.mul_(a)
        probs = torch.softmax(probs, dim=1)  # the scaled cosines are freed here
        ranked = torch.topk(activations, dim=0, k=top_k)[1]
        weights = (p_start - (torch.arange(start=0, end=top_k) / top_k * (p_start - p_end))).unsqueeze(1)
        rows = []
        for unit in range(activations.shape[1]):
            gathered = probs.gather(0, ranked[:, unit:unit + 1].expand(-1, probs.shape[1]))
            terms = 1 + weights * (gathered - 1)
            rows.append(torch.sum(torch.log(terms + min_prob), dim=0, keepdim=True))
        log_likelihood = torch.cat(rows, dim=0)
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

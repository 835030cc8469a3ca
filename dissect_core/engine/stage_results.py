"""Typed results of the stages between the probe pass and the run folder, as the
cache stores them: the probe images' features, the concepts' features and each
unit's best concepts. (A layer's activations are ``activations.LayerActivations``;
its quality figures ``quality.LayerQuality``.)

``from_payload`` checks a cached payload's structure against what the run expects,
so an entry stored for another concept list or another layer is never used.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Mapping

import torch

from dissect_core.engine.cache import DamagedEntry, index_list, rows_with_indices, tensor_field


@dataclass
class ImageFeatures:
    """The probe images' features in concept space: CLIP image features, or the
    labelled-probe source's label vectors."""

    KIND: ClassVar[str] = "clip_images"

    features: torch.Tensor  # (images, d), unnormalised
    image_indices: torch.Tensor  # (images,): probe index of each row
    skipped: list[int] = field(default_factory=list)  # probe indices that could not be read

    def to_payload(self) -> dict:
        return {"features": self.features, "image_indices": self.image_indices, "skipped": self.skipped}

    @classmethod
    def from_payload(cls, payload: Mapping) -> "ImageFeatures":
        features, indices = rows_with_indices(payload, "features")
        return cls(features, indices, index_list(payload, "skipped"))


@dataclass
class TextFeatures:
    """The concepts' features, one row per concept in the concept set's order."""

    KIND: ClassVar[str] = "clip_texts"

    features: torch.Tensor  # (concepts, d), unnormalised

    def to_payload(self) -> dict:
        return {"features": self.features}

    @classmethod
    def from_payload(cls, payload: Mapping, n_concepts: int) -> "TextFeatures":
        features = tensor_field(payload, "features", 2, floating=True)
        if features.shape[0] != n_concepts:
            raise DamagedEntry(f"it holds {features.shape[0]} concept features, not {n_concepts}")
        return cls(features)


@dataclass
class BestConcepts:
    """Each unit's highest-scoring concepts, best first (the similarity stage's result)."""

    KIND: ClassVar[str] = "similarity"

    values: torch.Tensor  # (units, k) scores
    indices: torch.Tensor  # (units, k) concept indices

    def to_payload(self) -> dict:
        return {"values": self.values, "indices": self.indices}

    @classmethod
    def from_payload(cls, payload: Mapping, n_units: int, n_concepts: int) -> "BestConcepts":
        values = tensor_field(payload, "values", 2, floating=True)
        indices = tensor_field(payload, "indices", 2, floating=False)
        if values.shape != indices.shape or values.shape[0] != n_units:
            raise DamagedEntry(f"it holds scores of shape {tuple(values.shape)} for {n_units} units")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= n_concepts):
            raise DamagedEntry("it names concepts outside the concept list")
        return cls(values, indices)

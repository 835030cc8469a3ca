"""One pass over the probe images: pooled unit activations, each unit's top maps,
and CLIP image features.

Each probe image is decoded once; the target model and CLIP each get their own
preprocessed copy from the same batch. ``recording.record_layers`` hands every
requested layer's output, in canonical form, to a per-layer accumulator during
the same forward pass, which keeps

* the pooled activations (images × units), pooled by the run's pool mode;
* for layers with spatial maps, each unit's maps on its ``top_maps`` most
  activating images (a running top-k, float16), so that unit views and bundles
  never run the model again;
* a fixed-size seeded sample of spatial values per unit, from which each unit's
  top-0.5 % activation level (the Network-Dissection mask threshold) is estimated
  (exact when the probe set has fewer positions than the sample).

Memory stays flat as the probe set grows: beyond the N × units pooled matrix,
only the running top-k maps and the bounded samples are kept.

Images are ranked by activation, highest first, ties broken by probe index
(lowest first); :func:`top_rows` is that order, and the running top-k keeps it,
so the stored maps are those of the first images of ``top_images.csv``.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Mapping, Optional

import numpy as np
import torch

from .clip import ClipModel, encode_images
from .errors import InvalidInputError
from .models import TargetModel
from .probe_data import ProbeSet, probe_loader
from .progress import ProgressFn, report
from .recording import Layout, POOL_MODES, pool, record_layers

# Fraction of spatial positions above a unit's mask threshold (NetDissect's QUANTILE).
MASK_QUANTILE = 0.005
# Spatial samples kept per unit to estimate that threshold: 512 units cost 40 MB.
THRESHOLD_SAMPLES = 20_000
# Maps kept per unit by default: as many as the Unit explorer shows at first.
DEFAULT_TOP_MAPS = 10
_FLOAT16_MAX = float(np.finfo(np.float16).max)


def top_rows(pooled: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, rows), each k × units: the k highest rows per unit, ties by lower row."""
    k = min(k, pooled.shape[0])
    values, rows = torch.sort(pooled, dim=0, descending=True, stable=True)
    return values[:k], rows[:k]


@dataclass
class LayerActivations:
    """One layer's record over the readable probe images."""

    pooled: torch.Tensor  # (images, units), float32
    image_indices: torch.Tensor  # (images,): probe index of each row
    mask_threshold: Optional[torch.Tensor] = None  # (units,), None without spatial maps
    maps: Optional[torch.Tensor] = None  # (units, k, height, width) float16, None without spatial maps
    map_images: Optional[torch.Tensor] = None  # (units, k): probe index of each map, most activating first
    layout: str = "channels_first"

    def top_images(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(values, probe indices), each units × k, most activating first."""
        values, rows = top_rows(self.pooled, k)
        return values.T.contiguous(), self.image_indices[rows].T.contiguous()

    def to_payload(self) -> dict:
        """The cache entry (tensors and strings only: the cache loads with ``weights_only``)."""
        return {"pooled": self.pooled, "image_indices": self.image_indices, "mask_threshold": self.mask_threshold,
                "maps": self.maps, "map_images": self.map_images, "layout": self.layout}

    @classmethod
    def from_payload(cls, payload: Mapping) -> "LayerActivations":
        return cls(payload["pooled"], payload["image_indices"], payload.get("mask_threshold"),
                   payload.get("maps"), payload.get("map_images"), payload.get("layout", "channels_first"))


@dataclass
class ProbePass:
    layers: dict[str, LayerActivations] = field(default_factory=dict)
    clip_image_features: Optional[torch.Tensor] = None  # (images, d), unnormalised
    image_indices: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    skipped: list[int] = field(default_factory=list)
    seconds: float = 0.0


class _LayerAccumulator:
    """Consumes one layer's canonical outputs batch by batch (see the module docstring)."""

    def __init__(self, layout: Layout, pool_mode: str, n_images: int, top_maps: int, generator: torch.Generator):
        self.layout = layout
        self.pool_mode = pool_mode
        self.n_images = n_images
        self.top_maps = top_maps
        self.generator = generator
        self.pooled: list[torch.Tensor] = []
        self.samples: list[torch.Tensor] = []
        self.rows_seen = 0
        self.top_values: Optional[torch.Tensor] = None  # (units, k') float32, best first
        self.top_rows: Optional[torch.Tensor] = None  # (units, k') pass rows of the maps
        self.maps: Optional[torch.Tensor] = None  # (units, k', h, w) float16

    def __call__(self, output: torch.Tensor) -> None:
        pooled = pool(output, self.layout, self.pool_mode).float()
        if self.layout.spatial:
            self._sample(output)
            if self.top_maps:
                self._keep_top_maps(output, pooled)
        self.pooled.append(pooled.cpu())
        self.rows_seen += output.shape[0]

    def _sample(self, output: torch.Tensor) -> None:
        """A share of the batch's spatial positions (all units at each), for the mask threshold."""
        batch, units, height, width = output.shape
        positions = batch * height * width
        wanted = math.ceil(THRESHOLD_SAMPLES * batch / max(self.n_images, 1))
        if wanted < positions:
            picks = torch.randperm(positions, generator=self.generator)[:wanted].to(output.device)
            b, rest = picks // (height * width), picks % (height * width)
            values = output[b, :, rest // width, rest % width].T  # (units, wanted)
        else:
            values = output.permute(1, 0, 2, 3).reshape(units, -1)
        self.samples.append(values.float().cpu())

    def _keep_top_maps(self, output: torch.Tensor, pooled: torch.Tensor) -> None:
        """Merge this batch into each unit's running top-k maps, keeping ``top_rows``' order.

        Kept rows come from earlier batches, so they have lower rows than this batch's:
        a stable sort of [kept, batch] breaks ties by lower row, as ``top_rows`` does.
        """
        units = output.shape[1]
        batch_values = pooled.T.cpu()  # (units, batch)
        batch_rows = torch.arange(self.rows_seen, self.rows_seen + output.shape[0]).expand(units, -1)
        kept = 0 if self.top_values is None else self.top_values.shape[1]
        values = batch_values if kept == 0 else torch.cat([self.top_values, batch_values], dim=1)
        rows = batch_rows if kept == 0 else torch.cat([self.top_rows, batch_rows], dim=1)
        order = torch.sort(values, dim=1, descending=True, stable=True).indices[:, :self.top_maps]
        maps = torch.empty((units, order.shape[1], *output.shape[2:]), dtype=torch.float16)
        unit_of = torch.arange(units)[:, None].expand_as(order)
        from_kept = order < kept
        if kept:
            maps[from_kept] = self.maps[unit_of[from_kept], order[from_kept]]
        new = ~from_kept
        picked = output[(order[new] - kept).to(output.device), unit_of[new].to(output.device)]
        # Clip so that an extreme activation saturates instead of becoming inf in float16.
        maps[new] = picked.float().clamp(-_FLOAT16_MAX, _FLOAT16_MAX).cpu().half()
        self.top_values = values.gather(1, order)
        self.top_rows = rows.gather(1, order)
        self.maps = maps

    def result(self, image_indices: torch.Tensor) -> LayerActivations:
        pooled = torch.cat(self.pooled) if self.pooled else torch.zeros(0, 0)
        threshold = None
        if self.samples:
            values = torch.cat(self.samples, dim=1)
            rank = max(1, math.ceil((1 - MASK_QUANTILE) * values.shape[1]))
            threshold = values.kthvalue(rank, dim=1).values
        map_images = None if self.top_rows is None else image_indices[self.top_rows]
        return LayerActivations(pooled, image_indices, threshold, self.maps, map_images, self.layout.name)


def record_probe_pass(
    probe: ProbeSet,
    *,
    target: Optional[TargetModel] = None,
    layouts: Mapping[str, Layout] = {},
    clip: Optional[ClipModel] = None,
    pool_mode: str = "avg",
    top_maps: int = DEFAULT_TOP_MAPS,
    batch_size: int = 200,
    device: torch.device = torch.device("cpu"),
    num_workers: Optional[int] = None,
    progress: Optional[ProgressFn] = None,
) -> ProbePass:
    """Run the probe images once through the target model and CLIP.

    ``layouts`` maps each layer to record to its layout (``recording.resolve_layouts``);
    ``top_maps`` maps are kept per unit of layers with spatial maps (0: none).
    """
    POOL_MODES.get(pool_mode)
    if top_maps < 0:
        raise InvalidInputError(f"top_maps must be 0 or more, not {top_maps}.")
    if target is None and clip is None:
        return ProbePass()
    transforms = {}
    generator = torch.Generator().manual_seed(0)
    accumulators = {}
    if target is not None and layouts:
        transforms["target"] = target.preprocess
        accumulators = {layer: _LayerAccumulator(layout, pool_mode, len(probe), top_maps, generator)
                        for layer, layout in layouts.items()}
    if clip is not None:
        transforms["clip"] = clip.preprocess

    start = time.perf_counter()
    kept: list[torch.Tensor] = []
    skipped: list[int] = []
    clip_features: list[torch.Tensor] = []
    stage = "probe images" + (f" → {target.name}" if accumulators else "") + (" + CLIP" if clip else "")
    done = 0
    report(progress, stage, 0, len(probe))
    with _recording(target, accumulators, device) as model, torch.inference_mode():
        for batch in probe_loader(probe, transforms, batch_size, num_workers, device):
            skipped.extend(batch.skipped)
            done += len(batch.indices) + len(batch.skipped)
            if len(batch.indices):
                kept.append(batch.indices)
                if model is not None:
                    model(batch.tensors["target"].to(device, non_blocking=True))
                if clip is not None:
                    clip_features.append(encode_images(clip, batch.tensors["clip"]))
            report(progress, stage, done, len(probe))

    image_indices = torch.cat(kept) if kept else torch.zeros(0, dtype=torch.long)
    if len(image_indices) == 0:
        raise InvalidInputError(
            f"None of the {len(probe)} images of probe set {probe.name!r} could be read. "
            "Check that the files are images (JPEG, PNG, …) and not damaged."
        )
    return ProbePass(
        layers={name: acc.result(image_indices) for name, acc in accumulators.items()},
        clip_image_features=torch.cat(clip_features) if clip_features else None,
        image_indices=image_indices,
        skipped=sorted(skipped),
        seconds=time.perf_counter() - start,
    )


def _recording(target: Optional[TargetModel], accumulators: dict, device: torch.device):
    """``record_layers`` feeding ``accumulators``, or a no-op yielding None without layers."""
    if target is None or not accumulators:
        return contextlib.nullcontext(None)
    layouts = {layer: acc.layout for layer, acc in accumulators.items()}
    return record_layers(target.module, layouts, lambda layer, output, layout: accumulators[layer](output), device)

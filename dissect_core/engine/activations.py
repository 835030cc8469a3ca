"""One pass over the probe images: pooled unit activations, each unit's top maps,
and CLIP image features.

Each probe image is decoded once; the target model and CLIP each get their own
preprocessed copy from the same batch. ``recording.record_layers`` hands every
requested layer's output, in canonical form, to a per-layer accumulator during
the same forward pass, which keeps

* the pooled activations (images × units), pooled by the run's pool mode;
* for layers with spatial maps (``recording.spatial_maps``: convolutional maps,
  a ViT layer's patch tokens on their grid), each unit's maps on its ``top_maps`` most
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
from typing import Callable, ClassVar, Mapping, Optional, Sequence

import numpy as np
import torch

from dissect_core.engine.cache import DamagedEntry, index_list, rows_with_indices, tensor_field
from dissect_core.choices.catalog import DECODERS, POOL_MODES
from dissect_core.engine.clip import ClipModel, encode_images
from dissect_core.choices.config import DEFAULT_TOP_MAPS
from dissect_core.common.errors import InvalidInputError
from dissect_core.choices.layouts import Layout
from dissect_core.engine.models import TargetModel
from dissect_core.engine.probe_sets import ProbeSet
from dissect_core.common.progress import ProgressFn, report
from dissect_core.engine.recording import pool, record_layers, spatial_maps

# Fraction of spatial positions above a unit's mask threshold (NetDissect's QUANTILE).
MASK_QUANTILE = 0.005
# Spatial samples kept per unit to estimate that threshold: 512 units cost 40 MB.
THRESHOLD_SAMPLES = 20_000
_FLOAT16_MAX = float(np.finfo(np.float16).max)


def top_rows(pooled: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, rows), each k × units: the k highest rows per unit, ties by lower row."""
    k = min(k, pooled.shape[0])
    values, rows = torch.sort(pooled, dim=0, descending=True, stable=True)
    return values[:k], rows[:k]


@dataclass
class LayerActivations:
    """One layer's record over the readable probe images."""

    KIND: ClassVar[str] = "activations"  # its folder in the cache (cache.CacheEntry)

    pooled: torch.Tensor  # (images, units), float32
    image_indices: torch.Tensor  # (images,): probe index of each row
    mask_threshold: Optional[torch.Tensor] = None  # (units,), None without spatial maps
    maps: Optional[torch.Tensor] = None  # (units, k, height, width) float16, None without spatial maps
    map_images: Optional[torch.Tensor] = None  # (units, k): probe index of each map, most activating first
    layout: str = "channels_first"
    skipped: list[int] = field(default_factory=list)  # probe indices that could not be read

    def top_images(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(values, probe indices), each units × k, most activating first."""
        values, rows = top_rows(self.pooled, k)
        return values.T.contiguous(), self.image_indices[rows].T.contiguous()

    def to_payload(self) -> dict:
        return {"pooled": self.pooled, "image_indices": self.image_indices, "mask_threshold": self.mask_threshold,
                "maps": self.maps, "map_images": self.map_images, "layout": self.layout, "skipped": self.skipped}

    @classmethod
    def from_payload(cls, payload: Mapping) -> "LayerActivations":
        pooled, indices = rows_with_indices(payload, "pooled")
        threshold = payload.get("mask_threshold")
        if threshold is not None and (not isinstance(threshold, torch.Tensor)
                                      or tuple(threshold.shape) != (pooled.shape[1],)):
            raise DamagedEntry("its mask thresholds do not match its units")
        maps = map_images = None
        if payload.get("maps") is not None:
            maps = tensor_field(payload, "maps", 4, floating=True)
            map_images = tensor_field(payload, "map_images", 2, floating=False)
            if maps.shape[0] != pooled.shape[1] or tuple(map_images.shape) != tuple(maps.shape[:2]):
                raise DamagedEntry(f"its maps {tuple(maps.shape)} do not match its units or their images")
        layout = payload.get("layout", "channels_first")
        if not isinstance(layout, str):
            raise DamagedEntry("its layout is not a name")
        return cls(pooled, indices, threshold, maps, map_images, layout, index_list(payload, "skipped"))


@dataclass(frozen=True)
class TargetLayers:
    """A target model and the layers to record from it, each with its layout
    (``recording.resolve_layouts``)."""

    model: TargetModel
    layouts: Mapping[str, Layout]


@dataclass
class ProbePass:
    layers: list[dict[str, LayerActivations]] = field(default_factory=list)  # per target, in order
    clip_image_features: Optional[torch.Tensor] = None  # (images, d), unnormalised
    image_indices: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    skipped: list[int] = field(default_factory=list)
    seconds: float = 0.0


class _LayerAccumulator:
    """Consumes one layer's canonical outputs batch by batch (see the module docstring).

    Everything it keeps stays on the outputs' device until :meth:`result`: copying to
    the CPU batch by batch would make the host wait for the GPU after every batch.
    """

    def __init__(self, layout: Layout, pool_mode: str, n_images: int, top_maps: int):
        self.layout = layout
        self.pool_mode = pool_mode
        self.n_images = n_images
        self.top_maps = top_maps
        # Its own seeded sampler: a layer's threshold does not depend on what else is recorded.
        self.generator = torch.Generator().manual_seed(0)
        self.pooled: list[torch.Tensor] = []
        self.samples: list[torch.Tensor] = []
        self.rows_seen = 0
        self.top_values: Optional[torch.Tensor] = None  # (units, k') float32, best first
        self.top_rows: Optional[torch.Tensor] = None  # (units, k') pass rows of the maps
        self.maps: Optional[torch.Tensor] = None  # (units, k', h, w) float32

    def __call__(self, output: torch.Tensor) -> None:
        pooled = pool(output, self.layout, self.pool_mode).float()
        maps = spatial_maps(output, self.layout)
        if maps is not None:
            self._sample(maps)
            if self.top_maps:
                self._keep_top_maps(maps, pooled)
        self.pooled.append(pooled)
        self.rows_seen += output.shape[0]

    def _sample(self, maps: torch.Tensor) -> None:
        """A share of the batch's spatial positions (all units at each), for the mask threshold."""
        batch, units, height, width = maps.shape
        positions = batch * height * width
        wanted = math.ceil(THRESHOLD_SAMPLES * batch / max(self.n_images, 1))
        if wanted < positions:
            picks = torch.randperm(positions, generator=self.generator)[:wanted].to(maps.device)
            b, rest = picks // (height * width), picks % (height * width)
            values = maps[b, :, rest // width, rest % width].T  # (units, wanted)
        else:
            values = maps.permute(1, 0, 2, 3).reshape(units, -1)
        self.samples.append(values.float())

    def _keep_top_maps(self, maps: torch.Tensor, pooled: torch.Tensor) -> None:
        """Merge this batch into each unit's running top-k maps, keeping ``top_rows``' order.

        Kept rows come from earlier batches, so they have lower rows than this batch's:
        a stable sort of [kept, batch] breaks ties by lower row, as ``top_rows`` does.
        """
        units, kept, device = maps.shape[1], self.top_maps_kept, maps.device
        batch_rows = torch.arange(self.rows_seen, self.rows_seen + maps.shape[0], device=device).expand(units, -1)
        values, rows = pooled.T, batch_rows
        if kept:
            values = torch.cat([self.top_values, values], dim=1)
            rows = torch.cat([self.top_rows, rows], dim=1)
        order = torch.sort(values, dim=1, descending=True, stable=True).indices[:, :self.top_maps]
        unit = torch.arange(units, device=device)[:, None]
        # Gather the winners from the batch and from the kept maps, then pick per slot
        # (masks of data-dependent size would make the host wait for the device).
        winners = maps[(order - kept).clamp(min=0), unit].float()
        if kept:
            winners = torch.where((order < kept)[..., None, None], self.maps[unit, order.clamp(max=kept - 1)], winners)
        self.top_values = values.gather(1, order)
        self.top_rows = rows.gather(1, order)
        self.maps = winners

    @property
    def top_maps_kept(self) -> int:
        return 0 if self.maps is None else self.maps.shape[1]

    def result(self, image_indices: torch.Tensor, skipped: list[int]) -> LayerActivations:
        pooled = torch.cat(self.pooled).cpu() if self.pooled else torch.zeros(0, 0)
        threshold = None
        if self.samples:
            values = torch.cat(self.samples, dim=1).cpu()
            rank = max(1, math.ceil((1 - MASK_QUANTILE) * values.shape[1]))
            threshold = values.kthvalue(rank, dim=1).values
        maps = map_images = None
        if self.maps is not None:
            # Clip so that an extreme activation saturates instead of becoming inf in float16.
            maps = self.maps.clamp(-_FLOAT16_MAX, _FLOAT16_MAX).half().cpu()
            map_images = image_indices[self.top_rows.cpu()]
        return LayerActivations(pooled, image_indices, threshold, maps, map_images, self.layout.name, skipped)


def record_probe_pass(
    probe: ProbeSet,
    *,
    targets: Sequence[TargetLayers] = (),
    clip: Optional[ClipModel] = None,
    pool_mode: str = "avg",
    top_maps: int = DEFAULT_TOP_MAPS,
    batch_size: int = 200,
    device: torch.device = torch.device("cpu"),
    num_workers: Optional[int] = None,
    decoder: str = "pil",
    progress: Optional[ProgressFn] = None,
) -> ProbePass:
    """Run the probe images once through every target model and CLIP.

    Each image is decoded once; each distinct preprocessing (targets trained with the
    same transforms share one) is applied once, by the registered ``decoder``
    (``catalog.DECODERS``). ``top_maps`` maps are kept per unit of layers with spatial
    maps (0: none). ``layers`` of the result follows ``targets``.
    """
    POOL_MODES.get(pool_mode)
    loader = DECODERS.get(decoder).value
    if top_maps < 0:
        raise InvalidInputError(f"top_maps must be 0 or more, not {top_maps}.")
    accumulators = [{layer: _LayerAccumulator(layout, pool_mode, len(probe), top_maps)
                     for layer, layout in target.layouts.items()} for target in targets]
    recorded = [target for target in targets if target.layouts]  # a model with nothing to record is not run
    if not recorded and clip is None:
        return ProbePass(layers=[{} for _ in targets])
    transforms, input_of = _shared_transforms([target.model.preprocess for target in recorded])
    if clip is not None:
        transforms["clip"] = clip.preprocess

    start = time.perf_counter()
    kept: list[torch.Tensor] = []
    skipped: list[int] = []
    clip_features: list[torch.Tensor] = []
    names = " + ".join([target.model.name for target in recorded] + (["CLIP"] if clip else []))
    stage = f"probe images → {names}"
    done = 0
    report(progress, stage, 0, len(probe))
    with contextlib.ExitStack() as stack, torch.inference_mode():
        models = [stack.enter_context(_recording(target, layers, device))
                  for target, layers in zip(targets, accumulators) if target.layouts]
        for batch in loader(probe, transforms, batch_size, num_workers, device):
            skipped.extend(batch.skipped)
            done += len(batch.indices) + len(batch.skipped)
            if len(batch.indices):
                kept.append(batch.indices)
                for model, source in zip(models, input_of):
                    model(batch.tensors[source].to(device, non_blocking=True))
                if clip is not None:
                    clip_features.append(encode_images(clip, batch.tensors["clip"]))
            report(progress, stage, done, len(probe))

    image_indices = torch.cat(kept) if kept else torch.zeros(0, dtype=torch.long)
    if len(image_indices) == 0:
        raise InvalidInputError(
            f"None of the {len(probe)} images of probe set {probe.name!r} could be read. "
            "Check that the files are images (JPEG, PNG, …) and not damaged."
        )
    skipped = sorted(skipped)
    return ProbePass(
        layers=[{name: acc.result(image_indices, skipped) for name, acc in layers.items()}
                for layers in accumulators],
        clip_image_features=torch.cat(clip_features).cpu() if clip_features else None,
        image_indices=image_indices,
        skipped=skipped,
        seconds=time.perf_counter() - start,
    )


def _shared_transforms(preprocesses: Sequence[Callable]) -> tuple[dict[str, Callable], list[str]]:
    """One loader transform per distinct preprocessing, and which one each target reads.

    Preprocessings are compared by their description (torchvision transforms describe
    every parameter); one that includes a function object describes it by address, so
    it is only shared with itself.
    """
    transforms: dict[str, Callable] = {}
    by_description: dict[str, str] = {}
    input_of = []
    for number, preprocess in enumerate(preprocesses):
        name = by_description.setdefault(repr(preprocess), f"target{number}")
        transforms.setdefault(name, preprocess)
        input_of.append(name)
    return transforms, input_of


def _recording(target: TargetLayers, accumulators: dict, device: torch.device):
    """``record_layers`` on the target's layers, feeding ``accumulators``."""
    return record_layers(target.model.module, target.layouts,
                         lambda layer, output, layout: accumulators[layer](output), device)

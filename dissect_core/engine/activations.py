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
* a sample of spatial values per unit, about THRESHOLD_SAMPLES in all, drawn per image
  with a generator seeded by its probe index, from which each unit's top-0.5 % activation
  level (the Network-Dissection mask threshold) is estimated (exact when the probe set
  has fewer positions than the sample).

Memory stays flat as the probe set grows: beyond the N × units pooled matrix,
only the running top-k maps and the bounded samples are kept.

Images are ranked by activation, highest first, ties broken by probe index
(lowest first); :func:`top_rows` is that order, and the running top-k keeps it,
so the stored maps are those of the first images of ``top_images.csv``.

Nothing kept depends on how the images were batched or in which order batches came:
what a :class:`ProbeRecorder` records from some batches is a :class:`PassPart`, and
parts recorded anywhere (by the workers of a Ray cluster, ``dissect_core.ray_sweep``)
merge into exactly what one pass over all the images gives.
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
from dissect_core.engine.probe_loading import ProbeBatch
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
class TopMaps:
    """Each unit's maps on its most activating images among those seen, best first:
    by activation, then by lower probe index (the order :func:`top_rows` gives over the
    whole pass, whatever order the images came in)."""

    values: torch.Tensor  # (units, k) float32
    images: torch.Tensor  # (units, k) probe indices
    maps: torch.Tensor  # (units, k, height, width) float32

    def merge(self, other: "TopMaps", k: int) -> "TopMaps":
        """The top ``k`` of both. Sorting by probe index first and then stably by
        activation puts ties in probe order, wherever the two sets came from."""
        values = torch.cat([self.values, other.values], dim=1)
        images = torch.cat([self.images, other.images], dim=1)
        by_image = torch.sort(images, dim=1, stable=True).indices
        by_value = torch.sort(values.gather(1, by_image), dim=1, descending=True, stable=True).indices[:, :k]
        picks = by_image.gather(1, by_value)
        unit = torch.arange(values.shape[0], device=values.device)[:, None]
        return TopMaps(values.gather(1, picks), images.gather(1, picks),
                       torch.cat([self.maps, other.maps], dim=1)[unit, picks])

    def to(self, device: torch.device) -> "TopMaps":
        return TopMaps(self.values.to(device), self.images.to(device), self.maps.to(device))


def _batch_top_maps(maps: torch.Tensor, pooled: torch.Tensor, images: torch.Tensor, k: int) -> TopMaps:
    """The top ``k`` maps per unit within one batch: (batch, units, h, w) maps, (batch, units) pooled."""
    order = torch.sort(pooled.T, dim=1, descending=True, stable=True).indices[:, :k]  # ties: lower row first
    unit = torch.arange(maps.shape[1], device=maps.device)[:, None]
    return TopMaps(pooled.T.gather(1, order), images.to(maps.device)[order], maps[order, unit].float())


@dataclass
class LayerPart:
    """One layer's record over some of the probe images: one batch, a worker's share, or the
    pass so far. Parts :meth:`merge` in any order into the same whole (:meth:`finish`), so a
    pass split among workers gives exactly what one pass over all the images gives."""

    rows: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # (probe indices, pooled)
    samples: list[torch.Tensor] = field(default_factory=list)  # (units, s): spatial values for the threshold
    top: Optional[TopMaps] = None

    def merge(self, other: "LayerPart", top_maps: int) -> None:
        self.rows += other.rows
        self.samples += other.samples
        if other.top is not None:
            self.top = other.top if self.top is None else self.top.merge(other.top, top_maps)

    def to(self, device: torch.device) -> "LayerPart":
        return LayerPart([(images.to(device), pooled.to(device)) for images, pooled in self.rows],
                         [sample.to(device) for sample in self.samples],
                         None if self.top is None else self.top.to(device))

    def finish(self, layout: str, skipped: list[int]) -> LayerActivations:
        """The layer's record over every image: rows in probe order, the mask threshold
        from the samples, the maps in float16."""
        images = torch.cat([images for images, _ in self.rows]).cpu()
        order = torch.argsort(images)
        pooled = torch.cat([pooled for _, pooled in self.rows]).cpu()[order]
        threshold = None
        if self.samples:
            values = torch.cat(self.samples, dim=1).cpu()
            rank = max(1, math.ceil((1 - MASK_QUANTILE) * values.shape[1]))
            threshold = values.kthvalue(rank, dim=1).values
        maps = map_images = None
        if self.top is not None:
            # Clip so that an extreme activation saturates instead of becoming inf in float16.
            maps = self.top.maps.clamp(-_FLOAT16_MAX, _FLOAT16_MAX).half().cpu()
            map_images = self.top.images.cpu()
        return LayerActivations(pooled, images[order], threshold, maps, map_images, layout, skipped)


class _LayerAccumulator:
    """Consumes one layer's canonical outputs batch by batch (see the module docstring) into
    a :class:`LayerPart`.

    Everything it keeps stays on the outputs' device until :meth:`LayerPart.finish`:
    copying to the CPU batch by batch would make the host wait for the GPU after every batch.
    """

    def __init__(self, layout: Layout, pool_mode: str, n_images: int, top_maps: int):
        self.layout = layout
        self.pool_mode = pool_mode
        self.n_images = n_images
        self.top_maps = top_maps
        self.part = LayerPart()

    def __call__(self, output: torch.Tensor, images: torch.Tensor) -> None:
        """Add a batch: its canonical output and the probe index of each of its rows."""
        pooled = pool(output, self.layout, self.pool_mode).float()
        batch = LayerPart(rows=[(images, pooled)])
        maps = spatial_maps(output, self.layout)
        if maps is not None:
            batch.samples.append(self._sample(maps, images))
            if self.top_maps:
                batch.top = _batch_top_maps(maps, pooled, images, self.top_maps)
        self.part.merge(batch, self.top_maps)

    def _sample(self, maps: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Spatial values (units × samples) at positions drawn per image, for the mask threshold.

        Each image's positions come from a generator seeded with its probe index, so the
        samples do not depend on how the images were batched or split among workers; each
        position is kept with the probability that makes THRESHOLD_SAMPLES in all.
        """
        batch, units, height, width = maps.shape
        positions = height * width
        rate = THRESHOLD_SAMPLES / (max(self.n_images, 1) * positions)
        if rate >= 1:
            return maps.permute(1, 0, 2, 3).reshape(units, -1).float()
        keep = torch.stack([torch.rand(positions, generator=torch.Generator().manual_seed(index)) < rate
                            for index in images.tolist()])
        # Picked on the host, so the gather below makes the device wait for nothing.
        rows, picks = keep.nonzero(as_tuple=True)
        return maps.flatten(2)[rows.to(maps.device), :, picks.to(maps.device)].T.float()

    def take(self) -> LayerPart:
        """What was added since the last take."""
        part, self.part = self.part, LayerPart()
        return part


@dataclass
class ProbePass:
    layers: list[dict[str, LayerActivations]] = field(default_factory=list)  # per target, in order
    clip_image_features: Optional[torch.Tensor] = None  # (images, d), unnormalised
    image_indices: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    skipped: list[int] = field(default_factory=list)
    seconds: float = 0.0
    images_decoded: int = 0  # probe images read and decoded, readable or not
    clip_batches: int = 0  # batches of images CLIP encoded


@dataclass
class PassPart:
    """What recording some probe batches gives (:meth:`ProbeRecorder.record`). Parts
    :meth:`merge` in any order into one, which :meth:`finish` turns into the pass's result."""

    layers: list[dict[str, LayerPart]]  # per target, per recorded layer
    images: list[torch.Tensor] = field(default_factory=list)  # probe indices of the readable images
    clip: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # (probe indices, features)
    skipped: list[int] = field(default_factory=list)
    images_decoded: int = 0
    clip_batches: int = 0

    def merge(self, other: "PassPart", top_maps: int) -> None:
        for mine, theirs in zip(self.layers, other.layers):
            for layer, part in theirs.items():
                mine.setdefault(layer, LayerPart()).merge(part, top_maps)
        self.images += other.images
        self.clip += other.clip
        self.skipped += other.skipped
        self.images_decoded += other.images_decoded
        self.clip_batches += other.clip_batches

    def to(self, device: torch.device) -> "PassPart":
        """A copy on ``device`` (a worker hands its parts over on the CPU)."""
        return PassPart([{layer: part.to(device) for layer, part in layers.items()} for layers in self.layers],
                        [images.to(device) for images in self.images],
                        [(images.to(device), features.to(device)) for images, features in self.clip],
                        list(self.skipped), self.images_decoded, self.clip_batches)

    def finish(self, targets: Sequence[TargetLayers], probe: ProbeSet, seconds: float) -> ProbePass:
        """The pass's result; refuses a probe set none of whose images could be read."""
        image_indices = torch.sort(torch.cat(self.images).cpu()).values if self.images else None
        if image_indices is None or len(image_indices) == 0:
            raise InvalidInputError(
                f"None of the {len(probe)} images of probe set {probe.name!r} could be read. "
                "Check that the files are images (JPEG, PNG, …) and not damaged."
            )
        skipped = sorted(self.skipped)
        clip_features = None
        if self.clip:
            rows = torch.cat([images for images, _ in self.clip]).cpu()
            clip_features = torch.cat([features for _, features in self.clip]).cpu()[torch.argsort(rows)]
        return ProbePass(
            layers=[{layer: layers[layer].finish(target.layouts[layer].name, skipped) for layer in target.layouts}
                    if target.layouts else {} for target, layers in zip(targets, self.layers)],
            clip_image_features=clip_features,
            image_indices=image_indices,
            skipped=skipped,
            seconds=seconds,
            images_decoded=self.images_decoded,
            clip_batches=self.clip_batches,
        )


class ProbeRecorder:
    """The target models, hooked on their layers, and CLIP, recording probe batches on
    ``device``: the one-machine pass has one, and so has each worker of a pass split
    among workers (``dissect_core.ray_sweep``). Use it as a context manager (the hooks
    are removed, and the models restored, on the way out)."""

    def __init__(self, targets: Sequence[TargetLayers], clip: Optional[ClipModel], pool_mode: str, top_maps: int,
                 n_images: int, device: torch.device):
        POOL_MODES.get(pool_mode)
        if top_maps < 0:
            raise InvalidInputError(f"top_maps must be 0 or more, not {top_maps}.")
        self.targets, self.clip, self.top_maps, self.device = list(targets), clip, top_maps, device
        self.accumulators = [{layer: _LayerAccumulator(layout, pool_mode, n_images, top_maps)
                              for layer, layout in target.layouts.items()} for target in targets]
        recorded = [target for target in targets if target.layouts]  # a model with nothing to record is not run
        self.transforms, self.input_of = _shared_transforms([target.model.preprocess for target in recorded])
        if clip is not None:
            self.transforms["clip"] = clip.preprocess
        self._images = torch.zeros(0, dtype=torch.long)  # probe indices of the batch being recorded
        self._stack = contextlib.ExitStack()
        self.models: list[torch.nn.Module] = []

    @property
    def names(self) -> list[str]:
        return [target.model.name for target in self.targets if target.layouts] + (["CLIP"] if self.clip else [])

    def __enter__(self) -> "ProbeRecorder":
        self.models = [self._stack.enter_context(self._recording(target, layers))
                       for target, layers in zip(self.targets, self.accumulators) if target.layouts]
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def _recording(self, target: TargetLayers, accumulators: dict):
        """``record_layers`` on the target's layers, feeding ``accumulators`` with the batch's images."""
        return record_layers(target.model.module, target.layouts,
                             lambda layer, output, layout: accumulators[layer](output, self._images), self.device)

    def empty(self) -> PassPart:
        return PassPart([{} for _ in self.targets])

    def record(self, batch: ProbeBatch) -> PassPart:
        """The batch's part; its tensors stay on the device."""
        part = self.empty()
        part.skipped = list(batch.skipped)
        part.images_decoded = len(batch.indices) + len(batch.skipped)
        if len(batch.indices):
            self._images = batch.indices
            with torch.inference_mode():
                for model, source in zip(self.models, self.input_of):
                    model(batch.tensors[source].to(self.device, non_blocking=True))
                if self.clip is not None:
                    part.clip.append((batch.indices, encode_images(self.clip, batch.tensors["clip"])))
                    part.clip_batches = 1
            part.images.append(batch.indices)
            part.layers = [{layer: accumulator.take() for layer, accumulator in layers.items()}
                           for layers in self.accumulators]
        return part


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
    loader = DECODERS.get(decoder).value
    recorder = ProbeRecorder(targets, clip, pool_mode, top_maps, len(probe), device)
    if not recorder.names:
        return ProbePass(layers=[{} for _ in targets])
    start = time.perf_counter()
    stage = f"probe images → {' + '.join(recorder.names)}"
    done = 0
    report(progress, stage, 0, len(probe))
    with recorder:
        whole = recorder.empty()
        for batch in loader(probe, recorder.transforms, batch_size, num_workers, device):
            whole.merge(recorder.record(batch), top_maps)
            done += len(batch.indices) + len(batch.skipped)
            report(progress, stage, done, len(probe))
    return whole.finish(targets, probe, time.perf_counter() - start)


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


"""One pass over the probe images: pooled unit activations, and CLIP image features.

Each probe image is decoded once; the target model and CLIP each get their own
preprocessed copy from the same batch. Forward hooks record every requested
layer of the target model in the same forward pass:

* 4-D outputs (CNN feature maps) are pooled over height and width, by mean
  (``avg``) or maximum (``max``);
* 3-D outputs (transformer tokens) give the CLS token, ``output[:, 0]``;
* 2-D outputs (``fc``, logits) are kept as they are.

Memory stays flat as the probe set grows: only the pooled N×K activations are
kept, never the spatial maps. For the Network-Dissection masks in the app, each
unit's top-0.5 % spatial activation level is estimated from a fixed-size seeded
sample of spatial positions (exact when the probe set has fewer positions than
the sample).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from .clip import ClipModel, encode_images
from .errors import InvalidInputError
from .models import TargetModel, get_layer
from .probe_data import ProbeSet, probe_loader
from .progress import ProgressFn, report

POOL_MODES = ("avg", "max")
# Fraction of spatial positions above a unit's mask threshold (NetDissect's QUANTILE).
MASK_QUANTILE = 0.005
# Spatial samples kept per unit to estimate that threshold: 512 units cost 40 MB.
THRESHOLD_SAMPLES = 20_000


def pool_output(output: torch.Tensor, pool_mode: str) -> torch.Tensor:
    """Reduce a layer's output to one value per image and unit (see module docstring)."""
    if output.dim() == 4:
        return output.mean(dim=(2, 3)) if pool_mode == "avg" else output.amax(dim=(2, 3))
    if output.dim() == 3:
        return output[:, 0]
    if output.dim() == 2:
        return output
    raise InvalidInputError(
        f"A layer output of shape {tuple(output.shape)} cannot be pooled: expected "
        "(batch, units, height, width), (batch, tokens, units) or (batch, units)."
    )


@dataclass
class LayerActivations:
    """Pooled activations of one layer over the readable probe images."""

    pooled: torch.Tensor  # (images, units), float32
    image_indices: torch.Tensor  # (images,): probe index of each row
    mask_threshold: Optional[torch.Tensor] = None  # (units,), None without spatial maps

    def top_images(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(values, probe indices), each units × k, most activating first."""
        k = min(k, self.pooled.shape[0])
        values, rows = torch.topk(self.pooled, k, dim=0)
        return values.T.contiguous(), self.image_indices[rows].T.contiguous()


@dataclass
class ProbePass:
    layers: dict[str, LayerActivations] = field(default_factory=dict)
    clip_image_features: Optional[torch.Tensor] = None  # (images, d), unnormalised
    image_indices: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    skipped: list[int] = field(default_factory=list)
    seconds: float = 0.0


class _LayerRecorder:
    """Forward hook that pools a layer's output and samples its spatial values."""

    def __init__(self, pool_mode: str, n_images: int, generator: torch.Generator):
        self.pool_mode = pool_mode
        self.n_images = n_images
        self.generator = generator
        self.pooled: list[torch.Tensor] = []
        self.samples: list[torch.Tensor] = []

    def __call__(self, module, inputs, output) -> None:
        if isinstance(output, (tuple, list)):
            output = output[0]
        output = output.detach()
        self.pooled.append(pool_output(output, self.pool_mode).float().cpu())
        if output.dim() == 4:
            batch, units, height, width = output.shape
            flat = output.permute(1, 0, 2, 3).reshape(units, -1)
            wanted = math.ceil(THRESHOLD_SAMPLES * batch / max(self.n_images, 1))
            if wanted < flat.shape[1]:
                picks = torch.randperm(flat.shape[1], generator=self.generator)[:wanted]
                flat = flat[:, picks.to(flat.device)]
            self.samples.append(flat.float().cpu())

    def result(self, image_indices: torch.Tensor) -> LayerActivations:
        pooled = torch.cat(self.pooled) if self.pooled else torch.zeros(0, 0)
        threshold = None
        if self.samples:
            values = torch.cat(self.samples, dim=1)
            rank = max(1, math.ceil((1 - MASK_QUANTILE) * values.shape[1]))
            threshold = values.kthvalue(rank, dim=1).values
        return LayerActivations(pooled, image_indices, threshold)


def record_probe_pass(
    probe: ProbeSet,
    *,
    target: Optional[TargetModel] = None,
    layers: Sequence[str] = (),
    clip: Optional[ClipModel] = None,
    pool_mode: str = "avg",
    batch_size: int = 200,
    device: torch.device = torch.device("cpu"),
    num_workers: Optional[int] = None,
    progress: Optional[ProgressFn] = None,
) -> ProbePass:
    """Run the probe images once through the target model (recording ``layers``) and CLIP."""
    if pool_mode not in POOL_MODES:
        raise InvalidInputError(f"pool_mode {pool_mode!r} is not one of {', '.join(POOL_MODES)}.")
    if target is None and clip is None:
        return ProbePass()
    transforms = {}
    recorders: dict[str, _LayerRecorder] = {}
    handles = []
    generator = torch.Generator().manual_seed(0)
    if target is not None and layers:
        transforms["target"] = target.preprocess
        target.module.to(device).eval()
        for layer in layers:
            recorders[layer] = _LayerRecorder(pool_mode, len(probe), generator)
            handles.append(get_layer(target.module, layer).register_forward_hook(recorders[layer]))
    if clip is not None:
        transforms["clip"] = clip.preprocess

    start = time.perf_counter()
    kept: list[torch.Tensor] = []
    skipped: list[int] = []
    clip_features: list[torch.Tensor] = []
    stage = "probe images" + (f" → {target.name}" if recorders else "") + (" + CLIP" if clip else "")
    done = 0
    report(progress, stage, 0, len(probe))
    try:
        with torch.inference_mode():
            for batch in probe_loader(probe, transforms, batch_size, num_workers, device):
                skipped.extend(batch.skipped)
                done += len(batch.indices) + len(batch.skipped)
                if len(batch.indices):
                    kept.append(batch.indices)
                    if recorders:
                        target.module(batch.tensors["target"].to(device, non_blocking=True))
                    if clip is not None:
                        clip_features.append(encode_images(clip, batch.tensors["clip"]))
                report(progress, stage, done, len(probe))
    finally:
        for handle in handles:
            handle.remove()
        if target is not None:
            target.module.to("cpu")

    image_indices = torch.cat(kept) if kept else torch.zeros(0, dtype=torch.long)
    if len(image_indices) == 0:
        raise InvalidInputError(
            f"None of the {len(probe)} images of probe set {probe.name!r} could be read. "
            "Check that the files are images (JPEG, PNG, …) and not damaged."
        )
    return ProbePass(
        layers={name: rec.result(image_indices) for name, rec in recorders.items()},
        clip_image_features=torch.cat(clip_features) if clip_features else None,
        image_indices=image_indices,
        skipped=sorted(skipped),
        seconds=time.perf_counter() - start,
    )


def layer_output(
    target: TargetModel, layer: str, batch: torch.Tensor, device: torch.device = torch.device("cpu")
) -> torch.Tensor:
    """The layer's full, unpooled output for a batch of preprocessed images.

    For convolutional layers this is (images, units, height, width): the maps that
    heatmaps draw over the images.
    """
    captured: list[torch.Tensor] = []
    module = get_layer(target.module, layer)
    handle = module.register_forward_hook(lambda m, i, o: captured.append(o.detach().float().cpu()))
    try:
        with torch.inference_mode():
            target.module.to(device).eval()(batch.to(device))
    finally:
        handle.remove()
        target.module.to("cpu")
    return captured[0]

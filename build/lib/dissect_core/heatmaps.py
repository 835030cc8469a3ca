"""Drawing where a unit fires: activation heatmaps and Network-Dissection masks.

The activation map of a unit lives on the target model's input crop (for
ResNets: resize to 256, centre-crop 224), so images are shown after the same
geometric steps and maps are upsampled bilinearly onto them, as NetDissect does.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

from .activations import layer_output
from .bundle import LABELS_FILE, MAPS_DIR, THUMBNAILS_DIR, VIEWS_FILE
from .errors import DissectError
from .manifest import RunSources
from .models import TargetModel, load_target_model
from .probe_data import ProbeSet, open_probe_spec
from .results import read_json_object

# Anchor colours of a perceptually ordered dark-to-bright colour map (inferno-like).
_COLOUR_ANCHORS = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float32
)


@dataclass
class UnitImage:
    """One of a unit's top probe images, ready to show."""

    probe_index: int
    label: str  # the image's path within the probe set
    activation: float  # the unit's pooled activation on this image
    image: Image.Image  # the image as the model saw it (cropped)
    heatmap: Optional[Image.Image]  # activation map blended over the image (None: no spatial map)
    mask: Optional[Image.Image]  # region above the unit's top-0.5 % threshold


def model_view(preprocess: Callable, image: Image.Image) -> Image.Image:
    """Apply only the resize and crop steps of a preprocess transform."""
    image = image.convert("RGB")
    steps = getattr(preprocess, "transforms", None)
    if steps is None:
        # torchvision weight transforms (ImageClassification) keep their sizes as attributes.
        resize = getattr(preprocess, "resize_size", None)
        crop = getattr(preprocess, "crop_size", None)
        steps = []
        if resize is not None:
            steps.append(T.Resize(resize, interpolation=preprocess.interpolation))
        if crop is not None:
            steps.append(T.CenterCrop(crop))
    for step in steps:
        if isinstance(step, (T.Resize, T.CenterCrop)):
            image = step(image)
    return image


def upsample(act_map: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of an (h, w) map to (height, width)."""
    resized = F.interpolate(act_map[None, None].float(), size=size, mode="bilinear", align_corners=False)
    return resized[0, 0].numpy()


def colourise(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB uint8 colours."""
    positions = np.clip(values, 0, 1) * (len(_COLOUR_ANCHORS) - 1)
    low = np.floor(positions).astype(int).clip(0, len(_COLOUR_ANCHORS) - 2)
    frac = (positions - low)[..., None]
    colours = _COLOUR_ANCHORS[low] * (1 - frac) + _COLOUR_ANCHORS[low + 1] * frac
    return colours.astype(np.uint8)


def heatmap_overlay(image: Image.Image, act_map: torch.Tensor, vmax: float, alpha: float = 0.5) -> Image.Image:
    """Blend the unit's map (scaled by ``vmax``, shared across a unit's images) over the image."""
    values = upsample(act_map, (image.height, image.width)) / max(vmax, 1e-12)
    blended = (1 - alpha) * np.asarray(image, dtype=np.float32) + alpha * colourise(values)
    return Image.fromarray(blended.clip(0, 255).astype(np.uint8))


def mask_overlay(image: Image.Image, act_map: torch.Tensor, threshold: float) -> Image.Image:
    """The Network-Dissection view: the region above ``threshold`` in full, the rest dimmed."""
    inside = upsample(act_map, (image.height, image.width)) >= threshold
    pixels = np.asarray(image, dtype=np.float32)
    dimmed = pixels * 0.25 + np.array([0, 0, 40], dtype=np.float32)
    return Image.fromarray(np.where(inside[..., None], pixels, dimmed).astype(np.uint8))


def unit_images(
    target: TargetModel,
    probe: ProbeSet,
    layer: str,
    unit: int,
    probe_indices: Sequence[int],
    activations: Sequence[float],
    mask_threshold: Optional[float],
    device: torch.device = torch.device("cpu"),
) -> list[UnitImage]:
    """Heatmaps (and masks, when a threshold is known) of one unit over the given images.

    Layers without spatial maps (``fc``, transformer tokens) get the images alone.
    """
    originals = [probe.load_image(int(i)) for i in probe_indices]
    if not originals:
        return []
    batch = torch.stack([target.preprocess(img) for img in originals])
    output = layer_output(target, layer, batch, device)
    maps = output[:, unit] if output.dim() == 4 else [None] * len(originals)
    vmax = float(output[:, unit].max()) if output.dim() == 4 else 1.0
    shown = []
    for index, activation, original, act_map in zip(probe_indices, activations, originals, maps):
        view = model_view(target.preprocess, original)
        if act_map is None:
            shown.append(UnitImage(int(index), probe.item_label(int(index)), float(activation), view, None, None))
            continue
        shown.append(
            UnitImage(
                probe_index=int(index),
                label=probe.item_label(int(index)),
                activation=float(activation),
                image=view,
                heatmap=heatmap_overlay(view, act_map, vmax),
                mask=None if mask_threshold is None else mask_overlay(view, act_map, mask_threshold),
            )
        )
    return shown


def stored_unit_images(
    run_dir: Path,
    layer: str,
    unit: int,
    count: int,
    probe_indices: Sequence[int],
    activations: Sequence[float],
    mask_threshold: Optional[float],
) -> Optional[list[UnitImage]]:
    """The views of ``unit_images``, drawn from a bundled run's thumbnails and stored maps.

    For runs imported from a results bundle (``dissect_core.bundle``), on a machine
    without the probe images or the model. Returns None when ``run_dir`` holds no
    thumbnails, and images without heatmaps or masks for layers without stored maps.
    ``probe_indices`` are the unit's top images in rank order from rank 0, as
    ``Run.unit_top_images`` gives them: an image's position there is its row in the
    stored maps. Only the top images the bundle kept are shown (its images per unit).
    """
    run_dir = Path(run_dir)
    thumbnails = run_dir / THUMBNAILS_DIR
    if not thumbnails.is_dir():
        return None
    labels = read_json_object(thumbnails / LABELS_FILE)
    kept = read_json_object(thumbnails / VIEWS_FILE).get("images_per_unit")
    position = {int(index): p for p, index in enumerate(list(probe_indices)[:kept])}
    picked = [(int(i), float(a)) for i, a in list(zip(probe_indices, activations))[:count]
              if int(i) in position and (thumbnails / f"{int(i)}.jpg").is_file()]
    images = []
    for index, _ in picked:
        with Image.open(thumbnails / f"{index}.jpg") as thumbnail:
            images.append(thumbnail.convert("RGB"))
    maps: list[Optional[torch.Tensor]] = [None] * len(picked)
    path = run_dir / MAPS_DIR / f"{layer}.npy"
    if path.is_file():
        stored = np.load(path, mmap_mode="r")  # reads only the rows used
        maps = [torch.from_numpy(np.asarray(stored[unit, position[index]], dtype=np.float32))
                if unit < stored.shape[0] and position[index] < stored.shape[1] else None
                for index, _ in picked]
    vmax = max((float(m.max()) for m in maps if m is not None), default=1.0)
    shown = []
    for (index, activation), image, act_map in zip(picked, images, maps):
        shown.append(UnitImage(
            probe_index=index,
            label=labels.get(str(index), str(index)),
            activation=activation,
            image=image,
            heatmap=None if act_map is None else heatmap_overlay(image, act_map, vmax),
            mask=None if act_map is None or mask_threshold is None else mask_overlay(image, act_map, mask_threshold),
        ))
    return shown


def probe_for_run(sources: Optional[RunSources]) -> ProbeSet:
    """Reopen a run's probe set (``Run.sources``), checking it still holds the same images.

    Raises ``DissectError`` saying why the images can't be shown: a run imported
    from the reference tool records no probe set, or the folder moved or changed.
    """
    if sources is None:
        raise DissectError(
            "This run was imported from a CSV, which records the labels only: the reference "
            "tool saves neither the probe images nor which of them activate each unit."
        )
    return open_probe_spec(sources.probe_spec, expected_fingerprint=sources.probe_fingerprint)


def target_for_run(sources: RunSources) -> TargetModel:
    """Reload the target model of a run, refusing weights that differ from the run's."""
    try:
        target = load_target_model(sources.target_model, sources.target_checkpoint, weights_dir=sources.data_dir)
    except DissectError:
        raise
    except Exception as exc:  # a model given as an object to the library cannot be reloaded by name
        raise DissectError(f"The model {sources.target_model!r} cannot be reloaded by name: {exc}") from exc
    if target.weights_id != sources.target_weights_sha256:
        raise DissectError(
            f"The weights of {target.name} on this machine differ from the ones the run used, so "
            "activation maps would not match the labels."
        )
    return target

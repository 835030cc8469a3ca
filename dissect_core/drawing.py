"""Drawing where a unit fires: the colour map, heatmap overlays and Network-Dissection masks.

A unit's activation map lives on the target model's input crop (for ResNets:
resize to 256, centre-crop 224), so images are shown after the same geometric
steps (:func:`view_steps`, :func:`apply_view`) and maps are upsampled bilinearly
onto them, as NetDissect does. Pure image functions: no model, no probe set, and
no torch for drawing (a hosted app draws bundled runs without it): torchvision is
imported only by the functions that read or apply a preprocess transform.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
from PIL import Image

# Anchor colours of a perceptually ordered dark-to-bright colour map (inferno-like).
_COLOUR_ANCHORS = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float32
)


def view_steps(preprocess: Callable) -> list[dict[str, Any]]:
    """The resize and crop steps of a preprocess transform, as JSON-ready records.

    Stored with a run's maps, they let its images be shown as the model saw them
    without loading the model.
    """
    from torchvision import transforms as T

    steps = getattr(preprocess, "transforms", None)
    if steps is None:
        # torchvision weight transforms (ImageClassification) keep their sizes as attributes.
        records = []
        resize = getattr(preprocess, "resize_size", None)
        crop = getattr(preprocess, "crop_size", None)
        if resize is not None:
            records.append({"resize": list(resize), "interpolation": preprocess.interpolation.value,
                            "max_size": None, "antialias": getattr(preprocess, "antialias", True)})
        if crop is not None:
            records.append({"center_crop": list(crop)})
        return records
    records = []
    for step in steps:
        if isinstance(step, T.Resize):
            size = step.size if isinstance(step.size, int) else list(step.size)
            records.append({"resize": size, "interpolation": step.interpolation.value,
                            "max_size": step.max_size, "antialias": step.antialias})
        elif isinstance(step, T.CenterCrop):
            records.append({"center_crop": list(step.size)})
    return records


def apply_view(steps: list[dict[str, Any]], image: Image.Image) -> Image.Image:
    """``image`` in RGB after the resize and crop ``steps`` of :func:`view_steps`."""
    from torchvision import transforms as T

    image = image.convert("RGB")
    for step in steps:
        if "resize" in step:
            size = step["resize"]
            image = T.Resize(size if isinstance(size, int) else list(size),
                             interpolation=T.InterpolationMode(step.get("interpolation", "bilinear")),
                             max_size=step.get("max_size"), antialias=step.get("antialias", True))(image)
        elif "center_crop" in step:
            image = T.CenterCrop(list(step["center_crop"]))(image)
    return image


def model_view(preprocess: Callable, image: Image.Image) -> Image.Image:
    """Apply only the resize and crop steps of a preprocess transform."""
    return apply_view(view_steps(preprocess), image)


def upsample(act_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of an (h, w) map (array or CPU tensor) to (height, width).

    Pillow's bilinear filter on a float image maps pixel centres like
    ``torch.nn.functional.interpolate(..., align_corners=False)`` when enlarging.
    """
    values = Image.fromarray(np.asarray(act_map, dtype=np.float32), mode="F")
    return np.asarray(values.resize((size[1], size[0]), Image.Resampling.BILINEAR), dtype=np.float32)


def _colour_table(levels: int = 256) -> np.ndarray:
    """The colour map at ``levels`` evenly spaced values, interpolated between the anchors."""
    positions = np.linspace(0, 1, levels) * (len(_COLOUR_ANCHORS) - 1)
    low = np.floor(positions).astype(int).clip(0, len(_COLOUR_ANCHORS) - 2)
    frac = (positions - low)[:, None]
    return (_COLOUR_ANCHORS[low] * (1 - frac) + _COLOUR_ANCHORS[low + 1] * frac).astype(np.uint8)


# Looked up rather than interpolated per pixel: the output is uint8 colours anyway.
_COLOUR_TABLE = _colour_table()


def colourise(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB uint8 colours."""
    levels = len(_COLOUR_TABLE) - 1
    return _COLOUR_TABLE[(np.clip(values, 0, 1) * levels + 0.5).astype(np.intp)]


def unit_overlays(image: Image.Image, act_map: np.ndarray, vmax: float,
                  threshold: Optional[float]) -> tuple[Image.Image, Optional[Image.Image]]:
    """The unit's map (scaled by ``vmax``, shared across a unit's images) blended over the
    image, and the Network-Dissection mask view (the region at or above ``threshold`` in
    full, the rest dimmed; None without a threshold), upsampling once."""
    values = upsample(act_map, (image.height, image.width))
    mask = None if threshold is None else _dim_outside(image, values >= threshold)
    return _blend(image, values, vmax, 0.5), mask


def _blend(image: Image.Image, values: np.ndarray, vmax: float, alpha: float) -> Image.Image:
    blended = (1 - alpha) * np.asarray(image, dtype=np.float32) + alpha * colourise(values / max(vmax, 1e-12))
    return Image.fromarray(blended.clip(0, 255).astype(np.uint8))


def _dim_outside(image: Image.Image, inside: np.ndarray) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32)
    dimmed = pixels * 0.25 + np.array([0, 0, 40], dtype=np.float32)
    return Image.fromarray(np.where(inside[..., None], pixels, dimmed).astype(np.uint8))

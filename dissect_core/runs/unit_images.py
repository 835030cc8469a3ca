"""A unit's top probe images with its activation maps, drawn from what a run stored.

The probe pass keeps each unit's maps on its most activating images, and the
pipeline stores them in the run folder, so views are drawn without the model:

    maps/maps.json      {"format": "dissect_core-maps/1", "images_per_unit": k,
                         "view": the model's resize and crop steps (engine.unit_views.view_steps)}
    maps/<layer>.npy    float16 (units, k, height, width): row ``u`` holds unit ``u``'s maps
                        on its first k images of top_images.csv, in rank order (NaN where
                        none was kept); layers without spatial maps (recording.spatial_maps)
                        have no file

A results bundle (``dissect_core.runs.bundle_format``) carries the same ``maps/<layer>.npy``
beside ``thumbnails/`` of the images, for machines without the probe set.

Drawing: the colour map, heatmap overlays and Network-Dissection masks. A unit's map lives
on the target model's input crop (for ResNets: resize to 256, centre-crop 224), so images are
shown after the same geometric steps (:func:`apply_view`) and maps are upsampled bilinearly
onto them, as NetDissect does. numpy and Pillow only: a hosted app draws bundled runs without
torch. Runs without stored maps are drawn live by ``dissect_core.engine.unit_views``.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Protocol, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from dissect_core.common.files import atomic_write_bytes, atomic_write_text
from dissect_core.runs.run_folders import LABELS_FILE, MAPS_DIR, VIEWS_FILE, read_json_object, thumbnails_dir
from dissect_core.runs.side_tables import layer_file_name

if TYPE_CHECKING:
    import torch


class ProbeImages(Protocol):
    """What drawing needs of a probe set (``engine.probe_sets.ProbeSet`` is one)."""

    def load_image(self, index: int) -> Image.Image: ...

    def item_label(self, index: int) -> str: ...


# Anchor colours of a perceptually ordered dark-to-bright colour map (inferno-like).
_COLOUR_ANCHORS = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float32
)


_PIL_FILTERS = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
                "bicubic": Image.Resampling.BICUBIC, "box": Image.Resampling.BOX,
                "hamming": Image.Resampling.HAMMING, "lanczos": Image.Resampling.LANCZOS}


def apply_view(steps: list[dict[str, Any]], image: Image.Image) -> Image.Image:
    """``image`` in RGB after the resize and crop ``steps`` the engine recorded from the model's
    preprocess (``engine.unit_views.view_steps``).

    Written with Pillow, the way torchvision's ``Resize`` and ``CenterCrop`` treat a PIL image
    (output size, rounding of the crop's corner, zero padding of a crop larger than the image),
    so that a hosted app draws images as the model saw them without torch
    (``tests/test_unit_images.py`` checks the two agree pixel for pixel).
    """
    image = image.convert("RGB")
    for step in steps:
        if "resize" in step:
            size = _resized_size(image.height, image.width, step["resize"], step.get("max_size"))
            if size != (image.height, image.width):
                image = image.resize((size[1], size[0]), _PIL_FILTERS[step.get("interpolation", "bilinear")])
        elif "center_crop" in step:
            image = _center_crop(image, step["center_crop"])
    return image


def _resized_size(height: int, width: int, size: Any, max_size: Optional[int]) -> tuple[int, int]:
    if isinstance(size, list) and len(size) == 2:
        return int(size[0]), int(size[1])
    requested = int(size[0] if isinstance(size, list) else size)  # the shorter side
    short, long = min(height, width), max(height, width)
    new_short, new_long = requested, int(requested * long / short)
    if max_size is not None and new_long > max_size:
        new_short, new_long = int(max_size * new_short / new_long), max_size
    return (new_long, new_short) if width <= height else (new_short, new_long)


def _center_crop(image: Image.Image, size: Any) -> Image.Image:
    crop_h, crop_w = (int(size[0]), int(size[-1])) if isinstance(size, list) else (int(size), int(size))
    if crop_w > image.width or crop_h > image.height:  # torchvision pads with black first
        padded = Image.new("RGB", (max(crop_w, image.width), max(crop_h, image.height)))
        padded.paste(image, ((crop_w - image.width) // 2 if crop_w > image.width else 0,
                             (crop_h - image.height) // 2 if crop_h > image.height else 0))
        image = padded
    top = int(round((image.height - crop_h) / 2.0))
    left = int(round((image.width - crop_w) / 2.0))
    return image.crop((left, top, left + crop_w, top + crop_h))


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


MAPS_FORMAT = "dissect_core-maps/1"
MAPS_INDEX = "maps.json"


@dataclass
class UnitView:
    """One of a unit's top probe images, ready to show."""

    probe_index: int
    label: str  # the image's path within the probe set
    activation: float  # the unit's pooled activation on this image
    image: Image.Image  # the image as the model saw it (cropped)
    heatmap: Optional[Image.Image]  # activation map blended over the image (None: no spatial map)
    mask: Optional[Image.Image]  # region above the unit's top-0.5 % threshold


@dataclass(frozen=True)
class StoredMaps:
    """What a run folder's ``maps/maps.json`` says."""

    images_per_unit: int
    view: list  # drawing.view_steps records


# --------------------------------------------------------------------------- writing

def write_stored_maps(
    run_dir: Path,
    layer_maps: Mapping[str, tuple["torch.Tensor", "torch.Tensor"]],
    top_images: pd.DataFrame,
    view: list,
    images_per_unit: int,
) -> None:
    """Write ``maps/`` (layout: module docstring) from the probe pass's maps.

    ``layer_maps[layer]`` is (maps (units, k, h, w), probe index of each map (units, k));
    each unit's maps are put in the rank order of ``top_images`` (the run's
    top_images.csv), matched by probe index.
    """
    folder = Path(run_dir) / MAPS_DIR
    for layer, (maps, map_images) in layer_maps.items():
        units, kept = map_images.shape
        rows = top_images[(top_images["layer"] == layer) & (top_images["rank"] < min(kept, images_per_unit))]
        wanted = np.full((units, min(kept, images_per_unit)), -1, dtype=np.int64)
        wanted[rows["unit"].to_numpy(), rows["rank"].to_numpy()] = rows["image_index"].to_numpy()
        match = wanted[:, :, None] == map_images.numpy()[:, None, :]  # (units, ranks, kept)
        found = match.any(axis=2)
        source = match.argmax(axis=2)
        ordered = maps.numpy()[np.arange(units)[:, None], source]
        ordered[~found] = np.nan
        buffer = io.BytesIO()
        np.save(buffer, ordered.astype(np.float16))
        atomic_write_bytes(layer_maps_file(run_dir, layer), buffer.getvalue())
    index = {"format": MAPS_FORMAT, "images_per_unit": images_per_unit, "view": view}
    atomic_write_text(folder / MAPS_INDEX, json.dumps(index, indent=2))


def read_stored_maps(run_dir: Path) -> Optional[StoredMaps]:
    """The run folder's maps index, or None when it stored no maps (or an unknown format)."""
    index = read_json_object(Path(run_dir) / MAPS_DIR / MAPS_INDEX)
    if index.get("format") != MAPS_FORMAT:
        return None
    kept = index.get("images_per_unit")
    view = index.get("view")
    if not isinstance(kept, int) or kept < 1 or not isinstance(view, list):
        return None
    return StoredMaps(kept, view)


def layer_maps_file(run_dir: Path, layer: str) -> Path:
    """``maps/<layer>.npy`` of a run folder; InvalidInputError for a layer name that is not
    plain (``run_tables.layer_file_name``), so no layer name picks a path elsewhere."""
    return Path(run_dir) / MAPS_DIR / layer_file_name(layer, ".npy")


def has_thumbnails(run_dir: Optional[Path]) -> bool:
    """True for a run imported from a bundle with its images (or in a sweep that shares them)."""
    return thumbnails_dir(run_dir) is not None


def stored_unit_views(
    run_dir: Path,
    layer: str,
    unit: int,
    probe_indices: Sequence[int],
    activations: Sequence[float],
    mask_threshold: Optional[float],
    probe: Optional[ProbeImages] = None,
) -> Optional[list[UnitView]]:
    """The unit's views drawn from stored maps, without the model.

    ``probe_indices`` are the unit's top images in rank order from rank 0, as
    ``Run.unit_top_images`` gives them: an image's position there is its row in the
    stored maps. Images come from a bundle's thumbnails, else from ``probe`` (the
    run's probe set). Returns None when the run has neither thumbnails nor, with
    ``probe``, stored maps. Only the top images with stored maps (thumbnails) are shown.
    """
    run_dir = Path(run_dir)
    path = layer_maps_file(run_dir, layer)  # first: a layer name that is not plain is refused
    pairs = [(int(i), float(a)) for i, a in zip(probe_indices, activations)]
    thumbnails = thumbnails_dir(run_dir)
    if thumbnails is not None:
        labels = read_json_object(thumbnails / LABELS_FILE)
        kept = read_json_object(thumbnails / VIEWS_FILE).get("images_per_unit")
        shown = [(p, i, a) for p, (i, a) in enumerate(pairs[:kept]) if (thumbnails / f"{i}.jpg").is_file()]
        images = []
        for _, index, _ in shown:
            with Image.open(thumbnails / f"{index}.jpg") as thumbnail:
                images.append(thumbnail.convert("RGB"))
        names = [labels.get(str(index), str(index)) for _, index, _ in shown]
    else:
        stored = read_stored_maps(run_dir)
        if stored is None or probe is None:
            return None
        shown = [(p, i, a) for p, (i, a) in enumerate(pairs[:stored.images_per_unit])]
        images = [apply_view(stored.view, probe.load_image(index)) for _, index, _ in shown]
        names = [probe.item_label(index) for _, index, _ in shown]
    maps: list[Optional[np.ndarray]] = [None] * len(shown)
    if path.is_file():
        array = np.load(path, mmap_mode="r")  # reads only the rows used
        if unit < array.shape[0]:
            row = np.asarray(array[unit], dtype=np.float32)
            maps = [row[p] if p < len(row) and not np.isnan(row[p]).any() else None
                    for p, _, _ in shown]
        # An image whose map was not kept (its rank moved when the run was redescribed) is
        # left out, so that every view of a spatial layer has its heatmap.
        keep = [m is not None for m in maps]
        shown, names, images, maps = ([x for x, k in zip(seq, keep) if k] for seq in (shown, names, images, maps))
    return draw_views([(i, a) for _, i, a in shown], names, images, maps, mask_threshold)


def draw_views(pairs: list[tuple[int, float]], labels: list[str], images: list[Image.Image],
          maps: list[Optional[np.ndarray]], mask_threshold: Optional[float]) -> list[UnitView]:
    """Views with heatmaps on one scale: the highest activation among the unit's maps shown."""
    vmax = max((float(m.max()) for m in maps if m is not None), default=1.0)
    views = []
    for (index, activation), label, image, act_map in zip(pairs, labels, images, maps):
        heatmap, mask = (None, None) if act_map is None else unit_overlays(image, act_map, vmax, mask_threshold)
        views.append(UnitView(index, label, activation, image, heatmap, mask))
    return views



"""Unit views: a unit's top probe images with its activation maps, ready to show.

The probe pass keeps each unit's maps on its most activating images, and the
pipeline stores them in the run folder, so views are drawn without the model:

    maps/maps.json      {"format": "dissect_core-maps/1", "images_per_unit": k,
                         "view": the model's resize and crop steps (drawing.view_steps)}
    maps/<layer>.npy    float16 (units, k, height, width): row ``u`` holds unit ``u``'s maps
                        on its first k images of top_images.csv, in rank order (NaN where
                        none was kept); layers without spatial maps (recording.spatial_maps)
                        have no file

A results bundle (``dissect_core.bundle``) carries the same ``maps/<layer>.npy``
beside ``thumbnails/`` of the images, for machines without the probe set.

:func:`stored_unit_views` draws from those: the images come from the bundle's
thumbnails, or from the run's probe set shown as the model saw them. Only runs
without stored maps (computed before maps were stored, or with ``top_maps`` 0)
are drawn live by :func:`live_unit_views`, which runs the model through
``recording``. Drawing stored views needs numpy and Pillow only (a hosted app
browses bundled runs without torch): torch and the modules that load models or
probe sets are imported by the functions that need them.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from .drawing import apply_view, model_view, unit_overlays
from .errors import DissectError
from .files import atomic_write_bytes, atomic_write_text
from .manifest import RunSources
from .results import LABELS_FILE, MAPS_DIR, THUMBNAILS_DIR, VIEWS_FILE, read_json_object, refuse_imported
from .run_tables import layer_file_name

if TYPE_CHECKING:
    import torch

    from .models import TargetModel
    from .probe_data import ProbeSet

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


# --------------------------------------------------------------------------- views

def has_thumbnails(run_dir: Optional[Path]) -> bool:
    """True for a run imported from a bundle with its images."""
    return run_dir is not None and (Path(run_dir) / THUMBNAILS_DIR).is_dir()


def stored_unit_views(
    run_dir: Path,
    layer: str,
    unit: int,
    probe_indices: Sequence[int],
    activations: Sequence[float],
    mask_threshold: Optional[float],
    probe: Optional["ProbeSet"] = None,
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
    thumbnails = run_dir / THUMBNAILS_DIR
    if thumbnails.is_dir():
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
    return _draw([(i, a) for _, i, a in shown], names, images, maps, mask_threshold)


def live_unit_views(
    target: "TargetModel",
    probe: "ProbeSet",
    layer: str,
    unit: int,
    probe_indices: Sequence[int],
    activations: Sequence[float],
    mask_threshold: Optional[float],
    device: Optional["torch.device"] = None,
    layout: Optional[str] = None,
) -> list[UnitView]:
    """The unit's views with maps computed now, for runs that stored none.

    Layers without spatial maps (``recording.spatial_maps``: ``fc``, token outputs whose
    patches form no square grid) get the images alone.
    ``layout`` declares the layer's layout where it cannot be read from the model.
    """
    originals = [probe.load_image(int(i)) for i in probe_indices]
    if not originals:
        return []
    import torch

    from .layouts import FLAT
    from .recording import layer_outputs, resolve_layouts, spatial_maps

    batch = torch.stack([target.preprocess(img) for img in originals])
    layouts = resolve_layouts(target.module, [layer], batch[:1], None, layout and {layer: layout})
    maps: list[Optional[np.ndarray]] = [None] * len(originals)
    if layouts[layer] is not FLAT:  # one value per unit: no map, no need to run the model
        unit_maps = spatial_maps(layer_outputs(target.module, layouts, batch, device)[layer], layouts[layer])
        if unit_maps is not None:
            maps = list(unit_maps[:, unit].numpy())
    images = [model_view(target.preprocess, original) for original in originals]
    pairs = [(int(i), float(a)) for i, a in zip(probe_indices, activations)]
    return _draw(pairs, [probe.item_label(i) for i, _ in pairs], images, maps, mask_threshold)


def _draw(pairs: list[tuple[int, float]], labels: list[str], images: list[Image.Image],
          maps: list[Optional[np.ndarray]], mask_threshold: Optional[float]) -> list[UnitView]:
    """Views with heatmaps on one scale: the highest activation among the unit's maps shown."""
    vmax = max((float(m.max()) for m in maps if m is not None), default=1.0)
    views = []
    for (index, activation), label, image, act_map in zip(pairs, labels, images, maps):
        heatmap, mask = (None, None) if act_map is None else unit_overlays(image, act_map, vmax, mask_threshold)
        views.append(UnitView(index, label, activation, image, heatmap, mask))
    return views


# --------------------------------------------------------------------------- a run's sources

def probe_for_run(sources: Optional[RunSources]) -> "ProbeSet":
    """Reopen a run's probe set (``Run.sources``), checking it still holds the same images.

    Raises ``DissectError`` saying why the images can't be shown: a run imported
    from the reference tool records no probe set, or the folder moved or changed.
    """
    if sources is None:
        raise DissectError(
            "This run was imported from a CSV, which records the labels only: the reference "
            "tool saves neither the probe images nor which of them activate each unit."
        )
    refuse_imported(sources)
    from .probe_data import open_probe_spec

    return open_probe_spec(sources.probe_spec, expected_fingerprint=sources.probe_fingerprint)


def target_for_run(sources: RunSources) -> "TargetModel":
    """Reload the target model of a run, refusing weights that differ from the run's."""
    from .models import load_target_model

    refuse_imported(sources)
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

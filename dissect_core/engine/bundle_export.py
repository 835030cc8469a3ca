"""Exporting results bundles (format and import: ``dissect_core.runs.bundle_format``).

Thumbnails and maps come from what the run stored; only runs that stored no maps are run
through their model again (``_live_maps``), which is why export lives in the engine.
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Optional, Sequence, Union

import numpy as np
import pandas as pd

from dissect_core.common.errors import DissectError, InvalidInputError
from dissect_core.common.progress import ProgressFn, report
from dissect_core.runs.formats import read_descriptions
from dissect_core.runs.run import Run
from dissect_core.runs.run_folders import (
    ARGS_FILE,
    DESCRIPTIONS_FILE,
    LABELS_FILE,
    MAPS_DIR,
    THUMBNAILS_DIR,
    VIEWS_FILE,
    read_json_object,
    thumbnails_dir,
)
from dissect_core.runs.bundle_format import BUNDLE_FILE, BUNDLE_FORMAT, RUNS_DIR, RUN_FILES
from dissect_core.runs.side_tables import (
    check_layer_name, layer_file_name,
)

if TYPE_CHECKING:
    import torch

# Images per forward pass: large enough to batch, small enough that the hooked
# layers' outputs of one batch stay well under a gigabyte for early CNN layers.
_BATCH_SIZE = 32
_JPEG_QUALITY = 85
_FLOAT16_MAX = float(np.finfo(np.float16).max)


def export_bundle(
    runs: Sequence[Run],
    *,
    images_per_unit: int = 10,
    thumbnail_px: int = 160,
    device: Union[str, "torch.device"] = "cpu",
    progress: Optional[ProgressFn] = None,
) -> bytes:
    """A zip holding ``runs`` with thumbnails and activation maps (layout: module docstring).

    Runs whose probe set or model cannot be reopened here are bundled without
    images; their entry in bundle.json says why (``"images": false, "why": ...``).
    """
    if not runs:
        raise InvalidInputError("There is no run to bundle: pick at least one run.")
    if images_per_unit < 1:
        raise InvalidInputError(f"images_per_unit must be at least 1, not {images_per_unit}.")
    if thumbnail_px < 16:
        raise InvalidInputError(f"thumbnail_px must be at least 16, not {thumbnail_px}.")
    for run in runs:  # import_bundle refuses any other: a bundle of them could not be opened
        for layer in run.layers:
            check_layer_name(layer, f"The run {run.label}", "A results bundle carries plain layer names only.")
    buffer = io.BytesIO()
    entries = []
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for run, folder in zip(runs, _folder_names(runs)):
            prefix = f"{RUNS_DIR}/{folder}/"
            for name, data in _run_files(run).items():
                archive.writestr(prefix + name, data)
            entry: dict = {"label": run.label, "folder": folder}
            try:
                if thumbnails_dir(run.path) is not None:  # bundled already (the demo, say): its own images
                    thumbnails, labels, maps, per_unit, px = _stored_views_data(run, images_per_unit)
                else:
                    thumbnails, labels, maps = _unit_views_data(run, images_per_unit, thumbnail_px, device, progress)
                    per_unit, px = images_per_unit, thumbnail_px
            except DissectError as exc:
                entry.update(images=False, why=str(exc))
            else:
                for index, jpeg in thumbnails.items():
                    # JPEG is compressed already: deflating it again only costs time.
                    archive.writestr(f"{prefix}{THUMBNAILS_DIR}/{index}.jpg", jpeg, zipfile.ZIP_STORED)
                archive.writestr(f"{prefix}{THUMBNAILS_DIR}/{LABELS_FILE}", json.dumps(labels))
                views = {"images_per_unit": per_unit, "thumbnail_px": px}
                archive.writestr(f"{prefix}{THUMBNAILS_DIR}/{VIEWS_FILE}", json.dumps(views))
                for layer, array in maps.items():
                    npy = io.BytesIO()
                    np.save(npy, array)
                    archive.writestr(f"{prefix}{MAPS_DIR}/{layer_file_name(layer, '.npy')}", npy.getvalue())
                entry.update(images=True, images_per_unit=per_unit, map_layers=list(maps))
            entries.append(entry)
        manifest = {
            "format": BUNDLE_FORMAT,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "runs": entries,
        }
        archive.writestr(BUNDLE_FILE, json.dumps(manifest, indent=2))
    return buffer.getvalue()


def _folder_names(runs: Sequence[Run]) -> list[str]:
    """Filesystem-safe folder names, unique even on case-insensitive file systems."""
    names: list[str] = []
    taken: set[str] = set()
    for run in runs:
        source = run.path.name if run.path is not None else run.label
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", source).strip("._-")[:80] or "run"
        name, n = base, 2
        while name.lower() in taken:
            name, n = f"{base}_{n}", n + 1
        taken.add(name.lower())
        names.append(name)
    return names


def _run_files(run: Run) -> dict[str, bytes]:
    """The run's files by name: copied as they are when the folder's CSV is the run's own."""
    folder = run.path
    own_csv = folder / DESCRIPTIONS_FILE if folder is not None else None
    if own_csv is not None and own_csv.is_file():
        data = own_csv.read_bytes()
        if read_descriptions(data).equals(run.descriptions):
            files = {DESCRIPTIONS_FILE: data}
            for name in RUN_FILES[1:]:
                if (folder / name).is_file():
                    files[name] = (folder / name).read_bytes()
            return files
    # An uploaded CSV (no folder), or a bare CSV whose folder holds another run: the
    # side files there are not this run's. Full float precision so the frame reads back equal.
    # args.txt keeps what the CSV cannot: the model's name and the method (NetDissect, MILAN).
    text = run.descriptions.to_csv(index=False, lineterminator="\n", na_rep="nan")
    files = {DESCRIPTIONS_FILE: text.encode("utf-8")}
    if run.args:
        files[ARGS_FILE] = json.dumps(run.args, indent=2).encode("utf-8")
    return files


def _stored_views_data(run: Run, images_per_unit: int
                       ) -> tuple[dict[int, bytes], dict[str, str], dict[str, np.ndarray], int, int]:
    """(thumbnails, labels, maps, images per unit, thumbnail px) of a run that carries its
    thumbnails (a bundled run, or a sweep's run sharing its sweep's): passed on as they are,
    at most ``images_per_unit`` a unit; its manifest's folders are never opened."""
    folder = thumbnails_dir(run.path)
    views = read_json_object(folder / VIEWS_FILE)
    names = read_json_object(folder / LABELS_FILE)
    kept, px = views.get("images_per_unit"), views.get("thumbnail_px")
    if not isinstance(kept, int) or not isinstance(px, int) or run.top_images is None:
        raise DissectError(f"The run's stored thumbnails ({folder}) have no usable {VIEWS_FILE}.")
    per_unit = min(kept, images_per_unit)
    top = run.top_images[run.top_images["layer"].isin(run.layers)].sort_values(["layer", "unit", "rank"])
    indices = sorted(set(top.groupby(["layer", "unit"], sort=False).head(per_unit)["image_index"].astype(int)))
    thumbnails = {index: (folder / f"{index}.jpg").read_bytes() for index in indices
                  if (folder / f"{index}.jpg").is_file()}
    listed = {str(index) for index in run.top_images["image_index"].astype(int)}  # a shared folder names more
    labels = {key: value for key, value in names.items() if key in listed and isinstance(value, str)}
    # A bundled run's maps, where it has them (as a bundle holds them: no index).
    return thumbnails, labels, _stored_maps(run, per_unit), per_unit, px


def _stored_maps(run: Run, per_unit: int) -> dict[str, np.ndarray]:
    """The run's stored activation maps by layer, the first ``per_unit`` of each unit's."""
    from dissect_core.runs.unit_images import layer_maps_file

    maps = {}
    for layer in run.layers:
        path = layer_maps_file(run.path, layer)
        if path.is_file():
            maps[layer] = np.ascontiguousarray(np.load(path, mmap_mode="r")[:, :per_unit])
    return maps


def _unit_views_data(
    run: Run, images_per_unit: int, thumbnail_px: int, device: Union[str, "torch.device"],
    progress: Optional[ProgressFn],
) -> tuple[dict[int, bytes], dict[str, str], dict[str, np.ndarray]]:
    """(JPEG thumbnails by probe index, their labels, maps by layer) of a run's top images.

    The maps are the run's stored ones; a run that stored fewer than ``images_per_unit``
    per unit has its top images run through the model once more, in batches, with every
    layer recorded. Raises ``DissectError`` when the probe set (or that model) cannot be reopened.
    """
    if run.top_images is None or run.top_images.empty:
        raise DissectError(
            "The run records no top images (the reference tool saves labels only), so only its labels are bundled."
        )
    # Torch is imported here so that importing bundles (the app's start-up path) stays light.
    from dissect_core.engine.unit_views import view_steps
    from dissect_core.runs.unit_images import apply_view
    from dissect_core.engine.unit_views import probe_for_run
    from dissect_core.runs.unit_images import read_stored_maps

    probe = probe_for_run(run.sources)
    top = run.top_images[run.top_images["layer"].isin(run.layers)].sort_values(["layer", "unit", "rank"])
    top = top.groupby(["layer", "unit"], sort=False).head(images_per_unit)
    indices = sorted(set(top["image_index"].astype(int)))
    stored = read_stored_maps(run.path) if run.path is not None else None
    if stored is not None and stored.images_per_unit >= images_per_unit:
        view = stored.view
        maps = _stored_maps(run, images_per_unit)
        what = "images"
    else:
        target, maps = _live_maps(run, probe, top, indices, device, progress)
        view = view_steps(target.preprocess)
        what = "images (maps recorded, none were stored)"
    thumbnails: dict[int, bytes] = {}
    labels: dict[str, str] = {}
    stage = f"bundle {run.label}: {what}"
    report(progress, stage, 0, len(indices))
    for done, index in enumerate(indices, 1):
        thumbnails[index] = _thumbnail_jpeg(apply_view(view, probe.load_image(index)), thumbnail_px)
        labels[str(index)] = probe.item_label(index)
        if done % _BATCH_SIZE == 0 or done == len(indices):
            report(progress, stage, done, len(indices))
    if run.labelled:
        # Every listed top image's name, so that the Unit explorer can count the labels among
        # the images a unit's label was chosen from (dissect_core.runs.unit_evidence).
        for index in sorted(set(run.top_images["image_index"].astype(int)) - set(indices)):
            labels[str(index)] = probe.item_label(index)
    return thumbnails, labels, maps


def _live_maps(run: Run, probe, top: pd.DataFrame, indices: list[int], device, progress: Optional[ProgressFn]):
    """(target, maps by layer) for a run without stored maps: each distinct top image goes
    through the model once, in batches, every layer recorded (``recording``)."""
    import torch

    from dissect_core.engine.recording import record_layers, resolve_layouts
    from dissect_core.engine.unit_views import target_for_run

    target = target_for_run(run.sources)
    layers = [layer for layer in run.layers if (top["layer"] == layer).any()]
    gatherers = {layer: _MapGatherer(top[top["layer"] == layer]) for layer in layers}
    stage = f"bundle {run.label}: maps of {', '.join(layers)}"
    report(progress, stage, 0, len(indices))
    declared = {layer: run.manifest.layouts.get(layer) for layer in layers}
    layouts = None
    device = torch.device(device)
    for start in range(0, len(indices), _BATCH_SIZE):
        batch_indices = indices[start:start + _BATCH_SIZE]
        batch = torch.stack([target.preprocess(probe.load_image(i)) for i in batch_indices])
        if layouts is None:
            layouts = resolve_layouts(target.module, layers, batch[:1], None,
                                      {layer: name for layer, name in declared.items() if name})
        for gatherer in gatherers.values():
            gatherer.batch_indices = np.asarray(batch_indices)
        with record_layers(target.module, layouts, lambda layer, output, layout: gatherers[layer](output, layout),
                           device) as model, torch.inference_mode():
            model(batch.to(device))
        report(progress, stage, start + len(batch_indices), len(indices))
    return target, {layer: g.maps for layer, g in gatherers.items() if g.maps is not None}


class _MapGatherer:
    """Copies each unit's maps on its top images out of a batch's recorded output."""

    def __init__(self, rows: pd.DataFrame):
        self.units = rows["unit"].to_numpy(dtype=np.int64)
        self.images = rows["image_index"].to_numpy(dtype=np.int64)
        self.positions = rows.groupby("unit").cumcount().to_numpy()  # rank order within each unit
        self.depth = int(self.positions.max()) + 1
        self.batch_indices = np.zeros(0, dtype=np.int64)  # probe indices of the batch being run
        self.maps: Optional[np.ndarray] = None  # (units, depth, h, w), float16

    def __call__(self, output, layout) -> None:
        from dissect_core.engine.recording import spatial_maps  # torch: only where a model runs (see the module docstring)

        maps = spatial_maps(output, layout)
        if maps is None:  # fc, or patch tokens on no square grid: no map to draw
            return
        if self.maps is None:
            self.maps = np.zeros((maps.shape[1], self.depth, *maps.shape[2:]), dtype=np.float16)
        wanted = np.isin(self.images, self.batch_indices)
        rows = np.searchsorted(self.batch_indices, self.images[wanted])  # batch_indices is sorted
        values = maps[rows, self.units[wanted]].float().cpu().numpy()
        # Clip so that an extreme activation saturates instead of becoming inf in float16.
        self.maps[self.units[wanted], self.positions[wanted]] = values.clip(-_FLOAT16_MAX, _FLOAT16_MAX)


def _thumbnail_jpeg(view, size: int) -> bytes:
    """The model's view of an image, shrunk to fit ``size`` × ``size``, as JPEG bytes."""
    thumbnail = view.copy()
    thumbnail.thumbnail((size, size))
    out = io.BytesIO()
    thumbnail.save(out, "JPEG", quality=_JPEG_QUALITY, optimize=True)
    return out.getvalue()


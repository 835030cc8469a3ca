"""Results bundles: one zip holding a whole comparison, to share it or host a demo.

A bundle opens on a machine that has neither the probe images nor the model
weights: besides the run files it stores each unit's top images as small
thumbnails and the unit's activation maps on them, from which the app draws the
same heatmaps and masks (``heatmaps.stored_unit_images``). Layout::

    bundle.json                      {"format": "dissect_core-bundle/1", "created": ISO time,
                                      "runs": [{"label", "folder", "images": bool, "why"?, ...}]}
    runs/<folder>/descriptions.csv   always; args.txt, manifest.json, top_concepts.csv,
                                     top_images.csv, unit_stats.csv and the label-quality files
                                     (label_quality.csv, label_quality_layers.csv,
                                     label_quality_points.npz) when the run has them
    runs/<folder>/thumbnails/<image_index>.jpg
                                     each distinct image among the units' top images, cropped
                                     as the model saw it and shrunk to ``thumbnail_px``
    runs/<folder>/thumbnails/labels.json
                                     {image_index: the image's label within the probe set}
    runs/<folder>/thumbnails/views.json
                                     {"images_per_unit": k, "thumbnail_px": px}: each unit's
                                     top k images (by top_images.csv) have thumbnails
    runs/<folder>/maps/<layer>.npy   float16 (units, images_per_unit, h, w): row ``u`` holds
                                     unit ``u``'s maps on its top images, in the rank order of
                                     top_images.csv (layers with spatial maps only)

Thumbnails and maps are left out for runs whose probe set or model cannot be
reopened (e.g. runs imported from the reference tool's CSVs); bundle.json says why.

The standard library's ``zipfile`` reads and writes bundles: zip is what users can
open anywhere, and it needs no extra dependency. ``import_bundle`` treats a bundle
as untrusted input (it may come from anyone): it refuses paths that escape the
destination, links, and archives that would expand beyond fixed limits.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import stat
import tempfile
import uuid
import zipfile
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Optional, Sequence, Union

import numpy as np
import pandas as pd

from .errors import DissectError, InvalidInputError
from .progress import ProgressFn, report
from .quality_files import LABEL_QUALITY_FILE, LAYER_QUALITY_FILE, QUALITY_POINTS_FILE, check_quality_files
from .results import (
    ARGS_FILE,
    DESCRIPTIONS_FILE,
    MANIFEST_FILE,
    TOP_CONCEPTS_FILE,
    TOP_IMAGES_FILE,
    UNIT_STATS_FILE,
    Run,
    read_descriptions,
)

if TYPE_CHECKING:
    import torch

BUNDLE_FORMAT = "dissect_core-bundle/1"
BUNDLE_FILE = "bundle.json"
RUNS_DIR = "runs"
THUMBNAILS_DIR = "thumbnails"
LABELS_FILE = "labels.json"
VIEWS_FILE = "views.json"
MAPS_DIR = "maps"
RUN_FILES = (DESCRIPTIONS_FILE, ARGS_FILE, MANIFEST_FILE, TOP_CONCEPTS_FILE, TOP_IMAGES_FILE, UNIT_STATS_FILE,
             LABEL_QUALITY_FILE, LAYER_QUALITY_FILE, QUALITY_POINTS_FILE)

# Limits against zip bombs: far above any real bundle (a full Broden run is ~100 MB).
MAX_MEMBERS = 20_000
MAX_TOTAL_BYTES = 2 * 1024**3
MAX_BUNDLE_JSON_BYTES = 1024**2

# Images per forward pass: large enough to batch, small enough that the hooked
# layers' outputs of one batch stay well under a gigabyte for early CNN layers.
_BATCH_SIZE = 32
_JPEG_QUALITY = 85
_FLOAT16_MAX = float(np.finfo(np.float16).max)
_SAFE_FOLDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


# --------------------------------------------------------------------------- export

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
    buffer = io.BytesIO()
    entries = []
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for run, folder in zip(runs, _folder_names(runs)):
            prefix = f"{RUNS_DIR}/{folder}/"
            for name, data in _run_files(run).items():
                archive.writestr(prefix + name, data)
            entry: dict = {"label": run.label, "folder": folder}
            try:
                thumbnails, labels, maps = _unit_views_data(run, images_per_unit, thumbnail_px, device, progress)
            except DissectError as exc:
                entry.update(images=False, why=str(exc))
            else:
                for index, jpeg in thumbnails.items():
                    # JPEG is compressed already: deflating it again only costs time.
                    archive.writestr(f"{prefix}{THUMBNAILS_DIR}/{index}.jpg", jpeg, zipfile.ZIP_STORED)
                archive.writestr(f"{prefix}{THUMBNAILS_DIR}/{LABELS_FILE}", json.dumps(labels))
                views = {"images_per_unit": images_per_unit, "thumbnail_px": thumbnail_px}
                archive.writestr(f"{prefix}{THUMBNAILS_DIR}/{VIEWS_FILE}", json.dumps(views))
                for layer, array in maps.items():
                    npy = io.BytesIO()
                    np.save(npy, array)
                    archive.writestr(f"{prefix}{MAPS_DIR}/{layer}.npy", npy.getvalue())
                entry.update(images=True, images_per_unit=images_per_unit, map_layers=list(maps))
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


def _unit_views_data(
    run: Run, images_per_unit: int, thumbnail_px: int, device: Union[str, "torch.device"],
    progress: Optional[ProgressFn],
) -> tuple[dict[int, bytes], dict[str, str], dict[str, np.ndarray]]:
    """(JPEG thumbnails by probe index, their labels, maps by layer) of a run's top images.

    Each distinct image goes through the model once, in batches, with every layer
    hooked; the hooks copy out just the (unit, rank) maps whose image is in the batch.
    Raises ``DissectError`` when the probe set or the model cannot be reopened.
    """
    if run.top_images is None or run.top_images.empty:
        raise DissectError(
            "The run records no top images (the reference tool saves labels only), so only its labels are bundled."
        )
    # Torch is imported here so that importing bundles (the app's start-up path) stays light.
    import torch

    from .heatmaps import model_view, probe_for_run, target_for_run
    from .models import get_layer

    probe = probe_for_run(run.manifest)
    target = target_for_run(run.manifest)
    top = run.top_images[run.top_images["layer"].isin(run.layers)].sort_values(["layer", "unit", "rank"])
    top = top.groupby(["layer", "unit"], sort=False).head(images_per_unit)
    gatherers = {layer: _MapGatherer(top[top["layer"] == layer]) for layer in run.layers
                 if (top["layer"] == layer).any()}
    indices = sorted(set(top["image_index"].astype(int)))
    thumbnails: dict[int, bytes] = {}
    labels: dict[str, str] = {}
    stage = f"bundle {run.label}: images and maps of {', '.join(gatherers)}"
    report(progress, stage, 0, len(indices))
    device = torch.device(device)
    handles = []
    try:
        for layer, gatherer in gatherers.items():
            handles.append(get_layer(target.module, layer).register_forward_hook(gatherer))
        target.module.to(device).eval()
        for start in range(0, len(indices), _BATCH_SIZE):
            batch_indices = indices[start:start + _BATCH_SIZE]
            originals = [probe.load_image(i) for i in batch_indices]
            for index, original in zip(batch_indices, originals):
                thumbnails[index] = _thumbnail_jpeg(model_view(target.preprocess, original), thumbnail_px)
                labels[str(index)] = probe.item_label(index)
            for gatherer in gatherers.values():
                gatherer.batch_indices = np.asarray(batch_indices)
            with torch.inference_mode():
                target.module(torch.stack([target.preprocess(img) for img in originals]).to(device))
            report(progress, stage, start + len(batch_indices), len(indices))
    finally:
        for handle in handles:
            handle.remove()
        target.module.to("cpu")
    maps = {layer: g.maps for layer, g in gatherers.items() if g.maps is not None}
    return thumbnails, labels, maps


class _MapGatherer:
    """Forward hook that copies each unit's maps on its top images out of a batch."""

    def __init__(self, rows: pd.DataFrame):
        self.units = rows["unit"].to_numpy(dtype=np.int64)
        self.images = rows["image_index"].to_numpy(dtype=np.int64)
        self.positions = rows.groupby("unit").cumcount().to_numpy()  # rank order within each unit
        self.depth = int(self.positions.max()) + 1
        self.batch_indices = np.zeros(0, dtype=np.int64)  # probe indices of the batch being run
        self.maps: Optional[np.ndarray] = None  # (units, depth, h, w), float16
        self.spatial = True

    def __call__(self, module, inputs, output) -> None:
        if isinstance(output, (tuple, list)):
            output = output[0]
        if not self.spatial or output.dim() != 4:
            self.spatial = False  # fc or transformer tokens: no map to draw
            return
        if self.maps is None:
            self.maps = np.zeros((output.shape[1], self.depth, *output.shape[2:]), dtype=np.float16)
        wanted = np.isin(self.images, self.batch_indices)
        rows = np.searchsorted(self.batch_indices, self.images[wanted])  # batch_indices is sorted
        values = output[rows, self.units[wanted]].float().cpu().numpy()
        # Clip so that an extreme activation saturates instead of becoming inf in float16.
        self.maps[self.units[wanted], self.positions[wanted]] = values.clip(-_FLOAT16_MAX, _FLOAT16_MAX)


def _thumbnail_jpeg(view, size: int) -> bytes:
    """The model's view of an image, shrunk to fit ``size`` × ``size``, as JPEG bytes."""
    thumbnail = view.copy()
    thumbnail.thumbnail((size, size))
    out = io.BytesIO()
    thumbnail.save(out, "JPEG", quality=_JPEG_QUALITY, optimize=True)
    return out.getvalue()


# --------------------------------------------------------------------------- import

def import_bundle(data: Union[bytes, IO[bytes]], dest_root: Union[Path, str]) -> list[Path]:
    """Unpack a bundle into a new folder ``dest_root/<bundle name>_<time>_<random>``.

    Everything is checked first and unpacked into a temporary folder that is renamed
    into place only when every run reads back, so a bad bundle leaves nothing behind
    and existing runs are never touched. Returns the run folders (``load_run`` reads
    them). Raises ``InvalidInputError`` saying what is wrong with the bundle.
    """
    filename = Path(str(getattr(data, "name", "") or ""))
    what = repr(filename.name) if filename.name else "The uploaded file"
    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, EOFError, ValueError):
        raise InvalidInputError(
            f"{what} is not a zip file. Choose a results bundle (.zip) exported from this app "
            "or with dissect_core.bundle.export_bundle."
        ) from None
    with archive:
        folders = _check_archive(archive, what)
        dest_root = Path(dest_root)
        made_root = not dest_root.exists()
        dest_root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=dest_root, prefix=".importing-"))
        try:
            _extract(archive, staging, what)
            for folder in folders:
                try:
                    read_descriptions(staging / folder / DESCRIPTIONS_FILE)
                except InvalidInputError as exc:
                    raise InvalidInputError(
                        f"Run {folder!r} in {what} has an invalid {DESCRIPTIONS_FILE}: {exc} "
                        "Nothing was imported; export the bundle again from a working copy of the runs."
                    ) from None
                try:
                    check_quality_files(staging / folder)
                except InvalidInputError as exc:
                    raise InvalidInputError(
                        f"Run {folder!r} in {what} has invalid label-quality files: {exc} "
                        "Nothing was imported; export the bundle again from a working copy of the runs."
                    ) from None
            stem = re.sub(r"[^A-Za-z0-9._-]+", "_", filename.stem).strip("._-")[:60] or "bundle"
            stamp = datetime.now().strftime("%y_%m_%d_%H_%M_%S")
            final = dest_root / f"{stem}_{stamp}_{uuid.uuid4().hex[:6]}"
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if made_root:
                with contextlib.suppress(OSError):  # only if still empty: never remove others' files
                    dest_root.rmdir()
            raise
    return [final / folder for folder in folders]


def _refuse(what: str, problem: str) -> InvalidInputError:
    return InvalidInputError(
        f"{what} is not a valid results bundle: {problem} Nothing was imported; use a bundle as "
        "exported by this app (dissect_core.bundle.export_bundle), without editing or re-packing the zip."
    )


def _check_archive(archive: zipfile.ZipFile, what: str) -> list[str]:
    """Check the members and bundle.json; return the run folders, in bundle order."""
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise _refuse(what, f"it holds {len(infos):,} files, more than the {MAX_MEMBERS:,} a bundle may hold.")
    names: set[str] = set()
    folded: set[str] = set()  # case-folded: two names a case-insensitive disk would merge
    total = 0
    for info in infos:
        member = info.filename
        parts = member.rstrip("/").split("/")
        if (member.startswith("/") or "\\" in member or ":" in member or "\0" in member
                or any(part in ("", ".", "..") for part in parts)):
            raise _refuse(what, f"the member {member!r} has an absolute or escaping path.")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise _refuse(what, f"the member {member!r} is a symbolic link.")
        if info.flag_bits & 0x1:
            raise _refuse(what, f"the member {member!r} is encrypted.")
        if member.lower() in folded:
            raise _refuse(what, f"the member {member!r} appears twice.")
        names.add(member)
        folded.add(member.lower())
        total += info.file_size
    if total > MAX_TOTAL_BYTES:
        raise _refuse(what, f"it would expand to {total / 1024**3:.1f} GB, more than the "
                            f"{MAX_TOTAL_BYTES / 1024**3:.0f} GB a bundle may hold.")

    if BUNDLE_FILE not in names:
        raise _refuse(what, f"it has no {BUNDLE_FILE} at its top level.")
    info = archive.getinfo(BUNDLE_FILE)
    if info.file_size > MAX_BUNDLE_JSON_BYTES:
        raise _refuse(what, f"its {BUNDLE_FILE} is {info.file_size:,} bytes, too large to be a bundle's index.")
    try:
        manifest = json.loads(_read_member(archive, info, what))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _refuse(what, f"its {BUNDLE_FILE} is not valid JSON.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise _refuse(what, f"its {BUNDLE_FILE} has format {found!r}, not {BUNDLE_FORMAT!r} "
                            "(made by another tool, or by a newer version of this one?).")
    entries = manifest.get("runs")
    if not isinstance(entries, list) or not entries:
        raise _refuse(what, f"its {BUNDLE_FILE} lists no runs.")
    folders = [entry.get("folder") if isinstance(entry, dict) else None for entry in entries]
    for folder in folders:
        if not isinstance(folder, str) or not _SAFE_FOLDER.fullmatch(folder):
            raise _refuse(what, f"its {BUNDLE_FILE} names the run folder {folder!r}, which is not a plain folder name.")
    if len({f.lower() for f in folders}) != len(folders):
        raise _refuse(what, f"its {BUNDLE_FILE} lists a run folder twice.")

    listed = set(folders)
    for info in infos:
        parts = info.filename.rstrip("/").split("/")
        inside_run = parts[0] == RUNS_DIR and len(parts) >= 2 and parts[1] in listed
        if (info.filename == BUNDLE_FILE or (info.is_dir() and parts == [RUNS_DIR])
                or (inside_run and (len(parts) >= 3 or info.is_dir()))):
            continue
        raise _refuse(what, f"the member {info.filename!r} lies outside {RUNS_DIR}/<run listed in {BUNDLE_FILE}>/.")
    for folder in folders:
        if f"{RUNS_DIR}/{folder}/{DESCRIPTIONS_FILE}" not in names:
            raise _refuse(what, f"the run {folder!r} has no {DESCRIPTIONS_FILE}.")
    return folders


# Errors zipfile raises on a damaged or unsupported member.
_MEMBER_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError)


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, what: str) -> bytes:
    try:
        with archive.open(info) as handle:
            return handle.read(info.file_size + 1)
    except _MEMBER_ERRORS as exc:
        raise _refuse(what, f"the member {info.filename!r} cannot be read ({exc}).") from None


def _extract(archive: zipfile.ZipFile, staging: Path, what: str) -> None:
    """Write every member under ``staging`` (``runs/<folder>/x`` → ``<folder>/x``),
    counting the bytes actually written: declared sizes can lie."""
    written_total = 0
    for info in archive.infolist():
        if info.is_dir():
            continue
        parts = info.filename.split("/")
        target = staging.joinpath(*(parts[1:] if parts[0] == RUNS_DIR else parts))
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, open(target, "xb") as out:
                written = 0
                while chunk := source.read(1 << 20):
                    written += len(chunk)
                    written_total += len(chunk)
                    if written > info.file_size or written_total > MAX_TOTAL_BYTES:
                        raise _refuse(what, f"the member {info.filename!r} expands beyond its declared size.")
                    out.write(chunk)
        except _MEMBER_ERRORS as exc:
            raise _refuse(what, f"the member {info.filename!r} cannot be read ({exc}).") from None
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            raise _refuse(what, f"the member {info.filename!r} clashes with another member's folder.") from None

"""Results bundles: one zip holding a whole comparison, to share it or host a demo.

A bundle opens on a machine that has neither the probe images nor the model
weights: besides the run files it stores each unit's top images as small
thumbnails and the unit's activation maps on them, from which the app draws the
same heatmaps and masks (``unit_views.stored_unit_views``). Layout::

    bundle.json                      {"format": "dissect_core-bundle/2", "created": ISO time,
                                      "runs": [{"label", "folder", "images": bool, "why"?, ...}]}
    runs/<folder>/descriptions.csv   always; args.txt, manifest.json, top_concepts.csv,
                                     top_images.csv, unit_stats.csv and the label-quality files
                                     (label_quality.csv, label_quality_layers.csv,
                                     label_quality_points.npz) when the run has them
    runs/<folder>/thumbnails/<image_index>.jpg
                                     each distinct image among the units' top images, cropped
                                     as the model saw it and shrunk to ``thumbnail_px``
    runs/<folder>/thumbnails/labels.json
                                     {image_index: the image's name within the probe set}, for
                                     each thumbnail and, in labelled runs, each image listed in
                                     top_images.csv (its class counts: runs.unit_evidence)
    runs/<folder>/thumbnails/views.json
                                     {"images_per_unit": k, "thumbnail_px": px}: each unit's
                                     top k images (by top_images.csv) have thumbnails
    runs/<folder>/maps/<layer>.npy   float16 (units, images_per_unit, h, w): row ``u`` holds
                                     unit ``u``'s maps on its top images, in the rank order of
                                     top_images.csv (layers with spatial maps only,
                                     recording.spatial_maps)

The maps are the ones the run stored (``unit_views``: the model is not run);
only runs that stored none are run through the model again. Thumbnails and maps
are left out for runs whose probe set (or, for those, model) cannot be reopened
(e.g. runs imported from the reference tool's CSVs); bundle.json says why.

The standard library's ``zipfile`` reads and writes bundles: zip is what users can
open anywhere, and it needs no extra dependency. ``import_bundle`` treats a bundle
as untrusted input (it may come from anyone): every member is validated like an
upload before anything is written, disk use is bounded per bundle and per results
folder, and imported runs are marked read-only (see ``import_bundle``).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import stat
import uuid
import zipfile
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Optional, Union

import msgspec
import numpy as np

from dissect_core.common.errors import InvalidInputError, NewerFormatError
from dissect_core.common.files import atomic_write_text, staging_dir
from dissect_core.runs.quality_tables import (
    LABEL_QUALITY_FILE, LAYER_QUALITY_FILE, QUALITY_POINTS_FILE, read_label_quality, read_layer_quality,
    read_quality_points,
)
from dissect_core.runs.formats import read_descriptions
from dissect_core.runs.run_folders import (
    ARGS_FILE,
    DESCRIPTIONS_FILE,
    LABELS_FILE,
    MANIFEST_FILE,
    MAPS_DIR,
    THUMBNAILS_DIR,
    TOP_CONCEPTS_FILE,
    TOP_IMAGES_FILE,
    UNIT_STATS_FILE,
    VIEWS_FILE,
)
from dissect_core.runs.manifest import RunManifest
from dissect_core.runs.side_tables import (
    MAX_INDEX, check_args, check_layer_name, is_safe_name, read_json_file, read_side_table,
)

if TYPE_CHECKING:
    pass

BUNDLE_FORMAT_NAME = "dissect_core-bundle"
# 2: runs carry version-3 manifests (manifest.FORMAT_VERSION). Version-1 bundles still import;
#    a newer version is refused with NewerFormatError (an older dissect says "not <its format>").
BUNDLE_VERSION = 2
BUNDLE_FORMAT = f"{BUNDLE_FORMAT_NAME}/{BUNDLE_VERSION}"
BUNDLE_FILE = "bundle.json"
RUNS_DIR = "runs"
RUN_FILES = (DESCRIPTIONS_FILE, ARGS_FILE, MANIFEST_FILE, TOP_CONCEPTS_FILE, TOP_IMAGES_FILE, UNIT_STATS_FILE,
             LABEL_QUALITY_FILE, LAYER_QUALITY_FILE, QUALITY_POINTS_FILE)

# Limits against zip bombs and full disks: far above any real bundle (a full Broden
# run is ~100 MB and expands to about 3 times its size).
MAX_MEMBERS = 20_000
MAX_TOTAL_BYTES = 2 * 1024**3
MAX_RATIO = 50  # bytes written per byte of bundle ...
RATIO_FLOOR_BYTES = 64 * 1024**2  # ... except that any bundle may expand to this much
MAX_IMPORTED_BYTES = 20 * 1024**3  # all imports in one results folder together
FREE_SPACE_MARGIN = 256 * 1024**2  # left free on the disk after an import
MAX_BUNDLE_JSON_BYTES = 1024**2
MAX_TABLE_BYTES = 512 * 1024**2  # one CSV or JSON file of a run
MAX_MAP_BYTES = 1024**3
MAX_MAP_SIDE = 1024
MAX_THUMBNAIL_BYTES = 4 * 1024**2
MAX_THUMBNAIL_PX = 1024
MAX_IMAGES_PER_UNIT = 1000
MAX_LABEL_CHARS = 200
STAGING_PREFIX = ".importing-"
IMPORT_RECORD_FILE = "import.json"  # in an import's folder: the bundle's name, hash and time

_SAFE_FOLDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class BundleAlreadyImported(InvalidInputError):
    """The same bundle (by content hash) was imported before; nothing was written.

    ``folders`` are the run folders of that earlier import.
    """

    def __init__(self, message: str, folders: list[Path]):
        super().__init__(message)
        self.folders = folders


def import_bundle(data: Union[bytes, IO[bytes]], dest_root: Union[Path, str], *,
                  quota_bytes: Optional[int] = None) -> list[Path]:
    """Unpack a bundle into a new folder ``dest_root/<bundle name>_<time>_<random>``.

    A bundle is untrusted input. Every member is checked in memory before anything
    is written: only the files of the layout above, each validated like an upload
    (CSV columns, types and ranges, JSON types, layer names that are plain file
    names, thumbnails that are JPEGs of the right size, maps of the right shape
    and finite values). The bundle's expansion is bounded by ``MAX_RATIO`` times
    its own size and ``MAX_TOTAL_BYTES``; the imports under ``dest_root`` together
    by ``quota_bytes`` (default ``MAX_IMPORTED_BYTES``) and the free disk space.
    A bundle imported before (same content hash) raises ``BundleAlreadyImported``.

    Each imported run's manifest is marked ``"imported"``: its paths and settings
    name another machine's files, so nothing opens a probe set or model from it
    (see ``unit_views.probe_for_run``). Files are unpacked into a temporary folder
    that is renamed into place at the end, so a bad bundle leaves nothing behind
    and existing runs are never touched. Returns the run folders (``load_run``
    reads them). Raises ``InvalidInputError`` saying what is wrong with the bundle.
    """
    filename = Path(str(getattr(data, "name", "") or ""))
    what = repr(filename.name) if filename.name else "The uploaded file"
    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    digest, size = _content_hash(source)
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, EOFError, ValueError):
        raise InvalidInputError(
            f"{what} is not a zip file. Choose a results bundle (.zip) exported from this app "
            "or with dissect_core.engine.bundle_export.export_bundle."
        ) from None
    dest_root = Path(dest_root)
    with archive:
        folders, labels, total = _check_archive(archive, what, size)
        _check_contents(archive, folders, what)
        earlier = _earlier_import(dest_root, digest)
        if earlier is not None:
            raise BundleAlreadyImported(
                f"{what} was imported before (into {earlier.name}, {import_record(earlier).get('imported', '?')}); "
                "its runs are listed already, so nothing was written.",
                [earlier / folder for folder in import_record(earlier).get("folders", [])],
            )
        _check_room(dest_root, total, what, MAX_IMPORTED_BYTES if quota_bytes is None else quota_bytes)
        made_root = not dest_root.exists()
        dest_root.mkdir(parents=True, exist_ok=True)
        _remove_abandoned_staging(dest_root)
        staging = staging_dir(dest_root, f"{STAGING_PREFIX}{os.getpid()}-")
        try:
            _extract(archive, staging, what, total)
            imported = {"bundle": filename.name or "upload", "sha256": digest,
                        "imported": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            for folder in folders:
                _mark_imported(staging / folder, imported)
            atomic_write_text(staging / IMPORT_RECORD_FILE,
                              json.dumps({**imported, "folders": folders, "labels": labels}, indent=2))
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


def _content_hash(source: IO[bytes]) -> tuple[str, int]:
    """SHA-256 and size of a seekable upload, leaving it at its start."""
    digest = hashlib.sha256()
    size = 0
    source.seek(0)
    while chunk := source.read(1 << 20):
        digest.update(chunk)
        size += len(chunk)
    source.seek(0)
    return digest.hexdigest(), size


def import_record(folder: Path) -> dict:
    """An import's ``import.json`` (the bundle's file name, SHA-256, time, run folders and
    labels); {} where there is none or it cannot be read."""
    try:
        record = json.loads((folder / IMPORT_RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _earlier_import(dest_root: Path, digest: str) -> Optional[Path]:
    if not dest_root.is_dir():
        return None
    for folder in sorted(dest_root.iterdir()):
        if not folder.name.startswith(".") and folder.is_dir() and import_record(folder).get("sha256") == digest:
            return folder
    return None


def _folder_bytes(root: Path) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def _check_room(dest_root: Path, total: int, what: str, quota: int) -> None:
    """Refuse a bundle that would take the imports over ``quota`` or fill the disk."""
    used = _folder_bytes(dest_root) if dest_root.is_dir() else 0
    if used + total > quota:
        raise _refuse(what, f"it would bring the imported runs in {dest_root} to {_size(used + total)}, over "
                            f"their limit of {_size(quota)} ({_size(used)} used). Delete imported runs "
                            "that are no longer needed first.")
    existing = dest_root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if total + FREE_SPACE_MARGIN > free:
        raise _refuse(what, f"it needs {_size(total)} on disk and only {_size(free)} are free in {existing}.")


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _remove_abandoned_staging(dest_root: Path) -> None:
    """Remove staging folders of imports that were killed (their process is gone)."""
    for folder in dest_root.glob(f"{STAGING_PREFIX}*"):
        pid = folder.name[len(STAGING_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and (int(pid) == os.getpid() or _pid_alive(int(pid))):
            continue
        shutil.rmtree(folder, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _mark_imported(run_dir: Path, imported: dict) -> None:
    """Record in the run's manifest that it came from a bundle (see import_bundle)."""
    if (run_dir / MANIFEST_FILE).is_file():
        msgspec.structs.replace(RunManifest.read(run_dir), imported=imported).write(run_dir)


def _refuse(what: str, problem: str) -> InvalidInputError:
    return InvalidInputError(
        f"{what} is not a valid results bundle: {problem} Nothing was imported; use a bundle as "
        "exported by this app (dissect_core.engine.bundle_export.export_bundle), without editing or re-packing the zip."
    )


# Members a run folder of a bundle may hold, relative to runs/<folder>/.
_THUMBNAIL = re.compile(r"thumbnails/(0|[1-9][0-9]{0,9})\.jpg")
_MAP = re.compile(r"maps/(.+)\.npy")


def _member_kind(relative: str) -> Optional[str]:
    """What a member of a run folder is: a run file's name, 'thumbnail', 'map', or None."""
    if relative in RUN_FILES or relative in (f"{THUMBNAILS_DIR}/{LABELS_FILE}", f"{THUMBNAILS_DIR}/{VIEWS_FILE}"):
        return relative
    if _THUMBNAIL.fullmatch(relative):
        return "thumbnail"
    match = _MAP.fullmatch(relative)
    if match and is_safe_name(match.group(1)):
        return "map"
    return None


def _check_archive(archive: zipfile.ZipFile, what: str, archive_bytes: int) -> tuple[list[str], list[str], int]:
    """Check the member list and bundle.json; return the run folders and labels, in
    bundle order, and the bytes the members will take."""
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
    limit = min(MAX_TOTAL_BYTES, max(RATIO_FLOOR_BYTES, MAX_RATIO * archive_bytes))
    if total > limit:
        raise _refuse(what, f"it would expand to {_size(total)} from {_size(archive_bytes)}, more than the "
                            f"{_size(limit)} a bundle of its size may hold (at most {MAX_RATIO} times its "
                            f"size, and {_size(MAX_TOTAL_BYTES)} in all).")

    if BUNDLE_FILE not in names:
        raise _refuse(what, f"it has no {BUNDLE_FILE} at its top level.")
    info = archive.getinfo(BUNDLE_FILE)
    if info.file_size > MAX_BUNDLE_JSON_BYTES:
        raise _refuse(what, f"its {BUNDLE_FILE} is {info.file_size:,} bytes, too large to be a bundle's index.")
    try:
        manifest = json.loads(_read_member(archive, info, what, MAX_BUNDLE_JSON_BYTES))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise _refuse(what, f"its {BUNDLE_FILE} is not valid JSON.") from None
    found = manifest.get("format") if isinstance(manifest, dict) else None
    name, _, version = str(found).rpartition("/")
    if name != BUNDLE_FORMAT_NAME or not version.isdigit() or int(version) < 1:
        raise _refuse(what, f"its {BUNDLE_FILE} has format {str(found)[:40]!r}, not {BUNDLE_FORMAT!r} "
                            "(made by another tool?).")
    if int(version) > BUNDLE_VERSION:
        raise NewerFormatError(
            f"{what} was made by a newer dissect (bundle format version {int(version)}; this dissect reads "
            f"versions 1 to {BUNDLE_VERSION}). Upgrade dissect (update the checkout, then pip install .) to "
            "import it. Nothing was imported."
        )
    entries = manifest.get("runs")
    if not isinstance(entries, list) or not entries:
        raise _refuse(what, f"its {BUNDLE_FILE} lists no runs.")
    folders = [entry.get("folder") if isinstance(entry, dict) else None for entry in entries]
    for folder in folders:
        if not isinstance(folder, str) or not _SAFE_FOLDER.fullmatch(folder):
            raise _refuse(what, f"its {BUNDLE_FILE} names the run folder {str(folder)[:80]!r}, which is not a "
                                "plain folder name.")
    if len({f.lower() for f in folders}) != len(folders):
        raise _refuse(what, f"its {BUNDLE_FILE} lists a run folder twice.")
    labels = [entry.get("label", entry["folder"]) for entry in entries]
    for label in labels:
        if not isinstance(label, str) or not label.strip() or len(label) > MAX_LABEL_CHARS:
            raise _refuse(what, f"its {BUNDLE_FILE} gives a run the label {str(label)[:80]!r}, which is not a "
                                f"text of 1 to {MAX_LABEL_CHARS} characters.")

    listed = set(folders)
    for info in infos:
        parts = info.filename.rstrip("/").split("/")
        if info.filename == BUNDLE_FILE or (info.is_dir() and parts[0] == RUNS_DIR and len(parts) <= 3):
            continue
        if not (parts[0] == RUNS_DIR and len(parts) >= 3 and parts[1] in listed):
            raise _refuse(what, f"the member {info.filename!r} lies outside {RUNS_DIR}/<run listed in "
                                f"{BUNDLE_FILE}>/.")
        if _member_kind("/".join(parts[2:])) is None:
            raise _refuse(what, f"the member {info.filename!r} is not a file a bundle holds (run files, "
                                f"{THUMBNAILS_DIR}/<image number>.jpg, {LABELS_FILE}, {VIEWS_FILE}, "
                                f"{MAPS_DIR}/<layer>.npy).")
    for folder in folders:
        if f"{RUNS_DIR}/{folder}/{DESCRIPTIONS_FILE}" not in names:
            raise _refuse(what, f"the run {folder!r} has no {DESCRIPTIONS_FILE}.")
    return folders, labels, total


def _check_contents(archive: zipfile.ZipFile, folders: list[str], what: str) -> None:
    """Validate every member of every run as an upload would be, reading from the zip."""
    for folder in folders:
        prefix = f"{RUNS_DIR}/{folder}/"
        members = {info.filename[len(prefix):]: info for info in archive.infolist()
                   if info.filename.startswith(prefix) and not info.is_dir()}
        try:
            _check_run(archive, members, what)
        except NewerFormatError as exc:  # the bundle is fine: this dissect is too old for it
            raise NewerFormatError(f"{what} cannot be imported by this dissect: in its run {folder!r}, {exc} "
                                   "Nothing was imported.") from None
        except InvalidInputError as exc:
            raise _refuse(what, f"in its run {folder!r}, {exc}") from None


def _check_run(archive: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], what: str) -> None:
    def read(name: str, limit: int = MAX_TABLE_BYTES) -> bytes:
        return _read_member(archive, members[name], what, limit)

    named = io.BytesIO(read(DESCRIPTIONS_FILE))
    named.name = DESCRIPTIONS_FILE
    descriptions = read_descriptions(named)
    layers = set(descriptions["layer"])
    for layer in sorted(layers):
        check_layer_name(layer, DESCRIPTIONS_FILE)
    if int(descriptions["unit"].max()) > MAX_INDEX or int(descriptions["unit"].min()) < 0:
        raise InvalidInputError(f"{DESCRIPTIONS_FILE} has a unit number above {MAX_INDEX:,}.")
    if ARGS_FILE in members:
        check_args(read_json_file(read(ARGS_FILE), ARGS_FILE), ARGS_FILE)
    if MANIFEST_FILE in members:
        data = read(MANIFEST_FILE)
        read_json_file(data, MANIFEST_FILE)  # bounded in size, depth and string length first
        RunManifest.from_json(data.decode("utf-8"), MANIFEST_FILE)
    tables = {name: read_side_table(read(name), name, descriptions)
              for name in (TOP_CONCEPTS_FILE, TOP_IMAGES_FILE, UNIT_STATS_FILE) if name in members}
    _check_quality_members(read, members)

    thumbnails = {int(_THUMBNAIL.fullmatch(name).group(1)): info for name, info in members.items()
                  if _THUMBNAIL.fullmatch(name)}
    maps = {_MAP.fullmatch(name).group(1): info for name, info in members.items() if _MAP.fullmatch(name)}
    views_name, labels_name = f"{THUMBNAILS_DIR}/{VIEWS_FILE}", f"{THUMBNAILS_DIR}/{LABELS_FILE}"
    if not (thumbnails or maps or views_name in members or labels_name in members):
        return
    top = tables.get(TOP_IMAGES_FILE)
    if top is None or views_name not in members:
        raise InvalidInputError(f"it has thumbnails or maps but no {TOP_IMAGES_FILE} or {views_name} to place them.")
    views = read_json_file(read(views_name), views_name)
    per_unit = views.get("images_per_unit") if isinstance(views, dict) else None
    px = views.get("thumbnail_px") if isinstance(views, dict) else None
    if not (_whole(per_unit, 1, MAX_IMAGES_PER_UNIT) and _whole(px, 16, MAX_THUMBNAIL_PX)):
        raise InvalidInputError(f"{views_name} must give images_per_unit (1 to {MAX_IMAGES_PER_UNIT}) and "
                                f"thumbnail_px (16 to {MAX_THUMBNAIL_PX}) as whole numbers.")
    wanted = set(top[top["rank"] < per_unit]["image_index"].astype(int))
    extra = sorted(set(thumbnails) - wanted)
    if extra:
        raise InvalidInputError(f"it has a thumbnail of image {extra[0]}, which is not among the units' top "
                                f"{per_unit} images in {TOP_IMAGES_FILE}.")
    for index, info in thumbnails.items():
        _check_thumbnail(_read_member(archive, info, what, MAX_THUMBNAIL_BYTES), index, px)
    if labels_name in members:
        labels = read_json_file(read(labels_name), labels_name)
        listed = set(top["image_index"].astype(int))
        if not (isinstance(labels, dict) and all(key.isdigit() and int(key) in listed and isinstance(value, str)
                                                 and len(value) <= MAX_LABEL_CHARS * 5
                                                 for key, value in labels.items())):
            raise InvalidInputError(f"{labels_name} must map numbers of images listed in {TOP_IMAGES_FILE} "
                                    "to short texts.")
    for layer, info in maps.items():
        if layer not in layers:
            raise InvalidInputError(f"it has maps of the layer {layer!r}, which its {DESCRIPTIONS_FILE} lacks.")
        units = int(descriptions.loc[descriptions["layer"] == layer, "unit"].max()) + 1
        _check_map(_read_member(archive, info, what, MAX_MAP_BYTES), f"{MAPS_DIR}/{layer}.npy", units, per_unit)


def _check_quality_members(read, members: dict[str, zipfile.ZipInfo]) -> None:
    """The label-quality files, when present, parsed as the app will read them."""
    layers = None
    if LAYER_QUALITY_FILE in members:
        layers = read_layer_quality(read(LAYER_QUALITY_FILE), LAYER_QUALITY_FILE)
    if LABEL_QUALITY_FILE in members:
        read_label_quality(read(LABEL_QUALITY_FILE), LABEL_QUALITY_FILE)
    if QUALITY_POINTS_FILE in members:
        if layers is None:
            raise InvalidInputError(f"{QUALITY_POINTS_FILE} comes without {LAYER_QUALITY_FILE}.")
        read_quality_points(read(QUALITY_POINTS_FILE), len(layers), QUALITY_POINTS_FILE)


def _whole(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _check_thumbnail(data: bytes, index: int, px: int) -> None:
    from PIL import Image

    name = f"{THUMBNAILS_DIR}/{index}.jpg"
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as image:
            if max(image.size) > px or min(image.size) < 1:
                raise InvalidInputError(f"{name} is {image.size[0]}×{image.size[1]} pixels, larger than the "
                                        f"bundle's thumbnail size of {px}.")
            image.load()
    except InvalidInputError:
        raise
    except Exception as exc:  # Pillow raises many kinds of error on a damaged file
        raise InvalidInputError(f"{name} is not a readable JPEG image ({type(exc).__name__}).") from None


def _check_map(data: bytes, name: str, units: int, per_unit: int) -> None:
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # numpy raises many kinds of error on a damaged file
        raise InvalidInputError(f"{name} is not a readable .npy array ({type(exc).__name__}).") from None
    if (not isinstance(array, np.ndarray) or array.dtype not in (np.float16, np.float32) or array.ndim != 4
            or array.shape[0] < units or array.shape[1] > per_unit or max(array.shape[2:]) > MAX_MAP_SIDE):
        raise InvalidInputError(
            f"{name} holds an array of type {getattr(array, 'dtype', '?')} and shape "
            f"{getattr(array, 'shape', '?')}; expected float16 (units ≥ {units}, images ≤ {per_unit}, "
            f"height, width ≤ {MAX_MAP_SIDE})."
        )
    if not np.isfinite(array).all():
        raise InvalidInputError(f"{name} holds values that are not finite.")


# Errors zipfile raises on a damaged or unsupported member.
_MEMBER_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError)


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, what: str, limit: int) -> bytes:
    """A member's bytes, refusing one larger than ``limit`` or larger than it declares."""
    if info.file_size > limit:
        raise _refuse(what, f"the member {info.filename!r} is {_size(info.file_size)}, more than the "
                            f"{_size(limit)} such a file may be.")
    try:
        with archive.open(info) as handle:
            data = handle.read(info.file_size + 1)
    except _MEMBER_ERRORS as exc:
        raise _refuse(what, f"the member {info.filename!r} cannot be read ({exc}).") from None
    if len(data) > info.file_size:
        raise _refuse(what, f"the member {info.filename!r} expands beyond its declared size.")
    return data


def _extract(archive: zipfile.ZipFile, staging: Path, what: str, total: int) -> None:
    """Write every member under ``staging`` (``runs/<folder>/x`` → ``<folder>/x``),
    counting the bytes actually written: declared sizes can lie."""
    written_total = 0
    for info in archive.infolist():
        if info.is_dir() or info.filename == BUNDLE_FILE:
            continue
        parts = info.filename.split("/")
        target = staging.joinpath(*parts[1:])
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, open(target, "xb") as out:
                written = 0
                while chunk := source.read(1 << 20):
                    written += len(chunk)
                    written_total += len(chunk)
                    if written > info.file_size or written_total > total:
                        raise _refuse(what, f"the member {info.filename!r} expands beyond its declared size.")
                    out.write(chunk)
        except _MEMBER_ERRORS as exc:
            raise _refuse(what, f"the member {info.filename!r} cannot be read ({exc}).") from None
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            raise _refuse(what, f"the member {info.filename!r} clashes with another member's folder.") from None
    with archive.open(BUNDLE_FILE) as source:
        (staging / BUNDLE_FILE).write_bytes(source.read(MAX_BUNDLE_JSON_BYTES + 1))

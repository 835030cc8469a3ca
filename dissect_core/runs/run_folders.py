"""Run folders: writing them, and reading them back along with the reference tool's CSVs.

A run folder written by this project holds

* ``descriptions.csv``: ``layer,unit,description,similarity``, 0-based units, layers in
  the requested order: byte-for-byte the reference tool's format;
* ``args.txt``: the run's arguments as JSON, with the reference's keys;
* ``manifest.json``: configuration, cache keys, probe set, versions, timings;
* ``top_concepts.csv``: ``layer,unit,rank,concept,score``, the 5 best concepts per unit;
* ``top_images.csv``: ``layer,unit,rank,image_index,activation``, the most activating
  probe images per unit (indices into the probe set named in the manifest);
* ``unit_stats.csv``: ``layer,unit,mask_threshold``, the top-0.5 % activation level
  used to draw Network-Dissection masks;
* ``maps/``: each unit's activation maps on its top images (``dissect_core.engine.unit_views``);
* ``label_quality.csv``, ``label_quality_layers.csv``, ``label_quality_points.npz``: how
  far each label can be trusted (see ``dissect_core.runs.quality_tables``).

The reference tool writes only the first two files; ``load_run`` accepts both.

A run folder is finished only when all its files are written: ``new_run_dir``
puts an ``INCOMPLETE_FILE`` marker in the new folder and ``write_run`` removes it
after the last file (the manifest) is in place, so a run that was killed or ran
out of disk while writing is listed by ``find_runs`` as incomplete, never as a
finished run. Side tables and JSON files are checked as they are read
(``run_tables``); a folder that fails is listed as damaged with the reason.
"""
from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from pathlib import Path
from typing import Optional, Union

import pandas as pd

from dissect_core.common.errors import (
    DissectError,
    InvalidInputError,
    MissingResourceError,
)
from dissect_core.common.files import atomic_write_bytes, atomic_write_text
from dissect_core.runs.formats import (
    CLIP_DISSECT,
    DESCRIPTION_COLUMNS,
    NETDISSECT,
    RESULT_FORMATS,
    detect_format,
    layer_order,
    netdissect_model_and_layer,
    read_descriptions,
    read_header,
)
from dissect_core.runs.manifest import (
    MANIFEST_FILE,
    DamagedRunError,
    RunManifest,
    RunSources,
)
from dissect_core.runs.quality_tables import (
    LABEL_QUALITY_FILE,
    LAYER_QUALITY_FILE,
    QUALITY_POINTS_FILE,
    left_out_note,
    match_descriptions,
    read_label_quality,
    read_layer_quality,
)
from dissect_core.runs.run import Run, make_labels_unique, run_label
from dissect_core.runs.side_tables import check_layer_name, read_side_table

DESCRIPTIONS_FILE = "descriptions.csv"


ARGS_FILE = "args.txt"


TOP_CONCEPTS_FILE = "top_concepts.csv"


TOP_IMAGES_FILE = "top_images.csv"


UNIT_STATS_FILE = "unit_stats.csv"


# Stored activation maps (dissect_core.engine.unit_views) and, in runs imported from a results
# bundle, thumbnails of the units' top images (dissect_core.runs.bundle_format).
MAPS_DIR = "maps"
THUMBNAILS_DIR = "thumbnails"
LABELS_FILE = "labels.json"
VIEWS_FILE = "views.json"
# In a sweep's folder (dissect_core.runs.sweep_index): its runs in order.
SWEEP_FILE = "sweep.json"


def thumbnails_dir(run_dir: Optional[Path]) -> Optional[Path]:
    """A run's thumbnails: its own, else those its sweep's folder shares among its runs (the
    built-in demo's training sweep); None for a run without any."""
    if run_dir is None:
        return None
    own, sweep = Path(run_dir) / THUMBNAILS_DIR, Path(run_dir).parent
    if own.is_dir():
        return own
    if (sweep / THUMBNAILS_DIR).is_dir() and (sweep / SWEEP_FILE).is_file():
        return sweep / THUMBNAILS_DIR
    return None


INCOMPLETE_FILE = ".incomplete"


# Hidden folders of work in progress (bundle imports) that hold run files.
STAGING_PREFIXES = (".importing-",)


class IncompleteRunError(InvalidInputError):
    """A run folder whose writing never finished (the run was killed or the disk filled up)."""


def _read_optional_table(folder: Path, name: str, descriptions: pd.DataFrame) -> Optional[pd.DataFrame]:
    """A run's side table, checked (``run_tables.read_side_table``), or None when absent."""
    path = folder / name
    if not path.is_file():
        return None
    return read_side_table(path.read_bytes(), name, descriptions)


def read_json_object(path: Path) -> dict:
    """A JSON object from a file; {} when the file is absent, unreadable or not an object."""
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def read_args(path: Path) -> dict:
    """``args.txt`` (JSON, as the reference tool writes it); {} when there is none.
    A file that is not a JSON object is a DamagedRunError."""
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DamagedRunError(f"{path} is not a JSON object of run arguments ({exc}).") from None
    if not isinstance(value, dict):
        raise DamagedRunError(f"{path} holds a JSON {type(value).__name__}, not an object of run arguments.")
    return value


def refuse_imported(sources: RunSources) -> None:
    """Raise for a run imported from a bundle: the paths and settings in its manifest
    name another machine's files, so no probe set, model or cache may be opened from them."""
    if sources.imported:
        raise InvalidInputError(
            "This run was imported from a results bundle: it is read-only and shows what the bundle "
            "holds (labels, and the stored thumbnails and maps). To compute more for it, run the "
            "dissection on this machine."
        )


def load_run(path: Union[str, Path]) -> Run:
    """Load a run folder, or one result file of any supported method (``RESULT_FORMATS``)."""
    path = Path(path)
    csv_path = path / DESCRIPTIONS_FILE if path.is_dir() else path
    folder = csv_path.parent
    own_folder = csv_path.name == DESCRIPTIONS_FILE  # args.txt and the rest belong to this file
    if own_folder and (folder / INCOMPLETE_FILE).exists():
        raise IncompleteRunError(
            f"The run in {folder.name} is incomplete: it stopped while its files were being written "
            "(killed, or out of disk space). Run the dissection again (finished stages come from the "
            "cache) and delete this folder."
        )
    descriptions = read_descriptions(csv_path)
    args = read_args(folder / ARGS_FILE) if own_folder else {}
    manifest = RunManifest.read(folder) if own_folder and (folder / MANIFEST_FILE).exists() else None
    if manifest is not None:  # a computed run's layers name its files (maps/<layer>.npy)
        for layer in layer_order(descriptions):
            check_layer_name(layer, DESCRIPTIONS_FILE, "Real module paths never look like that: the file was "
                             "changed by hand or by another tool. Recompute the run.")
    stated = args.get("method")  # from a file: only a known method counts
    known = {entry.value.method for entry in RESULT_FORMATS}
    method = stated if stated in known else descriptions.attrs["method"]
    if descriptions.attrs["method"] == NETDISSECT:
        args = {"target_model": netdissect_model_and_layer(csv_path.name)[0] or folder.name, "method": method}
    elif method != CLIP_DISSECT and not own_folder:
        # Kept in args so that a bundle (which writes args.txt) carries the name and method along.
        args = {"target_model": csv_path.stem, "method": method}
    fallback = folder.name if own_folder else csv_path.stem
    label_quality = layer_quality = None
    left_out: dict[str, str] = {}
    if own_folder:
        points = folder / QUALITY_POINTS_FILE
        label_quality, layer_quality, left_out = match_descriptions(
            _read_optional(folder / LABEL_QUALITY_FILE, read_label_quality),
            _read_optional(folder / LAYER_QUALITY_FILE, read_layer_quality),
            points if points.is_file() else None, descriptions)
    return Run(
        label=run_label(args, manifest, fallback, method, descriptions),
        descriptions=descriptions,
        path=folder,
        args=args,
        manifest=manifest,
        top_concepts=_read_optional_table(folder, TOP_CONCEPTS_FILE, descriptions) if own_folder else None,
        top_images=_read_optional_table(folder, TOP_IMAGES_FILE, descriptions) if own_folder else None,
        unit_stats=_read_optional_table(folder, UNIT_STATS_FILE, descriptions) if own_folder else None,
        method=method,
        notes=list(descriptions.attrs["notes"]) + [left_out_note(layer, why) for layer, why in left_out.items()],
        files=(csv_path,),
        label_quality=label_quality,
        layer_quality=layer_quality,
        quality_left_out=left_out,
    )


def _read_optional(path: Path, reader):
    return reader(path.read_bytes(), path.name) if path.is_file() else None


def _natural_key(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _merge_netdissect(model: str, layers: list[Run], folder: Optional[Path]) -> Run:
    """One model's per-layer NetDissect runs as one run, layers in natural name order."""
    layers = sorted(layers, key=lambda run: _natural_key(run.layers[0]))
    args = {"target_model": model, "method": NETDISSECT}
    descriptions = pd.concat([run.descriptions for run in layers], ignore_index=True)
    return Run(
        label=run_label(args, None, model, NETDISSECT, descriptions),
        descriptions=descriptions,
        path=folder,
        args=args,
        method=NETDISSECT,
        notes=[note for run in layers for note in run.notes],
        files=tuple(file for run in layers for file in run.files),
    )


def _group_netdissect(runs: list[Run]) -> list[Run]:
    """Merge single-layer NetDissect runs of one model and folder (files MODEL_LAYER.csv)
    into one run, placed where its first file was. A group that names a layer twice (the
    same file given twice) is left as it is."""
    def key(run: Run) -> Optional[tuple]:
        model = run.args.get("target_model")
        single = run.method == NETDISSECT and run.manifest is None and len(run.layers) == 1
        return (run.path, model) if single and model else None

    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        if key(run) is not None:
            groups.setdefault(key(run), []).append(run)
    merged = []
    for run in runs:
        group = groups.get(key(run)) if key(run) is not None else None
        layers = [other.layers[0] for other in group] if group else []
        if group is None or len(group) == 1 or len(set(layers)) < len(layers):
            merged.append(run)
        elif run is group[0]:
            merged.append(_merge_netdissect(run.args["target_model"], group, run.path))
    return merged


# Run-folder side tables: never result files themselves.
_SIDE_TABLES = {TOP_CONCEPTS_FILE, TOP_IMAGES_FILE, UNIT_STATS_FILE, LABEL_QUALITY_FILE, LAYER_QUALITY_FILE}


def find_runs(root: Union[str, Path]) -> tuple[list[Run], list[tuple[Path, str]]]:
    """Every supported result file under ``root`` at any depth (``RESULT_FORMATS``).

    Run folders' ``descriptions.csv`` are read with their side files; other CSVs are read
    when their header is a result file's (or close to one); one model's NetDissect files
    in one folder become one run. Returns the runs (with labels made unique) and, for
    files that are not finished runs, ``(path, reason)`` pairs: incomplete runs (their
    writing was interrupted) and damaged ones, with what is wrong, so one bad file never
    hides the others.
    """
    root = Path(root)
    runs: list[Run] = []
    problems: list[tuple[Path, str]] = []
    for csv_path in sorted(root.rglob("*.csv")):
        parts = csv_path.relative_to(root).parts
        if csv_path.name == DESCRIPTIONS_FILE and any(part.startswith(STAGING_PREFIXES) for part in parts):
            problems.append((csv_path, "Incomplete: a bundle import that was interrupted or is under way "
                                       "(the next import removes what an interrupted one left)."))
            continue
        if any(part.startswith(".") for part in parts) or csv_path.name in _SIDE_TABLES:
            continue
        try:
            if csv_path.name != DESCRIPTIONS_FILE and detect_format(read_header(csv_path)) is None:
                continue  # some other CSV, not a result file
            runs.append(load_run(csv_path))
        except (DissectError, ValueError) as exc:  # incomplete or damaged, whatever the cause
            problems.append((csv_path, str(exc)))
        except OSError as exc:  # unreadable (permissions, vanished while scanning)
            problems.append((csv_path, f"cannot be read: {exc.strerror or exc}."))
    runs = _group_netdissect(runs)
    make_labels_unique(runs)
    return runs, problems


def load_runs(paths: list[Union[str, Path]]) -> list[Run]:
    """Runs from run folders, result files and folders of result files (e.g. a model's
    NetDissect layer files), for commands that take several. Raises ``InvalidInputError``
    naming every path that holds no readable run."""
    runs: list[Run] = []
    problems: list[str] = []
    for path in map(Path, paths):
        if path.is_dir() and not (path / DESCRIPTIONS_FILE).is_file():
            found, bad = find_runs(path)
            runs += found
            problems += [f"{file}: {reason}" for file, reason in bad]
            if not found and not bad:
                problems.append(f"{path}: no result file in this folder.")
            continue
        try:
            runs.append(load_run(path))
        except (InvalidInputError, MissingResourceError) as exc:
            problems.append(f"{path}: {exc}")
    if problems:
        raise InvalidInputError("Cannot read every run: " + " | ".join(problems))
    runs = _group_netdissect(runs)
    make_labels_unique(runs)
    return runs


def runs_from_files(files: list[tuple[str, bytes]]) -> tuple[list[Run], list[tuple[str, str]]]:
    """Runs from loose result files given as (file name, contents), e.g. uploads.

    One model's NetDissect files (MODEL_LAYER.csv) become one run. Returns the runs and,
    for files that could not be read, ``(file name, reason)`` pairs.
    """
    runs: list[Run] = []
    problems: list[tuple[str, str]] = []
    for name, data in files:
        try:
            descriptions = read_descriptions(data, name=name)
        except InvalidInputError as exc:
            problems.append((name, str(exc)))
            continue
        method = descriptions.attrs["method"]
        model = netdissect_model_and_layer(name)[0] if method == NETDISSECT else ""
        args = {"target_model": model, "method": method} if model else {}
        runs.append(Run(label=run_label(args, None, Path(name).name, method, descriptions), descriptions=descriptions,
                        args=args, method=method, notes=list(descriptions.attrs["notes"])))
    return _group_netdissect(runs), problems


def new_run_dir(result_dir: Union[str, Path], target_model: str) -> Path:
    """A fresh run folder that cannot collide with another run's (seconds + random suffix)."""
    safe_model = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in target_model)
    stamp = datetime.now().strftime("%y_%m_%d_%H_%M_%S")
    run_dir = Path(result_dir) / f"{safe_model}_{stamp}_{uuid.uuid4().hex[:6]}"
    run_dir.mkdir(parents=True, exist_ok=False)
    (run_dir / INCOMPLETE_FILE).touch()  # removed by write_run once every file is written
    return run_dir


def format_similarity(value: float) -> str:
    """The shortest text that reads back as the same float32, as the reference writes scores."""
    import numpy as np

    return str(np.float32(value))


def write_frame(path: Path, frame: pd.DataFrame) -> None:
    atomic_write_text(path, frame.to_csv(index=False, lineterminator="\n"))


def write_run(
    run_dir: Path,
    descriptions: pd.DataFrame,
    *,
    args: dict,
    manifest: Optional[RunManifest],
    top_concepts: Optional[pd.DataFrame] = None,
    top_images: Optional[pd.DataFrame] = None,
    unit_stats: Optional[pd.DataFrame] = None,
    extra_files: Optional[dict[str, bytes]] = None,
) -> Path:
    """Write every file of a run folder, each atomically, the manifest last; then
    remove the folder's ``INCOMPLETE_FILE`` marker: only now is the run finished."""
    out = descriptions[list(DESCRIPTION_COLUMNS)].copy()
    out["similarity"] = [format_similarity(v) for v in out["similarity"]]
    (run_dir / INCOMPLETE_FILE).touch()  # for folders not made by new_run_dir
    for name, data in (extra_files or {}).items():
        atomic_write_bytes(run_dir / name, data)
    write_frame(run_dir / DESCRIPTIONS_FILE, out)
    atomic_write_text(run_dir / ARGS_FILE, json.dumps(args, indent=2))
    for name, frame in (
        (TOP_CONCEPTS_FILE, top_concepts),
        (TOP_IMAGES_FILE, top_images),
        (UNIT_STATS_FILE, unit_stats),
    ):
        if frame is not None:
            write_frame(run_dir / name, frame)
    if manifest is not None:
        manifest.write(run_dir)
    (run_dir / INCOMPLETE_FILE).unlink()
    return run_dir

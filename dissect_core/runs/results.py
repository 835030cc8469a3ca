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

import csv
import hashlib
import io
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Optional, Union

import pandas as pd

from dissect_core.common.files import atomic_write_bytes, atomic_write_text
from dissect_core.common.errors import DissectError, InvalidInputError, MissingResourceError
from dissect_core.runs.manifest import MANIFEST_FILE, DamagedRunError, RunManifest, RunSources
from dissect_core.runs.quality_tables import (
    LABEL_QUALITY_FILE, LAYER_QUALITY_FILE, QUALITY_POINTS_FILE, left_out_note, match_descriptions,
    read_label_quality, read_layer_quality, read_quality_points,
)
from dissect_core.common.registry import Registry
from dissect_core.runs.side_tables import check_layer_name, read_side_table

DESCRIPTION_COLUMNS = ("layer", "unit", "description", "similarity")
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
INCOMPLETE_FILE = ".incomplete"
# Hidden folders of work in progress (bundle imports) that hold run files.
STAGING_PREFIXES = (".importing-",)

PathOrFile = Union[str, Path, bytes, IO[bytes]]


# --------------------------------------------------------------------------- reading CSVs

CLIP_DISSECT = "CLIP-Dissect"
NETDISSECT = "NetDissect"
MILAN = "MILAN"
# How pages name the method of a run whose concepts are its probe images' labels (the
# "labels" concept source): CLIP-Dissect's scoring, but no CLIP model and no text.
PROBE_LABELS = "probe labels"


@dataclass(frozen=True)
class ResultFormat:
    """A result file format: the method that writes it and the columns it must have."""

    method: str
    columns: tuple[str, ...]
    score: Optional[str]  # what the similarity column holds, in words; None: no score


RESULT_FORMATS: Registry[ResultFormat] = Registry("result format")
RESULT_FORMATS.add(
    "clip_dissect", ResultFormat(CLIP_DISSECT, DESCRIPTION_COLUMNS, "similarity"),
    "CLIP-Dissect's descriptions.csv (this project's and the reference tool's): 0-based units, "
    "one file for all layers",
)
RESULT_FORMATS.add(
    "netdissect", ResultFormat(NETDISSECT, ("unit", "category", "label", "score"), "IoU"),
    "NetDissect-Lite's per-layer result, one file per layer named MODEL_LAYER.csv: 1-based units "
    "(read as 0-based), the IoU as the score, the Broden category kept",
)
RESULT_FORMATS.add(
    "milan", ResultFormat(MILAN, ("layer", "unit", "description"), None),
    "MILAN's descriptions: 0-based units, one file for all layers, no score",
)

# NetDissect-Lite's per-category detail columns (``color-label``, ``object-iou``, ...):
# part of the format, so dropped without a note.
_NETDISSECT_DETAIL = re.compile(r"[A-Za-z_]+-(label|truth|activation|intersect|iou)")
# Broden marks scene and colour labels with a suffix ("kitchen-s", "red-c"); the category
# column says the same, so the suffix is dropped where it agrees with the category and the
# label reads like the other methods' concepts.
_BRODEN_SUFFIX = {"scene": "-s", "color": "-c"}


def _read_bytes(source: PathOrFile) -> tuple[bytes, str]:
    if isinstance(source, bytes):
        return source, "uploaded file"
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise MissingResourceError(f"Descriptions file {path.name}", str(path), "Check the path.")
        return path.read_bytes(), path.name
    data = source.read()
    if isinstance(data, str):
        data = data.encode("utf-8")
    return data, Path(str(getattr(source, "name", "") or "uploaded file")).name


def _supported_headers() -> str:
    return "; ".join(f"{fmt.value.method} '{','.join(fmt.value.columns)}'" for fmt in RESULT_FORMATS)


def detect_format(columns: list[str]) -> Optional[ResultFormat]:
    """The format whose columns are all present (CLIP-Dissect first), else the format the
    header comes closest to (at least two of its columns), else ``None``."""
    for entry in RESULT_FORMATS:
        if all(column in columns for column in entry.value.columns):
            return entry.value
    hits = [(sum(column in columns for column in e.value.columns), e.value) for e in RESULT_FORMATS]
    best_hits, best = max(hits, key=lambda pair: pair[0])  # max keeps the first of equals
    return best if best_hits >= 2 else None


def netdissect_model_and_layer(file_name: str) -> tuple[str, str]:
    """``MODEL_LAYER.csv`` → (MODEL, LAYER), split at the last underscore; a name without
    one is taken as the layer alone (model ``""``)."""
    stem = Path(file_name).stem
    model, _, layer = stem.rpartition("_")
    return model, layer


def read_header(source: PathOrFile) -> list[str]:
    """The column names of a CSV's first line (byte-order mark ignored); [] if unreadable."""
    if isinstance(source, (str, Path)):
        with open(source, "rb") as handle:
            first = handle.readline(65536)
    else:
        first = _read_bytes(source)[0].split(b"\n", 1)[0]
    try:
        line = first.decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        return []
    return next(csv.reader([line]), []) if line else []


def read_descriptions(source: PathOrFile, name: Optional[str] = None) -> pd.DataFrame:
    """Read a result file of any supported method into the standard frame.

    Returns columns ``layer`` (str), ``unit`` (int, 0-based), ``description`` (str) and
    ``similarity`` (float: the method's score, NaN where it has none), plus ``category``
    (str) for NetDissect; rows in file order. ``frame.attrs["method"]`` names the method
    (see ``RESULT_FORMATS``) and ``frame.attrs["notes"]`` lists what was ignored. ``name``
    overrides the file name (a NetDissect file's layer comes from it). Anything that is
    not such a file raises ``InvalidInputError`` saying what is wrong and how to fix it.
    """
    data, read_name = _read_bytes(source)
    name = name or read_name
    if data.startswith(b"\xef\xbb\xbf"):  # Excel's "CSV UTF-8" starts with a byte-order mark
        data = data[3:]
    if not data.strip():
        raise InvalidInputError(
            f"{name} is empty. A descriptions CSV starts with the header 'layer,unit,description,similarity'."
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(
            f"{name} is not UTF-8 text (byte {exc.start} is 0x{data[exc.start]:02x}). "
            "Is it a spreadsheet or a binary file? Export it as a UTF-8 CSV."
        ) from None

    try:
        # keep_default_na=False: concepts such as "null" or "na" must stay strings.
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InvalidInputError(f"{name} is not a readable CSV: {exc}") from None

    columns = [str(c) for c in frame.columns]
    fmt = detect_format(columns)
    if fmt is None:
        raise InvalidInputError(
            f"{name} is not a result file: its header is '{','.join(columns)}'. "
            f"Supported headers: {_supported_headers()}."
        )
    missing = [c for c in fmt.columns if c not in columns]
    if missing:
        raise InvalidInputError(
            f"{name} looks like a {fmt.method} file but lacks the column(s) "
            f"{', '.join(repr(c) for c in missing)}: its header must contain '{','.join(fmt.columns)}' "
            f"(found '{','.join(columns)}')."
        )
    if frame.empty:
        raise InvalidInputError(f"{name} has a header but no rows.")
    known = set(fmt.columns) | ({"category"} if fmt.method == CLIP_DISSECT else set())
    ignored = [c for c in columns if c not in known
               and not (fmt.method == NETDISSECT and _NETDISSECT_DETAIL.fullmatch(c))]
    notes = [f"{name}: ignored the column(s) {', '.join(repr(c) for c in ignored)}."] if ignored else []

    def line_of(mask: pd.Series) -> tuple[int, int]:
        row = int(mask.to_numpy().nonzero()[0][0])
        return row + 2, row  # +2: 1-based lines and the header line

    if fmt.method == NETDISSECT:
        model, layer = netdissect_model_and_layer(name)
        if not layer:
            raise InvalidInputError(
                f"{name} is a NetDissect file, whose layer comes from the file name: name it MODEL_LAYER.csv "
                "(e.g. resnet18_places365_layer4.csv)."
            )
        category = frame["category"].astype(str)
        label = frame["label"].astype(str)
        suffix = category.map(_BRODEN_SUFFIX).fillna("\0")
        strip = pd.Series([lbl.endswith(s) for lbl, s in zip(label, suffix)], index=frame.index, dtype=bool)
        label = label.where(~strip, label.str[:-2])
        standard = pd.DataFrame({"layer": layer, "unit": frame["unit"], "description": label,
                                 "similarity": frame["score"], "category": category})
        first_unit = 1
    else:
        standard = frame[[c for c in ("layer", "unit", "description", "similarity", "category") if c in columns]]
        if fmt.method == MILAN:
            standard = standard.assign(similarity="nan")
        first_unit = 0

    if (standard["layer"].str.strip() == "").any():
        line, _ = line_of(standard["layer"].str.strip() == "")
        raise InvalidInputError(f"{name}, line {line}: the layer name is empty.")
    units = pd.to_numeric(standard["unit"], errors="coerce")
    bad_units = units.isna() | (units < first_unit) | (units % 1 != 0)
    if bad_units.any():
        line, row = line_of(bad_units)
        kind = "a positive whole number (NetDissect numbers units from 1)" if first_unit else \
            "a non-negative whole number"
        raise InvalidInputError(f"{name}, line {line}: unit {standard['unit'].iloc[row]!r} is not {kind}.")
    score_name = "score" if fmt.method == NETDISSECT else "similarity"
    similarity = pd.to_numeric(standard["similarity"], errors="coerce")
    written_nan = standard["similarity"].str.strip().str.lower().isin({"nan", "-nan"})
    bad_similarity = similarity.isna() & ~written_nan
    if bad_similarity.any():
        line, row = line_of(bad_similarity)
        raise InvalidInputError(
            f"{name}, line {line}: {score_name} {standard['similarity'].iloc[row]!r} is not a number."
        )
    if (standard["description"] == "").any():
        line, _ = line_of(standard["description"] == "")
        raise InvalidInputError(f"{name}, line {line}: the {'label' if first_unit else 'description'} is empty.")

    result = pd.DataFrame(
        {
            "layer": standard["layer"].astype(str),
            "unit": (units - first_unit).astype("int64"),
            "description": standard["description"].astype(str),
            "similarity": similarity.astype("float64"),
        }
    )
    if "category" in standard.columns:
        result["category"] = standard["category"].astype(str)
    duplicated = result.duplicated(["layer", "unit"])
    if duplicated.any():
        line, row = line_of(duplicated)
        raise InvalidInputError(
            f"{name}, line {line}: unit {int(units.iloc[row])} of layer "
            f"{result['layer'].iloc[row]!r} appears twice."
        )
    result.attrs["method"] = fmt.method
    result.attrs["notes"] = notes
    return result


def layer_order(descriptions: pd.DataFrame) -> list[str]:
    """Layers in the order they first appear (the order they were requested)."""
    return list(dict.fromkeys(descriptions["layer"]))


# --------------------------------------------------------------------------- runs

@dataclass
class Run:
    """One model's dissection: descriptions plus whatever extras the folder holds."""

    label: str
    descriptions: pd.DataFrame
    path: Optional[Path] = None
    args: dict = field(default_factory=dict)  # args.txt as written (the reference tool's keys)
    manifest: Optional[RunManifest] = None  # None: not computed by this project
    top_concepts: Optional[pd.DataFrame] = None
    top_images: Optional[pd.DataFrame] = None
    unit_stats: Optional[pd.DataFrame] = None
    method: str = CLIP_DISSECT                   # which method made the labels (RESULT_FORMATS)
    notes: list[str] = field(default_factory=list)  # what reading the files ignored
    files: tuple[Path, ...] = ()                 # the result files read (several for NetDissect)
    label_quality: Optional[pd.DataFrame] = None
    layer_quality: Optional[pd.DataFrame] = None
    # Layers whose quality figures did not fit the labels and were left out on loading: why.
    quality_left_out: dict[str, str] = field(default_factory=dict)

    @property
    def layers(self) -> list[str]:
        return layer_order(self.descriptions)

    @property
    def target_model(self) -> str:
        return self.manifest.target_model if self.manifest else str(self.args.get("target_model") or self.label)

    @property
    def probe_name(self) -> Optional[str]:
        return self.manifest.probe.name if self.manifest else self.args.get("d_probe")

    @property
    def concept_set_name(self) -> Optional[str]:
        concept_set = self.manifest.concept_set.name if self.manifest else self.args.get("concept_set")
        return Path(concept_set).stem if concept_set else None

    @property
    def labelled(self) -> bool:
        """Whether the run's concepts are its probe images' labels (the "labels" concept
        source) instead of texts matched to the images by CLIP."""
        return self.manifest is not None and self.manifest.config.get("concept_source", "clip") != "clip"

    @property
    def method_name(self) -> str:
        """The method in the pages' words: ``method``, or ``PROBE_LABELS`` for labelled runs."""
        return PROBE_LABELS if self.labelled else self.method

    @property
    def clip_model(self) -> Optional[str]:
        """The CLIP model that matched images and concepts; None for labelled runs (no CLIP)."""
        if self.labelled:
            return None
        return self.manifest.clip_model if self.manifest else self.args.get("clip_model")

    @property
    def similarity_fn(self) -> Optional[str]:
        return self.manifest.similarity_fn if self.manifest else self.args.get("similarity_fn")

    @property
    def sources(self) -> Optional[RunSources]:
        """What the run's probe images and model are reopened from; None without a manifest."""
        return self.manifest.sources() if self.manifest else None

    @property
    def score_name(self) -> Optional[str]:
        """What ``similarity`` holds for this run's method ("IoU" for NetDissect, "label score
        (soft_wpmi)" for labelled runs); None: no score."""
        if self.labelled:
            return f"label score ({self.similarity_fn})"
        return next((e.value.score for e in RESULT_FORMATS if e.value.method == self.method), "similarity")

    def match_name(self, concept: str) -> str:
        """What the label-quality scatter and correlation measure of an image against
        ``concept``: its CLIP similarity, or for labelled runs whether it carries the label."""
        return f"image carries '{concept}' (0 = no)" if self.labelled else f"CLIP similarity to '{concept}'"

    @property
    def similarity_top_k(self) -> Optional[int]:
        """How many of a unit's top images its label was chosen from (the similarity
        function's ``top_k``, as the manifest records it); None when the function has none."""
        top_k = self.manifest.similarity_params.get("top_k") if self.manifest else None
        return int(top_k) if isinstance(top_k, (int, float)) and top_k >= 1 else None

    @property
    def imported(self) -> bool:
        """Whether the run came from a results bundle: read-only and self-contained."""
        return self.manifest is not None and self.manifest.imported is not None

    @property
    def from_reference_tool(self) -> bool:
        """True for runs this project did not compute (no manifest): labels only."""
        return self.manifest is None

    def units(self, layer: str) -> pd.DataFrame:
        """The layer's rows of ``descriptions``, by unit."""
        return self.descriptions[self.descriptions["layer"] == layer].sort_values("unit")

    def unit_top_concepts(self, layer: str, unit: int) -> pd.DataFrame:
        """The unit's best concepts with scores, ranked from 1 (the label); only the label
        for reference-tool CSVs."""
        if self.top_concepts is not None:
            rows = self.top_concepts[(self.top_concepts["layer"] == layer) & (self.top_concepts["unit"] == unit)]
            rows = rows.sort_values("rank")[["rank", "concept", "score"]].reset_index(drop=True)
            return rows.assign(rank=rows["rank"] + 1)
        row = self.descriptions[(self.descriptions["layer"] == layer) & (self.descriptions["unit"] == unit)]
        return pd.DataFrame({"rank": [1] * len(row), "concept": row["description"].tolist(),
                             "score": row["similarity"].tolist()})

    def unit_top_images(self, layer: str, unit: int, count: int) -> pd.DataFrame:
        """The unit's ``count`` most activating probe images (``rank, image_index, activation``)."""
        if self.top_images is None:
            return pd.DataFrame(columns=["rank", "image_index", "activation"])
        rows = self.top_images[(self.top_images["layer"] == layer) & (self.top_images["unit"] == unit)]
        return rows.sort_values("rank").head(count)[["rank", "image_index", "activation"]]

    def quality_points(self, layer: str) -> Optional[tuple]:
        """The scatter data of ``layer`` (probe indices, activations, label similarities; images
        × units), or None when the run has no quality figures for it."""
        if self.layer_quality is None or self.path is None or layer not in set(self.layer_quality["layer"]):
            return None
        path = self.path / QUALITY_POINTS_FILE
        if not path.is_file():
            return None
        # Numbered in the file's layer order, which holds any layer left out on loading too.
        layers = list(read_layer_quality((self.path / LAYER_QUALITY_FILE).read_bytes())["layer"])
        return read_quality_points(path.read_bytes(), len(layers))[layers.index(layer)]

    def quality_absent_reason(self, layer: Optional[str] = None) -> Optional[str]:
        """Why the run (or its ``layer``) has no label-quality figures (None when it has them)."""
        if layer in self.quality_left_out:
            return f"they did not fit this layer's labels and were left out ({self.quality_left_out[layer]})."
        if self.label_quality is not None:
            return None
        if self.from_reference_tool:
            return ("imported from a result file: its activations and CLIP features were never "
                    "available here, so stability and correlation cannot be computed.")
        reason = self.manifest.label_quality.get("skipped")
        if reason:
            return str(reason)
        return "made before label-quality figures existed (or they were not exported); recompute the run."

    def mask_threshold(self, layer: str, unit: int) -> Optional[float]:
        """The unit's top-0.5 % activation level, if it was recorded and the layer is spatial."""
        if self.unit_stats is None:
            return None
        rows = self.unit_stats[(self.unit_stats["layer"] == layer) & (self.unit_stats["unit"] == unit)]
        if rows.empty or pd.isna(rows["mask_threshold"].iloc[0]):
            return None
        return float(rows["mask_threshold"].iloc[0])


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


MAX_RUN_NAME_CHARS = 120


def refuse_imported(sources: RunSources) -> None:
    """Raise for a run imported from a bundle: the paths and settings in its manifest
    name another machine's files, so no probe set, model or cache may be opened from them."""
    if sources.imported:
        raise InvalidInputError(
            "This run was imported from a results bundle: it is read-only and shows what the bundle "
            "holds (labels, and the stored thumbnails and maps). To compute more for it, run the "
            "dissection on this machine."
        )


def layer_span(layers: list[str]) -> str:
    """The layers in a name: one or two by name, more as first–last (in their order)."""
    if len(layers) <= 2:
        return ", ".join(layers)
    return f"{layers[0]}–{layers[-1]}"


def unit_count(units: int) -> str:
    return f"{units:,} unit" + ("" if units == 1 else "s")


def run_label(args: dict, manifest: Optional[RunManifest], fallback: str, method: str = CLIP_DISSECT,
              descriptions: Optional[pd.DataFrame] = None) -> str:
    """A default display name from what the run carries: model (and its checkpoint file when
    it is not the model's own weights) · layers · probe set · concept set, then the method
    when it is not CLIP-Dissect. Without a model name (a loose result file), ``fallback``
    (the file or folder name) · layers · unit count. A run given a name
    (``DescribeConfig.run_name``) is shown by that name."""
    name = manifest.config.get("run_name") if manifest is not None else None
    if isinstance(name, str) and name.strip():
        return name.strip()[:MAX_RUN_NAME_CHARS]
    if manifest is not None:
        model, probe, concepts = manifest.target_model, manifest.probe.name, manifest.concept_set.name
        checkpoint = manifest.target_checkpoint
    else:
        model, probe, concepts = args.get("target_model"), args.get("d_probe"), args.get("concept_set")
        checkpoint = args.get("target_checkpoint")
    layers = layer_span(layer_order(descriptions)) if descriptions is not None else ""
    if model:
        parts = [f"{model} ({Path(str(checkpoint)).name})" if checkpoint else str(model), layers]
        parts += [str(probe) if probe else "", Path(str(concepts)).stem if concepts else ""]
    else:
        units = unit_count(len(descriptions)) if descriptions is not None else ""
        parts = [fallback, layers, units]
    if method != CLIP_DISSECT:
        parts.append(method)
    return " · ".join(part for part in parts if part)


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


def content_digest(descriptions: pd.DataFrame) -> str:
    """A short digest of a run's labels (layer, unit, description, score): equal for equal files."""
    values = pd.util.hash_pandas_object(descriptions[list(DESCRIPTION_COLUMNS)], index=False).to_numpy()
    return hashlib.sha256(values.tobytes()).hexdigest()[:6]


# What tells runs of one name apart, tried in this order: the first that differs between
# every run of the name is added to each of their names.
_DISTINGUISHERS = (
    lambda run: run.similarity_fn and str(run.similarity_fn),
    lambda run: run.clip_model and f"CLIP {run.clip_model}",
    lambda run: unit_count(len(run.descriptions)),
    lambda run: "layers " + ", ".join(run.layers),
    lambda run: run.path is not None and run.path.name,
    lambda run: f"labels {content_digest(run.descriptions)}",
)


def make_labels_unique(runs: list[Run]) -> None:
    """Tell runs of one name apart by what differs between them.

    Each group of equal labels gets, from ``_DISTINGUISHERS``, the first trait that is
    known and different for every run in the group (similarity function, CLIP model,
    unit count, layers, folder, a digest of the labels). Only runs with the same labels
    and nothing else to tell them apart get a counter.
    """
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.label, []).append(run)
    for label, group in groups.items():
        if len(group) == 1:
            continue
        for trait in _DISTINGUISHERS:
            values = [trait(run) for run in group]
            if all(values) and len(set(values)) == len(values):
                for run, value in zip(group, values):
                    run.label = f"{label} · {value}"
                break
    seen: set[str] = set()
    for run in runs:
        candidate, n = run.label, 2
        while candidate in seen:
            candidate, n = f"{run.label} #{n}", n + 1
        run.label = candidate
        seen.add(candidate)


# --------------------------------------------------------------------------- writing

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

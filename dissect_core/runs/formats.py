"""Descriptions tables in every format this project reads: its own ``descriptions.csv``
(byte for byte the reference CLIP-Dissect tool's), NetDissect-Lite's per-layer results and
MILAN's descriptions, each registered once in :data:`RESULT_FORMATS`. Every file is untrusted:
:func:`read_descriptions` checks each row and says what is wrong and where.
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Optional, Union

import pandas as pd

from dissect_core.common.errors import InvalidInputError, MissingResourceError
from dissect_core.common.registry import Registry

DESCRIPTION_COLUMNS = ("layer", "unit", "description", "similarity")


PathOrFile = Union[str, Path, bytes, IO[bytes]]


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

# The largest unit number read: 2**53 is the last whole number float64 holds exactly
# (pd.to_numeric reads a column of numbers as float64 once one is written as 1e30), and
# far above any layer's width, so a larger one is an error in the file, not a unit.
MAX_UNIT = 2**53


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
    if not isinstance(frame.index, pd.RangeIndex):
        # Every row has more fields than the header: pandas would take the first column as
        # the row index and shift each value into the next column's place.
        fields = len(frame.columns) + frame.index.nlevels
        raise InvalidInputError(
            f"{name}, line 2: {fields} fields, but the header names {len(frame.columns)} columns "
            f"('{','.join(map(str, frame.columns))}'). Remove the extra field (a comma at the end of each "
            "row?), or name its column in the header."
        )

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
    too_large = units > MAX_UNIT
    if too_large.any():
        line, row = line_of(too_large)
        raise InvalidInputError(
            f"{name}, line {line}: unit {standard['unit'].iloc[row]!r} ({units.iloc[row]:,.0f}) is larger "
            f"than any layer has: unit numbers go up to {MAX_UNIT:,}."
        )
    score_name = "score" if fmt.method == NETDISSECT else "similarity"
    similarity = pd.to_numeric(standard["similarity"], errors="coerce")
    written_nan = standard["similarity"].str.strip().str.lower().isin({"nan", "-nan"})
    bad_similarity = similarity.isna() & ~written_nan
    if bad_similarity.any():
        line, row = line_of(bad_similarity)
        raise InvalidInputError(
            f"{name}, line {line}: {score_name} {standard['similarity'].iloc[row]!r} is not a number."
        )
    infinite = similarity.abs() == float("inf")
    if infinite.any():
        line, row = line_of(infinite)
        raise InvalidInputError(
            f"{name}, line {line}: {score_name} {standard['similarity'].iloc[row]!r} is infinite. "
            f"Every {score_name} must be a finite number (or nan for none); was the file written from "
            "a failed computation?"
        )
    blank = standard["description"].str.strip() == ""
    if blank.any():
        line, _ = line_of(blank)
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

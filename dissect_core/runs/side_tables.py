"""Reading and checking a run folder's side tables and JSON files.

``top_concepts.csv``, ``top_images.csv`` and ``unit_stats.csv`` (see ``results``)
are checked like an upload whenever a run folder is loaded or a bundle imported:
exact columns, UTF-8 text, whole non-negative unit, rank and image numbers within
range, numeric scores, and only units that the run's descriptions name. A table
that fails raises ``InvalidInputError`` naming the file and line, so one damaged
run is listed with its reason and every other run keeps working.

``read_json_file`` reads ``args.txt``, ``manifest.json`` and a bundle's small JSON
files with bounds on size, depth and string length (``manifest.RunManifest`` then
checks the manifest's fields).
"""
from __future__ import annotations

import io
import json
import re
from typing import Any, Callable

import numpy as np
import pandas as pd

from dissect_core.common.errors import InvalidInputError

# Whole numbers above this are not unit, rank or image numbers (and 1e30 must not wrap).
MAX_INDEX = 2**31 - 1
MAX_JSON_BYTES = 4 * 1024**2
MAX_JSON_DEPTH = 12
MAX_JSON_STRING = 20_000
# Layer names become file names (maps/<layer>.npy): plain names only (layer_file_name).
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-\[\]]{0,127}")

_TEXT, _WHOLE, _NUMBER = "text", "whole", "number"
TABLE_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "top_concepts.csv": (("layer", _TEXT), ("unit", _WHOLE), ("rank", _WHOLE), ("concept", _TEXT),
                         ("score", _NUMBER)),
    "top_images.csv": (("layer", _TEXT), ("unit", _WHOLE), ("rank", _WHOLE), ("image_index", _WHOLE),
                       ("activation", _NUMBER)),
    "unit_stats.csv": (("layer", _TEXT), ("unit", _WHOLE), ("mask_threshold", _NUMBER)),
}
# The key that makes a row unique in each table.
_ROW_KEYS = {"top_concepts.csv": ["layer", "unit", "rank"], "top_images.csv": ["layer", "unit", "rank"],
             "unit_stats.csv": ["layer", "unit"]}


def is_safe_name(name: str) -> bool:
    """Whether ``name`` can be used as a file name as it is (no separators, no leading dot)."""
    return isinstance(name, str) and SAFE_NAME.fullmatch(name) is not None


PLAIN_LAYER = ("letters, digits and '_', '.', '-', '[', ']', starting with a letter, digit or '_'; "
               "at most 128 characters")


def check_layer_name(name: object, where: str, fix: str = "") -> str:
    """``name`` when it is a plain layer name, one that can name a file as it is;
    otherwise ``InvalidInputError`` starting with ``where`` (the file and field, or the
    setting, that gave the name) and ending with ``fix``.

    Real module paths (``layer4``, ``features.0``, ``layer4[1]``) are plain. A layer's
    files (``maps/<layer>.npy``) are named by :func:`layer_file_name`, so a name with a
    separator, ``..``, a NUL or a control character never picks a path.
    """
    if not is_safe_name(name):
        shown = repr(name[:80]) if isinstance(name, str) else f"of type {type(name).__name__}"
        raise InvalidInputError(f"{where}: the layer {shown} is not a plain module name ({PLAIN_LAYER}). {fix}".rstrip())
    return name


def layer_file_name(layer: str, extension: str) -> str:
    """The name of a layer's file in a run folder or bundle (``layer4.npy``): the one place
    that turns a layer name into a file name, for writers and readers alike."""
    return check_layer_name(layer, "A layer's file name", "No file is read or written for it.") + extension


def decode_text(data: bytes, name: str) -> str:
    """UTF-8 text without a byte-order mark, or ``InvalidInputError`` saying what it is instead."""
    if data.startswith(b"\xef\xbb\xbf"):
        raise InvalidInputError(f"{name} starts with a byte-order mark; save it as plain UTF-8 without one.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(
            f"{name} is not UTF-8 text (byte {exc.start} is 0x{data[exc.start]:02x})."
        ) from None


def read_side_table(data: bytes, name: str, descriptions: pd.DataFrame) -> pd.DataFrame:
    """A checked side table (``name`` is its file name, which picks the columns)."""
    columns = TABLE_COLUMNS[name]
    text = decode_text(data, name)
    try:
        # keep_default_na=False: a concept may be called "nan" or "null".
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InvalidInputError(f"{name} is not a readable CSV: {str(exc).strip()[:200]}") from None
    expected = [column for column, _ in columns]
    if [str(c) for c in frame.columns] != expected:
        raise InvalidInputError(
            f"{name} has the columns '{','.join(map(str, frame.columns))[:200]}'; expected exactly "
            f"'{','.join(expected)}'."
        )
    result = {}
    for column, kind in columns:
        values = frame[column]
        if kind == _TEXT:
            bad = values.str.strip() == ""
            if bad.any():
                raise InvalidInputError(f"{name}, line {_line(bad)}: the {column} is empty.")
            result[column] = values.astype(str)
        elif kind == _WHOLE:
            result[column] = _whole_numbers(values, name, column)
        else:
            numbers = pd.to_numeric(values, errors="coerce")
            # pandas writes NaN as an empty cell; the reference tool as "nan".
            written_nan = values.str.strip().str.lower().isin({"", "nan", "-nan"})
            bad = (numbers.isna() & ~written_nan) | np.isinf(numbers.fillna(0))
            if bad.any():
                raise InvalidInputError(
                    f"{name}, line {_line(bad)}: {column} {values[bad].iloc[0][:40]!r} is not a finite number."
                )
            result[column] = numbers.astype("float64")
    table = pd.DataFrame(result)
    duplicated = table.duplicated(_ROW_KEYS[name])
    if duplicated.any():
        raise InvalidInputError(f"{name}, line {_line(duplicated)}: this row's "
                                f"{'/'.join(_ROW_KEYS[name])} appears twice.")
    known = pd.MultiIndex.from_frame(descriptions[["layer", "unit"]])
    unknown = ~pd.MultiIndex.from_frame(table[["layer", "unit"]]).isin(known)
    if unknown.any():
        row = int(np.flatnonzero(unknown)[0])
        raise InvalidInputError(
            f"{name}, line {row + 2}: unit {table['unit'].iloc[row]} of layer {table['layer'].iloc[row][:80]!r} "
            "is not in the run's descriptions.csv."
        )
    return table


def _line(mask: pd.Series) -> int:
    return int(np.flatnonzero(mask.to_numpy())[0]) + 2  # 1-based, after the header


def _whole_numbers(values: pd.Series, name: str, column: str) -> pd.Series:
    """Whole numbers 0..MAX_INDEX written in ASCII digits (no 1e30, no '٣', no '4.0')."""
    bad = ~values.str.fullmatch(r"[0-9]{1,10}")
    if not bad.any():
        numbers = values.astype("int64")
        bad = numbers > MAX_INDEX
        if not bad.any():
            return numbers
    raise InvalidInputError(
        f"{name}, line {_line(bad)}: {column} {values[bad].iloc[0][:40]!r} is not a whole number "
        f"from 0 to {MAX_INDEX:,}."
    )


# --------------------------------------------------------------------------- JSON

def read_json_file(data: bytes, name: str) -> Any:
    """JSON from untrusted bytes, bounded in size, nesting and string length."""
    if len(data) > MAX_JSON_BYTES:
        raise InvalidInputError(f"{name} is {len(data):,} bytes; a run's JSON files are at most {MAX_JSON_BYTES:,}.")
    text = decode_text(data, name)
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except (json.JSONDecodeError, RecursionError, ValueError) as exc:
        raise InvalidInputError(f"{name} is not valid JSON ({str(exc)[:200]}).") from None
    _check_bounds(value, name, 0)
    return value


def _refuse_constant(text: str) -> Any:
    raise ValueError(f"{text} is not a JSON number")


def _check_bounds(value: Any, name: str, depth: int) -> None:
    if depth > MAX_JSON_DEPTH:
        raise InvalidInputError(f"{name} nests deeper than {MAX_JSON_DEPTH} levels.")
    if isinstance(value, str) and len(value) > MAX_JSON_STRING:
        raise InvalidInputError(f"{name} holds a text of {len(value):,} characters (at most {MAX_JSON_STRING:,}).")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_bounds(key, name, depth + 1)
            _check_bounds(item, name, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_bounds(item, name, depth + 1)


def _list_of(kind: type) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, list) and all(isinstance(item, kind) for item in value)


def check_args(args: Any, name: str) -> dict:
    """``args.txt``: an object of plain values (text, numbers, lists of text)."""
    if not isinstance(args, dict):
        raise InvalidInputError(f"{name} holds a JSON {type(args).__name__}, not an object.")
    for key, value in args.items():
        plain = value is None or isinstance(value, (str, int, float, bool)) or _list_of(str)(value)
        if not plain:
            raise InvalidInputError(f"{name}: the value of {key[:80]!r} is not plain text or a number.")
    return args



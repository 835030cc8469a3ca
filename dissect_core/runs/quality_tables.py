"""The files of a run's label-quality figures, and reading them back safely.

* ``label_quality.csv``: one row per unit, :data:`QUALITY_COLUMNS`;
* ``label_quality_layers.csv``: one row per layer, :data:`LAYER_COLUMNS`;
* ``label_quality_points.npz``: per layer (numbered in the layers file's order) the
  held-out probe images of the activation-vs-similarity scatter (``images_i``, probe
  indices), each unit's activation on them (``activation_i``) and its scored label's
  image–text cosine (``similarity_i``), float16, images × units.

The readers treat the bytes as untrusted (they may come from a bundle): wrong columns,
non-numbers, out-of-range values or mismatched arrays raise ``InvalidInputError``; the
archive is read without unpickling. :func:`match_descriptions` then keeps only the layers
whose figures are about the run's labels (same units, same labels): a run folder or bundle
whose quality files disagree with its ``descriptions.csv`` keeps its labels, loses that
layer's figures, and says so in a note.
"""
from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd

from dissect_core.common.errors import InvalidInputError

QUALITY_COLUMNS = (
    "layer", "unit", "description", "similarity", "stability", "correlation", "correlation_low",
    "correlation_high", "heldout_label", "margin", "runner_up", "runner_up_cosine", "near_synonym",
)

LABEL_QUALITY_FILE = "label_quality.csv"
LAYER_QUALITY_FILE = "label_quality_layers.csv"
QUALITY_POINTS_FILE = "label_quality_points.npz"
LAYER_COLUMNS = ("layer", "units", "stable_share", "mean_correlation", "distinct", "distinct_low",
                 "distinct_high")
STABLE_THRESHOLD = 0.8  # stability at or above this counts as a stable unit (pages, summaries)
_TEXT_COLUMNS = ("layer", "description", "heldout_label", "runner_up")


def _csv(data: bytes, name: str, columns: Sequence[str]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{name} is not a readable CSV ({exc}); recompute the run's quality figures.") from None
    if list(frame.columns) != list(columns):
        raise InvalidInputError(
            f"{name} has the columns {','.join(map(str, frame.columns))}; expected {','.join(columns)}. "
            "Recompute the run's quality figures."
        )
    for column in columns:
        if column in _TEXT_COLUMNS:
            continue
        if column == "near_synonym":
            if not frame[column].isin(["True", "False"]).all():
                raise InvalidInputError(f"{name}: near_synonym must be True or False.")
            frame[column] = frame[column] == "True"
            continue
        values = pd.to_numeric(frame[column], errors="coerce")
        if (values.isna() & ~frame[column].str.lower().isin(["nan", ""])).any():
            raise InvalidInputError(f"{name}: column {column} holds a value that is not a number.")
        frame[column] = values
    return frame


def read_label_quality(data: bytes, name: str = LABEL_QUALITY_FILE) -> pd.DataFrame:
    """Parse and check a ``label_quality.csv`` (from a run folder or a bundle)."""
    frame = _csv(data, name, QUALITY_COLUMNS)
    if frame["unit"].isna().any() or (frame["unit"] < 0).any() or (frame["unit"] % 1 != 0).any():
        raise InvalidInputError(f"{name}: a unit is not a non-negative whole number.")
    frame["unit"] = frame["unit"].astype("int64")
    for column in ("stability",):
        if ((frame[column] < 0) | (frame[column] > 1)).any():
            raise InvalidInputError(f"{name}: {column} must lie in [0, 1].")
    if frame.duplicated(["layer", "unit"]).any():
        raise InvalidInputError(f"{name}: a unit appears twice.")
    return frame


def read_layer_quality(data: bytes, name: str = LAYER_QUALITY_FILE) -> pd.DataFrame:
    """Parse and check a ``label_quality_layers.csv``."""
    frame = _csv(data, name, LAYER_COLUMNS)
    for column in ("units", "distinct", "distinct_low", "distinct_high"):
        if frame[column].isna().any() or (frame[column] < 0).any():
            raise InvalidInputError(f"{name}: {column} must be a non-negative count.")
        frame[column] = frame[column].astype("int64")
    if frame["layer"].duplicated().any():
        raise InvalidInputError(f"{name}: a layer appears twice.")
    return frame


def read_quality_points(data: bytes, n_layers: int, name: str = QUALITY_POINTS_FILE
                        ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per layer (in ``label_quality_layers.csv`` order): probe indices, activations and label
    similarities of the scatter's held-out images. Never unpickles anything."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise InvalidInputError(f"{name} is not a readable .npz archive ({exc}).") from None
    layers = []
    for number in range(n_layers):
        try:
            images, acts, sims = (arrays[f"{kind}_{number}"] for kind in ("images", "activation", "similarity"))
        except KeyError:
            raise InvalidInputError(f"{name} lacks the points of layer {number + 1}.") from None
        if (images.ndim != 1 or acts.ndim != 2 or acts.shape != sims.shape or acts.shape[0] != images.shape[0]
                or images.dtype.kind not in "iu" or acts.dtype.kind != "f" or sims.dtype.kind != "f"):
            raise InvalidInputError(f"{name}: the arrays of layer {number + 1} do not fit together.")
        layers.append((images, acts, sims))
    return layers


def points_units(source: Union[bytes, Path], n_layers: int) -> list[Optional[int]]:
    """Per layer of ``label_quality_points.npz``, the units its activation array holds (None:
    missing or unreadable), from the arrays' headers alone: only their first bytes are read."""
    units: list[Optional[int]] = [None] * n_layers
    try:
        with zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source) as archive:
            for number in range(n_layers):
                try:
                    with archive.open(f"activation_{number}.npy") as member:
                        version = np.lib.format.read_magic(member)
                        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                       else np.lib.format.read_array_header_2_0)
                        shape = read_header(member)[0]
                except (KeyError, ValueError):
                    continue
                units[number] = shape[1] if len(shape) == 2 else None
    except (OSError, zipfile.BadZipFile, ValueError, EOFError, zlib.error):  # damaged: its layers count as unreadable
        pass
    return units


def match_descriptions(label_quality: Optional[pd.DataFrame], layer_quality: Optional[pd.DataFrame],
                       points: Optional[Union[bytes, Path]], descriptions: pd.DataFrame,
                       ) -> tuple[Optional[pd.DataFrame], Optional[pd.DataFrame], dict[str, str]]:
    """The quality tables less the layers whose figures do not fit ``descriptions``, and why
    each layer left out was (by layer; :func:`left_out_note` says it as a note).

    A layer's figures fit when ``label_quality.csv`` has exactly the layer's units with the
    labels of ``descriptions.csv``, ``label_quality_layers.csv`` counts those units, and the
    scatter's arrays in ``points`` (the npz's bytes or path) hold one column per unit. The
    labels are never touched: only figures that would describe other units or labels go.
    """
    expected = {layer: rows.set_index("unit")["description"] for layer, rows in descriptions.groupby("layer", sort=False)}
    why: dict[str, str] = {}
    if label_quality is not None:
        for layer, rows in label_quality.groupby("layer", sort=False):
            if layer not in expected:
                why[layer] = "the run has no layer of that name"
                continue
            labels = expected[layer]
            if set(rows["unit"]) != set(labels.index):
                why[layer] = (f"{LABEL_QUALITY_FILE} has figures for {len(rows):,} units, where the run "
                              f"labels {len(labels):,}")
                continue
            differ = int((rows["description"].to_numpy() != labels.reindex(rows["unit"]).to_numpy()).sum())
            if differ:
                why[layer] = (f"{LABEL_QUALITY_FILE} scores other labels than the run's for {differ:,} of "
                              f"its {len(labels):,} units")
    if layer_quality is not None:
        in_points = points_units(points, len(layer_quality)) if points is not None else None
        for number, row in enumerate(layer_quality.itertuples()):
            if row.layer in why:
                continue
            if row.layer not in expected:
                why[row.layer] = "the run has no layer of that name"
            elif row.units != len(expected[row.layer]):
                why[row.layer] = (f"{LAYER_QUALITY_FILE} counts {row.units:,} units, where the run labels "
                                  f"{len(expected[row.layer]):,}")
            elif in_points is not None and in_points[number] != row.units:
                found = "no readable array" if in_points[number] is None else f"{in_points[number]:,} columns"
                why[row.layer] = f"{QUALITY_POINTS_FILE} holds {found} for it, where the run labels {row.units:,} units"
    if label_quality is not None:
        label_quality = label_quality[~label_quality["layer"].isin(list(why))]
    if layer_quality is not None:
        layer_quality = layer_quality[~layer_quality["layer"].isin(list(why))]
    return label_quality, layer_quality, why


def left_out_note(layer: str, why: str) -> str:
    """A run's note for a layer whose figures :func:`match_descriptions` left out (the name is
    cut short: it comes from a file)."""
    return (f"Label-quality figures of layer {layer[:80]} left out: {why}. Its labels are shown; recompute "
            "the run for its figures.")

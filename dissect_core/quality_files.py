"""The files of a run's label-quality figures, and reading them back safely.

* ``label_quality.csv``: one row per unit, :data:`QUALITY_COLUMNS`;
* ``label_quality_layers.csv``: one row per layer, :data:`LAYER_COLUMNS`;
* ``label_quality_points.npz``: per layer (numbered in the layers file's order) the
  held-out probe images of the activation-vs-similarity scatter (``images_i``, probe
  indices), each unit's activation on them (``activation_i``) and its scored label's
  image–text cosine (``similarity_i``), float16, images × units.

The readers treat the bytes as untrusted (they may come from a bundle): wrong columns,
non-numbers, out-of-range values or mismatched arrays raise ``InvalidInputError``; the
archive is read without unpickling.
"""
from __future__ import annotations

import io
import zipfile
from typing import Sequence

import numpy as np
import pandas as pd

from .errors import InvalidInputError

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

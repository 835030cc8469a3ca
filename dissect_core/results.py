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
  used to draw Network-Dissection masks.

The reference tool writes only the first two files; ``load_run`` accepts both.
"""
from __future__ import annotations

import io
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Optional, Union

import pandas as pd

from .files import atomic_write_text
from .errors import InvalidInputError, MissingResourceError

DESCRIPTION_COLUMNS = ("layer", "unit", "description", "similarity")
DESCRIPTIONS_FILE = "descriptions.csv"
ARGS_FILE = "args.txt"
MANIFEST_FILE = "manifest.json"
TOP_CONCEPTS_FILE = "top_concepts.csv"
TOP_IMAGES_FILE = "top_images.csv"
UNIT_STATS_FILE = "unit_stats.csv"

PathOrFile = Union[str, Path, bytes, IO[bytes]]


# --------------------------------------------------------------------------- reading CSVs

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
    return data, getattr(source, "name", "uploaded file")


def read_descriptions(source: PathOrFile) -> pd.DataFrame:
    """Read a ``descriptions.csv`` written by this project or the reference tool.

    Returns a frame with columns ``layer`` (str), ``unit`` (int), ``description``
    (str) and ``similarity`` (float), rows in file order. Anything that is not such
    a file raises ``InvalidInputError`` saying what is wrong and how to fix it.
    """
    data, name = _read_bytes(source)
    if not data.strip():
        raise InvalidInputError(
            f"{name} is empty. A descriptions CSV starts with the header 'layer,unit,description,similarity'."
        )
    if data.startswith(b"\xef\xbb\xbf"):
        raise InvalidInputError(
            f"{name} starts with a byte-order mark (as Excel's 'CSV UTF-8' writes). "
            "Save it as plain UTF-8 CSV without a BOM, as CLIP-Dissect writes it."
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
    missing = [c for c in DESCRIPTION_COLUMNS if c not in columns]
    extra = [c for c in columns if c not in DESCRIPTION_COLUMNS]
    if missing or extra:
        problems = []
        if missing:
            problems.append("missing column(s) " + ", ".join(repr(c) for c in missing))
        if extra:
            problems.append("unexpected column(s) " + ", ".join(repr(c) for c in extra))
        raise InvalidInputError(
            f"{name} is not a descriptions CSV: {'; '.join(problems)}. "
            f"The header must be exactly '{','.join(DESCRIPTION_COLUMNS)}' (found '{','.join(columns)}')."
        )
    if frame.empty:
        raise InvalidInputError(f"{name} has a header but no rows.")
    frame = frame[list(DESCRIPTION_COLUMNS)]

    def first_bad(mask: pd.Series) -> tuple[int, str]:
        row = int(mask.to_numpy().nonzero()[0][0])
        return row + 2, row  # +2: 1-based lines and the header line

    if (frame["layer"].str.strip() == "").any():
        line, _ = first_bad(frame["layer"].str.strip() == "")
        raise InvalidInputError(f"{name}, line {line}: the layer name is empty.")
    units = pd.to_numeric(frame["unit"], errors="coerce")
    bad_units = units.isna() | (units < 0) | (units % 1 != 0)
    if bad_units.any():
        line, row = first_bad(bad_units)
        raise InvalidInputError(
            f"{name}, line {line}: unit {frame['unit'].iloc[row]!r} is not a non-negative whole number."
        )
    similarity = pd.to_numeric(frame["similarity"], errors="coerce")
    written_nan = frame["similarity"].str.strip().str.lower().isin({"nan", "-nan"})
    bad_similarity = similarity.isna() & ~written_nan
    if bad_similarity.any():
        line, row = first_bad(bad_similarity)
        raise InvalidInputError(
            f"{name}, line {line}: similarity {frame['similarity'].iloc[row]!r} is not a number."
        )
    if (frame["description"] == "").any():
        line, _ = first_bad(frame["description"] == "")
        raise InvalidInputError(f"{name}, line {line}: the description is empty.")

    result = pd.DataFrame(
        {
            "layer": frame["layer"].astype(str),
            "unit": units.astype("int64"),
            "description": frame["description"].astype(str),
            "similarity": similarity.astype("float64"),
        }
    )
    duplicated = result.duplicated(["layer", "unit"])
    if duplicated.any():
        line, row = first_bad(duplicated)
        raise InvalidInputError(
            f"{name}, line {line}: unit {result['unit'].iloc[row]} of layer "
            f"{result['layer'].iloc[row]!r} appears twice."
        )
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
    args: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)
    top_concepts: Optional[pd.DataFrame] = None
    top_images: Optional[pd.DataFrame] = None
    unit_stats: Optional[pd.DataFrame] = None

    @property
    def layers(self) -> list[str]:
        return layer_order(self.descriptions)

    @property
    def target_model(self) -> str:
        return str(self.manifest.get("target_model") or self.args.get("target_model") or self.label)

    @property
    def probe_name(self) -> Optional[str]:
        return self.manifest.get("probe", {}).get("name") or self.args.get("d_probe")

    @property
    def concept_set_name(self) -> Optional[str]:
        concept_set = self.manifest.get("concept_set", {}).get("name") or self.args.get("concept_set")
        return Path(concept_set).stem if concept_set else None

    @property
    def clip_model(self) -> Optional[str]:
        return self.manifest.get("clip_model") or self.args.get("clip_model")

    @property
    def similarity_fn(self) -> Optional[str]:
        return self.manifest.get("similarity_fn") or self.args.get("similarity_fn")

    @property
    def from_reference_tool(self) -> bool:
        return not self.manifest

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

    def mask_threshold(self, layer: str, unit: int) -> Optional[float]:
        """The unit's top-0.5 % activation level, if it was recorded and the layer is spatial."""
        if self.unit_stats is None:
            return None
        rows = self.unit_stats[(self.unit_stats["layer"] == layer) & (self.unit_stats["unit"] == unit)]
        if rows.empty or pd.isna(rows["mask_threshold"].iloc[0]):
            return None
        return float(rows["mask_threshold"].iloc[0])


_NUMERIC_COLUMNS = ("unit", "rank", "score", "image_index", "activation", "mask_threshold")


def _read_optional_csv(path: Path) -> Optional[pd.DataFrame]:
    """A run's side table; text columns stay text (a concept may be called "nan")."""
    if not path.is_file():
        return None
    frame = pd.read_csv(path, keep_default_na=False, dtype=str)
    for column in frame.columns:
        if column in _NUMERIC_COLUMNS:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def read_json_object(path: Path) -> dict:
    """A JSON object from a file; {} when the file is absent, unreadable or not an object."""
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def run_label(args: dict, manifest: dict, fallback: str) -> str:
    """A display name: model · probe · concept set, or the folder name when unknown."""
    model = manifest.get("target_model") or args.get("target_model")
    if not model:
        return fallback
    probe = manifest.get("probe", {}).get("name") or args.get("d_probe")
    concepts = manifest.get("concept_set", {}).get("name") or args.get("concept_set")
    parts = [str(model)]
    if probe:
        parts.append(str(probe))
    if concepts:
        parts.append(Path(str(concepts)).stem)
    return " · ".join(parts)


def load_run(path: Union[str, Path]) -> Run:
    """Load a run folder (or a bare ``descriptions.csv``) written by either tool."""
    path = Path(path)
    csv_path = path / DESCRIPTIONS_FILE if path.is_dir() else path
    folder = csv_path.parent
    descriptions = read_descriptions(csv_path)
    args = read_json_object(folder / ARGS_FILE)
    manifest = read_json_object(folder / MANIFEST_FILE)
    fallback = folder.name if csv_path.name == DESCRIPTIONS_FILE else csv_path.stem
    return Run(
        label=run_label(args, manifest, fallback),
        descriptions=descriptions,
        path=folder,
        args=args,
        manifest=manifest,
        top_concepts=_read_optional_csv(folder / TOP_CONCEPTS_FILE),
        top_images=_read_optional_csv(folder / TOP_IMAGES_FILE),
        unit_stats=_read_optional_csv(folder / UNIT_STATS_FILE),
    )


def find_runs(root: Union[str, Path]) -> tuple[list[Run], list[tuple[Path, str]]]:
    """Every ``descriptions.csv`` under ``root`` at any depth.

    Returns the runs (with labels made unique) and, for files that could not be
    read, ``(path, reason)`` pairs, so one bad file never hides the others.
    """
    root = Path(root)
    runs: list[Run] = []
    problems: list[tuple[Path, str]] = []
    for csv_path in sorted(root.rglob(DESCRIPTIONS_FILE)):
        try:
            runs.append(load_run(csv_path))
        except InvalidInputError as exc:
            problems.append((csv_path, str(exc)))
    make_labels_unique(runs)
    return runs, problems


def make_labels_unique(runs: list[Run]) -> None:
    """Append the folder name (then a counter) to labels that occur more than once."""
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.label] = counts.get(run.label, 0) + 1
    seen: set[str] = set()
    for run in runs:
        label = run.label
        if counts[label] > 1 and run.path is not None:
            label = f"{label} ({run.path.name})"
        candidate, n = label, 2
        while candidate in seen:
            candidate, n = f"{label} #{n}", n + 1
        run.label = candidate
        seen.add(candidate)


# --------------------------------------------------------------------------- writing

def new_run_dir(result_dir: Union[str, Path], target_model: str) -> Path:
    """A fresh run folder that cannot collide with another run's (seconds + random suffix)."""
    safe_model = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in target_model)
    stamp = datetime.now().strftime("%y_%m_%d_%H_%M_%S")
    run_dir = Path(result_dir) / f"{safe_model}_{stamp}_{uuid.uuid4().hex[:6]}"
    run_dir.mkdir(parents=True, exist_ok=False)
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
    manifest: dict,
    top_concepts: Optional[pd.DataFrame] = None,
    top_images: Optional[pd.DataFrame] = None,
    unit_stats: Optional[pd.DataFrame] = None,
) -> Path:
    """Write every file of a run folder; each file is written atomically."""
    out = descriptions[list(DESCRIPTION_COLUMNS)].copy()
    out["similarity"] = [format_similarity(v) for v in out["similarity"]]
    write_frame(run_dir / DESCRIPTIONS_FILE, out)
    atomic_write_text(run_dir / ARGS_FILE, json.dumps(args, indent=2))
    atomic_write_text(run_dir / MANIFEST_FILE, json.dumps(manifest, indent=2, default=str))
    for name, frame in (
        (TOP_CONCEPTS_FILE, top_concepts),
        (TOP_IMAGES_FILE, top_images),
        (UNIT_STATS_FILE, unit_stats),
    ):
        if frame is not None:
            write_frame(run_dir / name, frame)
    return run_dir

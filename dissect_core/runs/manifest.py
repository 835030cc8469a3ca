"""The run manifest (``manifest.json``): what a run was made from, typed and versioned.

:class:`RunManifest` is the only reader and writer of the file. ``format`` is
``"dissect_core-run/N"`` with ``N`` the :data:`FORMAT_VERSION` it was written with. A
manifest that is not JSON, misses a field, has a field of the wrong type, or comes
from an unknown format raises :class:`DamagedRunError` saying what is wrong: a run is
never silently read as something else (such as an import from a CSV). Older versions
are read (fields they lack get their defaults); a newer one raises
:class:`~dissect_core.common.errors.NewerFormatError`, asking to upgrade dissect.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from dissect_core import __version__
from dissect_core.common.errors import InvalidInputError, NewerFormatError
from dissect_core.common.files import atomic_write_text
from dissect_core.runs.side_tables import check_layer_name

MANIFEST_FILE = "manifest.json"
FORMAT_NAME = "dissect_core-run"
# 2: probe.listing_skipped and warnings added (a version-1 manifest reads with both empty).
# 3: label_quality and output_check added (a version-2 manifest without them reads with {} and
#    []; some version-2 manifests, written before the bump, carry them already).
FORMAT_VERSION = 3


class DamagedRunError(InvalidInputError):
    """A run folder's files cannot be read as a run (the message says which and why)."""


@dataclass(frozen=True)
class ProbeRecord:
    """The probe set a run used: enough to reopen it and check it is unchanged."""

    name: str
    spec: dict[str, Any]  # engine.probe_sets.open_probe_spec reopens it
    fingerprint: str
    n_images: int
    n_skipped: int
    skipped: list[str]  # labels of the unreadable images (the first 1,000)
    listing_skipped: dict[str, int]  # files left out while listing the set, by reason


@dataclass(frozen=True)
class ConceptSetRecord:
    name: str
    source: str
    sha256: str
    n_concepts: int
    duplicates_dropped: int
    blank_lines_dropped: int


@dataclass(frozen=True)
class CacheKeys:
    """The cache entries a run was made from (dissect_core.engine.cache keys)."""

    activations: dict[str, str]  # by layer
    clip_images: str
    clip_texts: str
    similarity: dict[str, str]  # by layer


@dataclass(frozen=True)
class RunSources:
    """What a run's probe images and target model are reopened from.

    Runs that share these share their loaded model and images (the app caches on
    :meth:`key`).
    """

    probe_spec: dict[str, Any]
    probe_fingerprint: str
    target_model: str
    target_checkpoint: Optional[str]
    target_weights_sha256: str
    data_dir: str
    # Imported from a results bundle: the paths above name another machine's files, so
    # unit_views.probe_for_run and target_for_run refuse to open anything from them.
    imported: bool = False

    def key(self) -> str:
        """A canonical JSON text of these fields (:meth:`from_key` reads it back)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_key(cls, key: str) -> "RunSources":
        return _build(cls, json.loads(key), "run sources")


@dataclass(frozen=True)
class RunManifest:
    created: str  # ISO 8601, UTC
    target_model: str
    target_checkpoint: Optional[str]
    target_weights_sha256: str
    target_source: str
    layers: list[str]
    clip_model: str  # canonical ARCH:TAG or ARCH:/path
    clip_weights: str
    precision: str
    probe: ProbeRecord
    concept_set: ConceptSetRecord
    similarity_fn: str
    similarity_params: dict[str, Any]
    pool_mode: str
    device: str
    config: dict[str, Any]  # the DescribeConfig fields that are plain values (see pipeline)
    cache_keys: CacheKeys
    reused_from_cache: list[str]
    warnings: list[str]  # problems worked around (damaged cache entries recomputed, ...)
    versions: dict[str, str]
    timings_s: dict[str, float]
    layouts: dict[str, str] = field(default_factory=dict)  # layer -> recording layout; {} before they were recorded
    # {"settings": QualitySettings as a dict} when label-quality figures were computed, or
    # {"skipped": why not}; {} in runs made before the quality stage existed.
    label_quality: dict[str, Any] = field(default_factory=dict)
    # CLIP-Dissect's output-layer check (quality.OutputCheck as dicts); [] when no layer qualifies.
    output_check: list[dict[str, Any]] = field(default_factory=list)
    # Set by bundle.import_bundle: {"bundle": file name, "sha256": its hash, "imported": ISO time}.
    imported: Optional[dict[str, str]] = None
    format_version: int = field(default=FORMAT_VERSION)

    @property
    def data_dir(self) -> str:
        return str(self.config.get("data_dir") or "data")

    def sources(self) -> RunSources:
        return RunSources(self.probe.spec, self.probe.fingerprint, self.target_model, self.target_checkpoint,
                          self.target_weights_sha256, self.data_dir, imported=self.imported is not None)

    # ------------------------------------------------------------------ JSON

    def to_json(self) -> str:
        record = dataclasses.asdict(self)
        version = record.pop("format_version")
        return json.dumps({"format": f"{FORMAT_NAME}/{version}", **record}, indent=2, default=str)

    @classmethod
    def from_json(cls, text: str, where: str = MANIFEST_FILE) -> "RunManifest":
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DamagedRunError(f"{where} is not valid JSON ({exc}); the file is damaged or truncated.") from None
        if not isinstance(record, dict):
            raise DamagedRunError(f"{where} holds a JSON {type(record).__name__}, not a run manifest object.")
        fmt = record.pop("format", None)
        name, _, version_text = str(fmt).rpartition("/")
        if name != FORMAT_NAME or not version_text.isdigit():
            raise DamagedRunError(
                f"{where} has the format {fmt!r}, which is not a dissect_core run manifest "
                f"('{FORMAT_NAME}/{FORMAT_VERSION}')."
            )
        version = int(version_text)
        if version > FORMAT_VERSION:
            raise NewerFormatError(
                f"{where} was made by a newer dissect (run format version {version}; this dissect, "
                f"{__version__}, reads versions 1 to {FORMAT_VERSION}). Upgrade dissect "
                "(update the checkout, then pip install .) to open it."
            )
        if version < 1:
            raise DamagedRunError(f"{where} has an unknown run format version {version}.")
        if version == 1:
            record = _upgrade_from_1(record)
        manifest = _build(cls, {**record, "format_version": version}, where)
        _check_layer_names(manifest, where)
        return manifest

    @classmethod
    def read(cls, run_dir: Union[str, Path]) -> "RunManifest":
        """The manifest of ``run_dir``; DamagedRunError if it is unreadable."""
        path = Path(run_dir) / MANIFEST_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise DamagedRunError(f"{path} is not UTF-8 text; the file is damaged.") from None
        return cls.from_json(text, str(path))

    def write(self, run_dir: Union[str, Path]) -> Path:
        path = Path(run_dir) / MANIFEST_FILE
        atomic_write_text(path, self.to_json())
        return path


# ---------------------------------------------------------------------- checked construction


def _upgrade_from_1(record: dict) -> dict:
    """A version-1 record in version 2's layout: nothing was skipped while listing, no warnings."""
    record = dict(record)
    if isinstance(record.get("probe"), dict):
        record["probe"] = {"listing_skipped": {}, **record["probe"]}
    record.setdefault("warnings", [])
    return record



def _check_layer_names(manifest: RunManifest, where: str) -> None:
    """Every layer the manifest names is a plain module name: layer names name the run's
    files (``maps/<layer>.npy``), so one like ``../x`` is refused, naming its field."""
    fix = ("Real module paths never look like that: the file was changed by hand or by another tool. "
           "Recompute the run, or use the run folder or bundle as dissect wrote it.")
    named = [(f"layers[{i}]", layer) for i, layer in enumerate(manifest.layers)]
    for field_name, layers in (("layouts", manifest.layouts), ("cache_keys.activations", manifest.cache_keys.activations),
                               ("cache_keys.similarity", manifest.cache_keys.similarity)):
        named += [(f"{field_name} (a key)", layer) for layer in layers]
    for field_name, layer in named:
        try:
            check_layer_name(layer, f"{where}: {field_name}", fix)
        except InvalidInputError as exc:
            raise DamagedRunError(str(exc)) from None


def _build(cls: type, record: Any, where: str) -> Any:
    """``cls(**record)``, each field checked against its annotation (nested records too)."""
    if not isinstance(record, dict):
        raise DamagedRunError(f"{where}: expected an object, found {type(record).__name__}.")
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls)]
    missing = [f.name for f in fields
               if f.name not in record and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise DamagedRunError(f"{where} lacks the field(s) {', '.join(missing)}; the file is damaged or truncated.")
    unknown = sorted(set(record) - {f.name for f in fields})
    if unknown:
        raise DamagedRunError(f"{where} has unknown field(s) {', '.join(unknown)}.")
    values = {name: _check(hints[name], value, f"{where}: {name}") for name, value in record.items()}
    return cls(**values)


def _check(annotation: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _check(inner, value, where)
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise DamagedRunError(f"{where} should be a list, not {type(value).__name__}.")
        return [_check(args[0], item, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise DamagedRunError(f"{where} should be an object, not {type(value).__name__}.")
        return {key: _check(args[1], item, f"{where}.{key}") for key, item in value.items()}
    if annotation is Any:
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
        raise DamagedRunError(f"{where} should be {annotation.__name__}, not {type(value).__name__} {value!r:.40}.")
    return value

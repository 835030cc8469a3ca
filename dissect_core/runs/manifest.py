"""The run manifest (``manifest.json``): what a run was made from, typed and versioned.

:class:`RunManifest` is the only reader and writer of the file. ``format`` is
``"dissect_core-run/N"`` with ``N`` the :data:`FORMAT_VERSION` it was written with. A
manifest that is not JSON, misses a field, has a field of the wrong type, or comes
from an unknown format raises :class:`DamagedRunError` saying what is wrong: a run is
never silently read as something else (such as an import from a CSV). Older versions
are read (fields they lack get their defaults); a newer one raises
:class:`~dissect_core.common.errors.NewerFormatError`, asking to upgrade dissect.

The records are msgspec Structs: msgspec checks a record against them (types, required
and unknown fields, nested records), and its complaint is put in this module's words.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional, Union

import msgspec

from dissect_core import __version__
from dissect_core.common.errors import InvalidInputError, NewerFormatError
from dissect_core.common.files import atomic_write_text
from dissect_core.runs.side_tables import check_layer_name

MANIFEST_FILE = "manifest.json"
FORMAT_NAME = "dissect_core-run"
# 2: probe.listing_skipped and warnings added (a version-1 manifest reads with both empty).
# 3: label_quality and output_check added (a version-2 manifest without them reads with {} and
#    []; some version-2 manifests, written before the bump, carry them already).
# 4: majority_check added (older manifests read with []).
FORMAT_VERSION = 4


class DamagedRunError(InvalidInputError):
    """A run folder's files cannot be read as a run (the message says which and why)."""


class _Record(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A manifest record: immutable, and a field the schema does not know is an error."""


class ProbeRecord(_Record):
    """The probe set a run used: enough to reopen it and check it is unchanged."""

    name: str
    spec: dict[str, Any]  # engine.probe_sets.open_probe_spec reopens it
    fingerprint: str
    n_images: int
    n_skipped: int
    skipped: list[str]  # labels of the unreadable images (the first 1,000)
    listing_skipped: dict[str, int]  # files left out while listing the set, by reason


class ConceptSetRecord(_Record):
    name: str
    source: str
    sha256: str
    n_concepts: int
    duplicates_dropped: int
    blank_lines_dropped: int


class CacheKeys(_Record):
    """The cache entries a run was made from (dissect_core.engine.cache keys)."""

    activations: dict[str, str]  # by layer
    clip_images: str
    clip_texts: str
    similarity: dict[str, str]  # by layer


class RunSources(_Record):
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
        return json.dumps(msgspec.to_builtins(self, enc_hook=_plain), sort_keys=True)

    @classmethod
    def from_key(cls, key: str) -> "RunSources":
        return _convert(json.loads(key), cls, "run sources")


class MajorityCheck(_Record):
    """One layer of a labelled run: do the units' labels agree with the label most of their
    ``top_k`` images carry? Lists are per unit, in unit order."""

    layer: str
    top_k: int  # the unit's top images counted (engine.label_scores.MAJORITY_TOP_K, at most the probe's images)
    agreeing: int  # units whose label is carried by as many of their top images as any label
    majority: list[str]  # the label most of the unit's top images carry (the first concept on a tie)
    majority_count: list[int]  # how many of its top images carry that label
    label_count: list[int]  # how many carry the unit's own label

    @property
    def units(self) -> int:
        return len(self.majority)

    @property
    def share(self) -> float:
        """The share of the layer's units whose label agrees."""
        return self.agreeing / self.units if self.units else float("nan")


class RunManifest(_Record):
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
    layouts: dict[str, str] = msgspec.field(default_factory=dict)  # layer -> recording layout; {} before they were recorded
    # {"settings": QualitySettings as a dict} when label-quality figures were computed, or
    # {"skipped": why not}; {} in runs made before the quality stage existed.
    label_quality: dict[str, Any] = msgspec.field(default_factory=dict)
    # CLIP-Dissect's output-layer check (quality.OutputCheck as dicts); [] when no layer qualifies.
    output_check: list[dict[str, Any]] = msgspec.field(default_factory=list)
    # Labelled runs, per layer: agreement of the labels with their top images' majority label;
    # [] for CLIP runs and runs made before it was recorded.
    majority_check: list[MajorityCheck] = msgspec.field(default_factory=list)
    # Set by bundle.import_bundle: {"bundle": file name, "sha256": its hash, "imported": ISO time}.
    imported: Optional[dict[str, str]] = None
    format_version: int = FORMAT_VERSION

    @property
    def data_dir(self) -> str:
        return str(self.config.get("data_dir") or "data")

    def sources(self) -> RunSources:
        return RunSources(self.probe.spec, self.probe.fingerprint, self.target_model, self.target_checkpoint,
                          self.target_weights_sha256, self.data_dir, imported=self.imported is not None)

    # ------------------------------------------------------------------ JSON

    def to_json(self) -> str:
        record = msgspec.to_builtins(self, enc_hook=_plain)
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
        manifest = _convert({**record, "format_version": version}, cls, where)
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


def _plain(value: Any) -> Any:
    """A value msgspec cannot write: a NumPy scalar as its number (msgspec would not take a
    float64 as a float), anything else, such as a path, as its text."""
    return value.item() if hasattr(value, "item") and hasattr(value, "dtype") else str(value)


_FIELD_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_JSON_TYPES = {"array": "a list", "object": "an object"}


def _convert(record: Any, cls: type, where: str) -> Any:
    """``record`` as a ``cls``, checked by msgspec; DamagedRunError in words naming the field."""
    try:
        return msgspec.convert(record, cls, strict=True)
    except msgspec.ValidationError as exc:
        raise DamagedRunError(_in_words(str(exc), where)) from None


def _in_words(message: str, where: str) -> str:
    """msgspec's ``Expected `int`, got `str` - at `$.probe.n_images``` as
    ``manifest.json: probe: n_images should be int, not str.``"""
    at = _FIELD_PATH.search(message)
    problem = message[:at.start()] if at else message
    path = at["path"] if at else ""
    # "$.probe.n_images" -> "probe: n_images"; "$.layers[0]" stays; "[...]" is a value in an object.
    path = path.replace("[...]", " (a value)").lstrip(".").replace(".", ": ")
    here = f"{where}: {path}" if path else where
    if found := re.fullmatch(r"Object missing required field `(.+)`", problem):
        return f"{here} lacks the field(s) {found[1]}; the file is damaged or truncated."
    if found := re.fullmatch(r"Object contains unknown field `(.+)`", problem):
        return f"{here} has unknown field(s) {found[1]}."
    if found := re.fullmatch(r"Expected `(.+)`, got `(.+)`", problem):
        expected, got = found[1], {"array": "list"}.get(found[2], found[2])
        if expected == "object":
            return f"{here}: expected an object, found {got}."
        expected = " or ".join(_JSON_TYPES.get(kind, kind) for kind in expected.split(" | "))
        return f"{here} should be {expected}, not {got}."
    return f"{here}: {problem}."

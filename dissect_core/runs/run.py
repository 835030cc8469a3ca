"""The ``Run`` model: one model's dissection as the app and the analysis read it (labels plus
whatever extras its folder holds), and the names runs are shown by.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd

from dissect_core.runs.formats import (
    CLIP_DISSECT, PROBE_LABELS,
    DESCRIPTION_COLUMNS,
    RESULT_FORMATS,
    layer_order,
)
from dissect_core.runs.manifest import RunManifest, RunSources
from dissect_core.runs.quality_tables import (
    LAYER_QUALITY_FILE,
    QUALITY_POINTS_FILE,
    read_layer_quality,
    read_quality_points,
)


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


MAX_RUN_NAME_CHARS = 120


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

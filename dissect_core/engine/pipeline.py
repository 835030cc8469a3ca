"""The CLIP-Dissect pipeline, top to bottom, with every stage cached.

:func:`describe_together` reads as the stages run: check the inputs → look up the
cache → one pass over the probe images (every target model's activations and
stored maps, and CLIP's image features) → CLIP text features of the concepts →
per model: similarity, descriptions and quality figures per layer → its run folder.
Each stage is a function over typed stage results (``RunInputs``, ``StoredStages``,
``UnitLabels``; the cached ones are in ``stage_results``).

Every input is checked before any heavy work starts, so a typo in a layer name
or an over-long concept fails in seconds rather than after the forward pass.
Each stage's output is stored in the content-addressed cache as soon as it is
computed, so an error later in the run loses nothing already computed.
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch

from dissect_core import __version__
from dissect_core.engine.activations import LayerActivations, ProbePass, TargetLayers, record_probe_pass, top_rows
from dissect_core.engine.cache import FeatureCache
from dissect_core.choices.catalog import DECODERS, POOL_MODES, SIMILARITY_FUNCTIONS
from dissect_core.engine.clip import ClipModel, check_context_length, encode_texts, load_clip, parse_clip_name
from dissect_core.choices.catalog import CONCEPT_SOURCES, with_source_defaults
from dissect_core.engine.concept_sources import LabelledProbe, formula_probe, is_own_labels
from dissect_core.choices.concept_sets import ConceptSet, load_concept_set
from dissect_core.choices.config import DescribeConfig
from dissect_core.engine.device import resolve_device
from dissect_core.engine.unit_views import view_steps
from dissect_core.common.errors import InvalidInputError, about
from dissect_core.common.files import check_room, file_sha256
from dissect_core.engine.label_scores import MAJORITY_TOP_K, check_concept_source, majority_check
from dissect_core.engine.label_scores import check_probe_size as check_label_probe_size
from dissect_core.choices.layouts import TOKENS, Layout
from dissect_core.runs.manifest import CacheKeys, ConceptSetRecord, MajorityCheck, ProbeRecord, RunManifest
from dissect_core.engine.models import TargetModel, check_model_name, get_layer, imagenet_class_names, load_target_model
from dissect_core.engine.prerequisites import check_settings, require_prerequisites
from dissect_core.engine.probe_sets import ProbeSet, open_probe
from dissect_core.common.progress import ProgressFn, log as logger, report
from dissect_core.engine.label_quality import (RESCORABLE, LayerQuality, QualitySettings, layer_quality,
                                               minimum_probe_images, output_layers, quality_files, run_output_checks)
from dissect_core.engine.recording import resolve_layouts
from dissect_core.runs.demo_runs import demo_run_inputs, is_demo_run
from dissect_core.runs.run import Run
from dissect_core.runs.run_folders import DESCRIPTIONS_FILE, load_run, new_run_dir, refuse_imported, write_run
from dissect_core.engine.similarity import check_probe_size, resolve_params, similarity_matrix
from dissect_core.engine.stage_results import BestConcepts, ImageFeatures, TextFeatures
from dissect_core.runs.unit_images import write_stored_maps

TOP_CONCEPTS_KEPT = 5


@dataclass
class DescribeResult:
    run_dir: Path
    run: Run
    timings: dict[str, float]
    reused: list[str]  # cache stages that were served from disk
    skipped_images: list[str]
    # Problems found and worked around (damaged cache entries recomputed, files
    # skipped while listing the probe folder): the CLI and the app show them.
    warnings: list[str] = field(default_factory=list)
    skipped: list["SkippedStage"] = field(default_factory=list)  # optional stages left out, with why

    def summary(self) -> list["SummaryLine"]:
        """What a finished run reports, in order: the CLI prints these lines and the app
        shows them (warnings stand out in both)."""
        lines = [SummaryLine(f"Wrote {self.run_dir / DESCRIPTIONS_FILE}")]
        counts = self.run.descriptions.groupby("layer", sort=False)["description"].agg(["size", "nunique"])
        majority = {check.layer: check for check in (self.run.manifest.majority_check if self.run.manifest else [])}
        lines += [SummaryLine(f"{layer}: {row['size']} units, {row['nunique']} distinct concepts"
                              + (f"; {majority[layer].agreeing} labels are the majority label of their top "
                                 f"{majority[layer].top_k} images" if layer in majority else ""))
                  for layer, row in counts.iterrows()]
        if self.reused:
            lines.append(SummaryLine("Reused from the cache: " + ", ".join(self.reused)))
        lines += [SummaryLine(warning, WARNING) for warning in self.warnings]
        if self.skipped_images:
            lines.append(SummaryLine(f"Skipped {len(self.skipped_images)} unreadable image(s), "
                                     f"e.g. {self.skipped_images[0]}", WARNING))
        lines += [SummaryLine(f"Skipped {stage.stage}: {stage.reason} {stage.fix}", SKIPPED) for stage in self.skipped]
        lines.append(SummaryLine("Timings: " + ", ".join(f"{stage} {seconds:.1f} s"
                                                         for stage, seconds in self.timings.items())))
        return lines


# Kinds of summary line: a plain line; something to look at (skipped images, recomputed
# cache entries); an optional stage the run left out, with why and what to do.
INFO, WARNING, SKIPPED = "info", "warning", "skipped"


@dataclass(frozen=True)
class SummaryLine:
    text: str
    kind: str = INFO


@dataclass(frozen=True)
class SkippedStage:
    """An optional stage a run left out: which, why, and what to do to have it."""

    stage: str  # LABEL_QUALITY or OUTPUT_CHECK
    reason: str
    fix: str


LABEL_QUALITY, OUTPUT_CHECK = "label quality", "output-layer check"


def config_from_run(run: Run, **overrides) -> DescribeConfig:
    """The configuration a run was made with, changed by ``overrides``.

    With a new ``concept_set`` this re-describes the run's units from the cached
    activations and image features: only the concepts' text encoding and the
    similarity step are computed. A run with a name (``run_name``) gets the new list's
    name added to it, so that the two are told apart.

    The built-in demo's runs (``demo_runs.is_demo_run``) are recomputed from the
    installed package's weights and probe images; their cache and result folders are
    left to the defaults, or to ``overrides``. Other runs imported from a results
    bundle are refused: their manifests name another machine's files.
    """
    if run.from_reference_tool:
        raise InvalidInputError(
            f"{run.label} was imported from a CSV: its activations were never computed here. "
            "Run a new dissection of the model instead."
        )
    manifest = run.manifest
    known = set(DescribeConfig.__dataclass_fields__)
    settings = {key: value for key, value in manifest.config.items() if key in known}
    if is_demo_run(run.path):
        checkpoint, probe = demo_run_inputs(run.path)
        for folder in ("activation_dir", "result_dir"):  # the demo build's, relative to its work folder
            settings.pop(folder, None)
        settings.update(target_checkpoint=str(checkpoint), d_probe=str(probe))
    else:
        refuse_imported(run.sources)
    labelled = settings.get("concept_source", "clip") != "clip"
    # A labelled run's concepts are its labels (None), or a list of formulas over them.
    own_labels = labelled and is_own_labels(manifest.concept_set.source)
    settings.update(target_layers=tuple(manifest.layers), target_model=manifest.target_model,
                    clip_model=manifest.clip_model, concept_set=None if own_labels else manifest.concept_set.source)
    concepts = overrides.get("concept_set")
    if concepts is not None and settings.get("run_name") and "run_name" not in overrides:
        name = Path(concepts.name if isinstance(concepts, ConceptSet) else str(concepts))
        settings["run_name"] = f"{settings['run_name']} · {name.stem if name.suffix == '.txt' else name.name}"
    settings.update(overrides)
    return DescribeConfig(**settings)


def probe_label_names(config: DescribeConfig) -> tuple[str, ...]:
    """The labels of a labelled configuration's probe images (``concept_source`` "labels"),
    sorted: the names a list of formulas over them may use (``label_formulas``).

    Opens the probe set (its file hashes are kept in ``activation_dir``); loads no model.
    """
    with about("concept_source"):
        concept_source = CONCEPT_SOURCES.get(config.concept_source).value
    if concept_source is None:
        raise InvalidInputError(f"`concept_source` {config.concept_source!r} takes no labels from the probe images.")
    with about("d_probe"):
        probe = open_probe(config.d_probe, data_dir=config.data_dir, imagenet_val_dir=config.imagenet_val_dir,
                           index_dir=Path(config.activation_dir))
    with about("probe_labels"):
        return concept_source(probe, config.probe_labels).concepts.concepts


def _clip_identity(clip: Union[str, ClipModel]) -> tuple[str, str]:
    """Canonical CLIP name and an identity of its weights, without loading the model."""
    if isinstance(clip, ClipModel):
        return clip.name, clip.weights_id
    arch, pretrained = parse_clip_name(clip)
    if Path(pretrained).is_file():
        return f"{arch}:{Path(pretrained).resolve()}", file_sha256(pretrained)
    return f"{arch}:{pretrained}", pretrained


def check_config(config: DescribeConfig) -> tuple[list[str], dict]:
    """The checks that need nothing loaded: layer list, registered names, numbers."""
    layers = check_settings(config)
    with about("pool_mode"):
        POOL_MODES.get(config.pool_mode)
    with about("similarity_fn"):
        SIMILARITY_FUNCTIONS.get(config.similarity_fn)
        check_concept_source(config.similarity_fn, config.concept_source)
    with about("decoder"):
        DECODERS.get(config.decoder)
    with about("similarity_params"):
        params = resolve_params(config.similarity_fn, config.similarity_params)
    if isinstance(config.target_model, str):
        with about("target_model"):
            check_model_name(config.target_model)
    with about("quality_resamples"):
        QualitySettings(resamples=config.quality_resamples).check()
    return layers, params


# Fields that may differ between the models described together in one probe pass;
# every other field is shared (one probe set, one CLIP, one concept set, one method).
PER_MODEL_FIELDS = ("target_model", "target_checkpoint", "target_layers", "layer_layout", "run_name")


def describe(config: DescribeConfig, progress: Optional[ProgressFn] = None) -> DescribeResult:
    """Label every unit of the configured layers and write a run folder."""
    return describe_together([config], progress)[0]


def describe_together(configs: Sequence[DescribeConfig], progress: Optional[ProgressFn] = None
                      ) -> list[DescribeResult]:
    """Describe several target models over one pass of the probe images: each image
    is decoded once and CLIP sees it once; one run folder per model, as
    :func:`describe` writes. The configs differ only in :data:`PER_MODEL_FIELDS`.
    """
    log = RunLog(progress)
    inputs = check_inputs([with_source_defaults(config) for config in configs], log)
    stored = look_up_cache(inputs, log)
    record_probe_images(inputs, stored, log)
    encode_concepts(inputs, stored, log)
    results = []
    for number in range(len(inputs.targets)):
        log.start_model()
        labels = label_units(inputs, stored, number, log)
        results.append(write_run_folder(inputs, stored, number, labels, log))
    return results


# ----------------------------------------------------------------------------- stage results


class RunLog:
    """Stage timings and warnings. The stages shared by the models of one pass count
    for each model; :meth:`start_model` begins one model's own stages."""

    def __init__(self, progress: Optional[ProgressFn]):
        self.progress = progress
        self.timings: dict[str, float] = {}
        self.warnings: list[str] = []
        self.clock = time.perf_counter()
        self._shared: Optional[tuple[dict[str, float], list[str]]] = None

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - self.clock
        self.clock = now

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        logger.warning(message)

    def start_model(self) -> None:
        if self._shared is None:
            self._shared = (dict(self.timings), list(self.warnings))
        self.timings, self.warnings = dict(self._shared[0]), list(self._shared[1])


@dataclass
class TargetInputs:
    """One target model of a pass, loaded and checked, with its activation cache keys."""

    config: DescribeConfig
    model: TargetModel
    layers: list[str]
    layouts: dict[str, Layout]
    layer_parts: dict[str, dict]
    layer_keys: dict[str, str]


@dataclass
class RunInputs:
    """Everything the stages need, checked before any heavy work (:func:`check_inputs`)."""

    config: DescribeConfig  # the shared fields (the first model's config)
    params: dict  # the similarity function's parameters, defaults filled in
    cache: FeatureCache
    device: torch.device
    precision: str
    probe: ProbeSet
    concepts: ConceptSet
    clip_name: str  # canonical CLIP name, or "labels" for the labelled-probe source
    clip_weights: str
    labelled: Optional[LabelledProbe]
    targets: list[TargetInputs]
    image_key: str
    image_parts: dict
    text_key: str
    text_parts: dict


@dataclass
class StoredStages:
    """The stages' results: what the cache had (:func:`look_up_cache`), completed by
    :func:`record_probe_images` and :func:`encode_concepts`."""

    activations: list[dict[str, Optional[LayerActivations]]]  # per target, per layer
    image_features: Optional[ImageFeatures]
    text_features: Optional[TextFeatures]
    clip: Optional[ClipModel]
    reused: list[str]  # shared stages served from the cache
    reused_by_model: list[list[str]]


@dataclass
class UnitLabels:
    """One model's labels and the tables of its run folder (:func:`label_units`)."""

    descriptions: pd.DataFrame
    top_concepts: pd.DataFrame
    top_images: pd.DataFrame
    unit_stats: pd.DataFrame
    similarity_keys: dict[str, str]
    reused: list[str]
    quality_files: dict[str, bytes]
    quality_note: dict  # the manifest's label_quality record: settings, or why skipped
    output_checks: list
    majority_checks: list[MajorityCheck]  # labelled runs only
    skipped: list[SkippedStage]


# ----------------------------------------------------------------------------- the stages


def check_inputs(configs: Sequence[DescribeConfig], log: RunLog) -> RunInputs:
    """Check every input and load the target models, before any heavy work."""
    if not configs:
        raise InvalidInputError("No target model given: set `target_model`.")
    config = configs[0]
    _check_shared_fields(configs)
    layer_lists, params = zip(*(check_config(each) for each in configs))
    params = params[0]
    require_prerequisites(configs)  # all that is missing, in one message, before anything loads
    with about("activation_dir"):
        cache = FeatureCache(config.activation_dir, on_problem=log.warn)
    with about("device"):
        device = resolve_device(config.device)
    with about("concept_source"):
        concept_source = CONCEPT_SOURCES.get(config.concept_source).value
    if concept_source is None:
        with about("concept_set"):
            concepts = (
                config.concept_set if isinstance(config.concept_set, ConceptSet)
                else load_concept_set(config.concept_set)
            )
        with about("clip_model"):
            clip_name, clip_weights = _clip_identity(config.clip_model)
    with about("d_probe"):
        probe = open_probe(config.d_probe, data_dir=config.data_dir, imagenet_val_dir=config.imagenet_val_dir,
                           download=config.download, progress=log.progress, index_dir=cache.root)
    if probe.listing_skipped:
        log.warn(f"Skipped while listing {probe.name}: "
                 + ", ".join(f"{count} {reason}" for reason, count in sorted(probe.listing_skipped.items())) + ".")
    models = [_load_target(each, log.progress) for each in configs]
    _check_distinct(models)
    labelled = None
    if concept_source is not None:
        with about("probe_labels"):
            labelled = concept_source(probe, config.probe_labels)
        if config.concept_set is not None:
            with about("concept_set"):
                formulas = (config.concept_set if isinstance(config.concept_set, ConceptSet)
                            else load_concept_set(config.concept_set))
                labelled = formula_probe(labelled, formulas)
        for warning in labelled.warnings:
            log.warn(warning)
        # No CLIP model: the manifest names the source in its place.
        concepts, clip_name, clip_weights = labelled.concepts, "labels", labelled.fingerprint
    # Pixels decoded another way differ slightly, so their entries are kept apart
    # (the reference's Pillow path keeps the keys it always had).
    decoding = {} if config.decoder == "pil" else {"decoder": config.decoder, "decoded_on": device.type}
    targets = []
    for each, model, layers in zip(configs, models, layer_lists):
        with about("target_layers"):
            for layer in layers:
                get_layer(model.module, layer)
        layouts = resolve_layouts(model.module, layers, _sample_batch(probe, model), config.pool_mode,
                                  each.layer_layout)
        # Token layers' entries from before they kept maps (patch tokens on their grid) hold
        # none: a key part of their own keeps those entries from being served.
        parts = {layer: dict(target=model.name, weights=model.weights_id, layer=layer, pool_mode=config.pool_mode,
                             layout=layouts[layer].name, top_maps=config.top_maps, probe=probe.fingerprint,
                             **decoding, **({"maps": "patch grid"} if layouts[layer] is TOKENS else {}))
                 for layer in layers}
        targets.append(TargetInputs(each, model, layers, layouts, parts,
                                    {layer: cache.key("activations", **part) for layer, part in parts.items()}))
    check_probe_size(config.similarity_fn, len(probe), params)
    check_label_probe_size(config.similarity_fn, len(probe), params)

    precision = "fp16" if device.type == "cuda" else "fp32"
    if labelled is None:
        image_parts = dict(clip=clip_name, weights=clip_weights, precision=precision, probe=probe.fingerprint,
                           **decoding)
        text_parts = dict(clip=clip_name, weights=clip_weights, precision=precision, concepts=concepts.sha256)
        image_key, text_key = cache.key("clip_images", **image_parts), cache.key("clip_texts", **text_parts)
    else:  # cheap to rebuild, so not stored; the keys make the similarity entries specific to the labels
        image_parts = dict(probe=probe.fingerprint, labels=labelled.fingerprint)
        text_parts = dict(concepts=concepts.sha256)
        image_key, text_key = cache.key("label_images", **image_parts), cache.key("label_texts", **text_parts)
    log.lap("load")
    return RunInputs(config, params, cache, device, precision, probe, concepts, clip_name, clip_weights, labelled,
                     targets, image_key, image_parts, text_key, text_parts)


def look_up_cache(inputs: RunInputs, log: RunLog) -> StoredStages:
    """What the cache already holds; CLIP is loaded only if something is missing."""
    cache = inputs.cache
    activations = [{layer: cache.load(LayerActivations, target.layer_keys[layer]) for layer in target.layers}
                   for target in inputs.targets]
    reused_by_model = [[f"activations {layer}" for layer, entry in layers.items() if entry is not None]
                       for layers in activations]
    config, labelled = inputs.config, inputs.labelled
    if labelled is None:
        image_features = cache.load(ImageFeatures, inputs.image_key)
        text_features = cache.load(TextFeatures, inputs.text_key, n_concepts=len(inputs.concepts))
    else:
        image_features = ImageFeatures(labelled.image_features, torch.arange(len(inputs.probe)))
        text_features = TextFeatures(labelled.text_features)
    reused = ["CLIP image features"] if labelled is None and image_features is not None else []
    reused += ["CLIP text features"] if labelled is None and text_features is not None else []
    clip = config.clip_model if isinstance(config.clip_model, ClipModel) else None
    if clip is None and (image_features is None or text_features is None):
        clip = load_clip(config.clip_model, inputs.device)
    if clip is not None and text_features is None:
        check_context_length(clip, list(inputs.concepts.concepts))
    log.lap("load")
    return StoredStages(activations, image_features, text_features, clip, reused, reused_by_model)


def record_probe_images(inputs: RunInputs, stored: StoredStages, log: RunLog,
                        probe_pass: Callable[..., ProbePass] = record_probe_pass) -> Optional[ProbePass]:
    """One pass over the probe images for every missing layer of every model and the
    missing CLIP image features, once there is room for their results; ``probe_pass``
    makes it (``record_probe_pass``'s arguments; ``ray_sweep`` has one on a Ray cluster).
    Returns the pass, or None when the cache held everything."""
    config, cache = inputs.config, inputs.cache
    missing = [[layer for layer, entry in layers.items() if entry is None] for layers in stored.activations]
    need_images = stored.image_features is None
    _check_room(config, cache.root, len(inputs.probe), inputs.targets, missing, need_images,
                0 if stored.text_features is not None else len(inputs.concepts))
    recorded = None
    if any(missing) or need_images:
        recorded = probe_pass(
            inputs.probe,
            targets=[TargetLayers(target.model, {layer: target.layouts[layer] for layer in layers})
                     for target, layers in zip(inputs.targets, missing)],
            clip=stored.clip if need_images else None,
            pool_mode=config.pool_mode,
            top_maps=config.top_maps,
            batch_size=config.batch_size,
            device=inputs.device,
            num_workers=config.num_workers,
            decoder=config.decoder,
            progress=log.progress,
        )
        for target, entries, recorded_layers in zip(inputs.targets, stored.activations, recorded.layers):
            for layer, entry in recorded_layers.items():
                entries[layer] = entry
                cache.save(entry, target.layer_keys[layer], target.layer_parts[layer])
        if recorded.clip_image_features is not None:
            stored.image_features = ImageFeatures(recorded.clip_image_features, recorded.image_indices,
                                                  recorded.skipped)
            cache.save(stored.image_features, inputs.image_key, inputs.image_parts)
    log.lap("probe pass")
    return recorded


def encode_concepts(inputs: RunInputs, stored: StoredStages, log: RunLog) -> None:
    """CLIP text features of the concepts, when the cache did not have them."""
    if stored.text_features is None:
        features = encode_texts(stored.clip, list(inputs.concepts.concepts), inputs.config.batch_size,
                                progress=log.progress)
        stored.text_features = TextFeatures(features)
        inputs.cache.save(stored.text_features, inputs.text_key, inputs.text_parts)
    log.lap("text encoding")


def label_units(inputs: RunInputs, stored: StoredStages, number: int, log: RunLog) -> UnitLabels:
    """Similarity, descriptions and quality figures of one model, layer by layer
    (p(t) of soft-WPMI is taken over one layer's units). The run's timings count the
    scores, labels and their tables as "similarity", the quality figures as "label quality"."""
    config, cache, concepts, target = inputs.config, inputs.cache, inputs.concepts, inputs.targets[number]
    names = np.asarray(concepts.concepts, dtype=object)
    tables = []  # per layer: descriptions, top concepts, top images, unit stats
    similarity_keys, reused = {}, []
    quality_settings = QualitySettings(resamples=config.quality_resamples)
    qualities: list[LayerQuality] = []
    quality_indices: dict[str, np.ndarray] = {}
    quality_skipped: Optional[SkippedStage] = None
    majority_checks: list[MajorityCheck] = []
    indicator = inputs.labelled.indicator() if inputs.labelled is not None else None
    for done, layer in enumerate(target.layers):
        scoring = layer_scoring(inputs, stored, number, layer)
        similarity_keys[layer] = scoring.similarity_key
        best = scoring.cached_best(cache)
        if best is None:
            best = scoring.best(log.progress)
            cache.save(best, scoring.similarity_key, scoring.similarity_parts)
        else:
            reused.append(f"similarity {layer}")
        tables.append(_layer_tables(layer, best, names, scoring.pooled, scoring.image_indices,
                                    stored.activations[number][layer].mask_threshold, config.top_images))
        if indicator is not None:
            majority_checks.append(majority_check(layer, indicator[scoring.image_indices], scoring.pooled,
                                                  best.indices[:, 0], concepts.concepts, MAJORITY_TOP_K))
        log.lap("similarity")
        if quality_skipped is None:
            try:
                quality = scoring.cached_quality(cache)
                if quality is None:
                    quality = scoring.quality(best, log.progress)
                    cache.save(quality, scoring.quality_key, scoring.quality_parts)
                qualities.append(quality)
                quality_indices[layer] = scoring.image_indices.numpy()
            except InvalidInputError as error:
                # The labels stand without their quality figures; the run says why they are absent.
                quality_skipped = SkippedStage(LABEL_QUALITY, str(error),
                                               _quality_fix(config.similarity_fn, inputs.params, quality_settings))
                qualities = []
        report(log.progress, f"describe layers of {target.model.name}", done + 1, len(target.layers))
        log.lap("label quality")
    descriptions, top_concepts, top_images, unit_stats = (pd.concat(frames, ignore_index=True)
                                                          for frames in zip(*tables))
    log.lap("similarity")
    labels = UnitLabels(
        descriptions=descriptions,
        top_concepts=top_concepts,
        top_images=top_images,
        unit_stats=unit_stats,
        similarity_keys=similarity_keys,
        reused=reused,
        quality_files=quality_files(qualities, quality_indices) if qualities else {},
        quality_note=({"skipped": f"Label-quality figures were not computed: {quality_skipped.reason} "
                                  f"{quality_skipped.fix}"} if quality_skipped
                      else {"settings": asdict(quality_settings)}),
        # A labelled probe's concepts are its label names sorted, not a classifier's output order, so
        # the automatic check would compare unit i with the wrong class (``dissect evaluate --class_names``).
        output_checks=[] if inputs.labelled is not None else _output_checks(concepts, descriptions, top_concepts),
        majority_checks=majority_checks,
        skipped=[quality_skipped] if quality_skipped else [],
    )
    if inputs.labelled is not None and output_layers(descriptions, len(concepts)):
        labels.skipped.append(SkippedStage(
            OUTPUT_CHECK, "the concepts are the probe images' labels in alphabetical order, which need not be "
            "the classifier's output order.", "Run `dissect evaluate RUN_DIR --class_names FILE` with the class "
            "names in output order."))
    log.lap("label quality")
    return labels


@dataclass
class LayerScoring:
    """The similarity and quality stages of one layer of one model: their inputs (the
    layer's activations and the image features aligned on the same probe images), their
    settings and their cache keys (:func:`layer_scoring`). :meth:`best` and :meth:`quality`
    compute without the cache, wherever the object is sent (``ray_sweep`` runs them as
    Ray tasks)."""

    layer: str
    pooled: torch.Tensor
    image_features: torch.Tensor
    text_features: torch.Tensor
    image_indices: torch.Tensor
    concepts: Sequence[str]
    similarity_fn: str
    params: dict
    quality_settings: QualitySettings
    device: Optional[str]  # the run's device setting, resolved where the stage runs
    similarity_parts: dict
    similarity_key: str
    quality_parts: dict
    quality_key: str

    def cached_best(self, cache: FeatureCache) -> Optional[BestConcepts]:
        return cache.load(BestConcepts, self.similarity_key, n_units=self.pooled.shape[1],
                          n_concepts=len(self.concepts))

    def cached_quality(self, cache: FeatureCache) -> Optional[LayerQuality]:
        return cache.load(LayerQuality, self.quality_key, n_units=self.pooled.shape[1])

    def best(self, progress: Optional[ProgressFn] = None) -> BestConcepts:
        scores = similarity_matrix(self.similarity_fn, self.image_features, self.text_features, self.pooled,
                                   device=resolve_device(self.device), progress=progress, **self.params)
        return BestConcepts(*torch.topk(scores, min(TOP_CONCEPTS_KEPT, scores.shape[1]), dim=1))

    def quality(self, best: BestConcepts, progress: Optional[ProgressFn] = None) -> LayerQuality:
        """The layer's quality figures (dissect_core.quality); InvalidInputError where they do not apply."""
        descriptions = pd.DataFrame({"unit": range(self.pooled.shape[1]),
                                     "description": [self.concepts[i] for i in best.indices[:, 0].tolist()],
                                     "similarity": best.values[:, 0].numpy()})
        return layer_quality(self.layer, descriptions, best.values, best.indices, self.concepts, self.image_features,
                             self.text_features, self.pooled, self.similarity_fn, self.params,
                             self.quality_settings, progress)


def layer_scoring(inputs: RunInputs, stored: StoredStages, number: int, layer: str) -> LayerScoring:
    """The similarity and quality stages of ``layer`` of model ``number``, once its activations,
    the image features and the text features are at hand."""
    config, cache, target = inputs.config, inputs.cache, inputs.targets[number]
    pooled, image_features, image_indices = _align(stored.activations[number][layer], stored.image_features)
    similarity_parts = dict(activations=target.layer_keys[layer], images=inputs.image_key,
                            texts=inputs.text_key, similarity_fn=config.similarity_fn, params=inputs.params)
    similarity_key = cache.key("similarity", **similarity_parts)
    settings = QualitySettings(resamples=config.quality_resamples)
    quality_parts = dict(similarity=similarity_key, settings=asdict(settings))
    return LayerScoring(layer, pooled, image_features, stored.text_features.features, image_indices,
                        inputs.concepts.concepts, config.similarity_fn, inputs.params, settings,
                        str(inputs.device), similarity_parts, similarity_key, quality_parts,
                        cache.key("label_quality", **quality_parts))


def write_run_folder(inputs: RunInputs, stored: StoredStages, number: int, labels: UnitLabels,
                     log: RunLog, run_dir: Optional[Path] = None) -> DescribeResult:
    """One model's run folder: maps first, then the tables, the manifest last. It is a new
    folder in ``result_dir`` unless ``run_dir`` (an empty folder) is given."""
    target, probe, concepts = inputs.targets[number], inputs.probe, inputs.concepts
    config = target.config
    activations = stored.activations[number]
    skipped = sorted(set(activations[target.layers[0]].skipped) | set(stored.image_features.skipped))
    skipped_labels = [probe.item_label(i) for i in skipped]
    reused = stored.reused_by_model[number] + stored.reused + labels.reused
    run_dir = new_run_dir(config.result_dir, target.model.name) if run_dir is None else run_dir
    labelled = inputs.labelled is not None
    for layer in target.layers:
        if config.top_maps and target.layouts[layer] is TOKENS and activations[layer].maps is None:
            log.warn(f"Layer {layer!r} of {target.model.name} gets no activation maps (heatmaps, masks): its "
                     "patch tokens (all but the first, the class token) do not form a square grid.")
    args = {
        "clip_model": (inputs.clip_name if labelled or isinstance(config.clip_model, ClipModel)
                       else config.clip_model),
        "target_model": target.model.name,
        "target_layers": target.layers,
        "d_probe": config.d_probe,
        "concept_set": config.concept_set if isinstance(config.concept_set, str) and not labelled else concepts.name,
        "batch_size": config.batch_size,
        "device": str(inputs.device),
        "activation_dir": str(config.activation_dir),
        "result_dir": str(config.result_dir),
        "pool_mode": config.pool_mode,
        "similarity_fn": config.similarity_fn,
    }
    manifest = RunManifest(
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        target_model=target.model.name,
        target_checkpoint=None if config.target_checkpoint is None else str(config.target_checkpoint),
        target_weights_sha256=target.model.weights_id,
        target_source=target.model.source,
        layers=target.layers,
        clip_model=inputs.clip_name,
        clip_weights=inputs.clip_weights,
        precision=inputs.precision,
        probe=ProbeRecord(
            name=probe.name,
            spec=probe.spec,
            fingerprint=probe.fingerprint,
            n_images=len(probe),
            n_skipped=len(skipped),
            skipped=skipped_labels[:1000],
            listing_skipped=probe.listing_skipped,
        ),
        concept_set=ConceptSetRecord(
            name=concepts.name,
            source=concepts.source,
            sha256=concepts.sha256,
            n_concepts=len(concepts),
            duplicates_dropped=concepts.duplicates_dropped,
            blank_lines_dropped=concepts.blank_lines_dropped,
        ),
        similarity_fn=config.similarity_fn,
        similarity_params=inputs.params,
        pool_mode=config.pool_mode,
        device=str(inputs.device),
        config=_plain_settings(config),
        cache_keys=CacheKeys(activations=target.layer_keys, clip_images=inputs.image_key, clip_texts=inputs.text_key,
                             similarity=labels.similarity_keys),
        reused_from_cache=reused,
        warnings=list(log.warnings),
        versions=_versions(),
        timings_s=dict(log.timings),
        layouts={layer: target.layouts[layer].name for layer in target.layers},
        label_quality=labels.quality_note,
        output_check=[asdict(check) for check in labels.output_checks],
        majority_check=labels.majority_checks,
    )
    if config.top_maps:  # before the run files: a run is listed once descriptions.csv exists
        layer_maps = {layer: (entry.maps, entry.map_images) for layer, entry in activations.items()
                      if entry.maps is not None}
        write_stored_maps(run_dir, layer_maps, labels.top_images, view_steps(target.model.preprocess),
                          min(config.top_maps, config.top_images))
    write_run(
        run_dir,
        labels.descriptions,
        args=args,
        manifest=manifest,
        top_concepts=labels.top_concepts,
        top_images=labels.top_images,
        unit_stats=labels.unit_stats,
        extra_files=labels.quality_files,
    )
    log.lap("write")
    return DescribeResult(run_dir, load_run(run_dir), dict(log.timings), reused, skipped_labels, list(log.warnings),
                          list(labels.skipped))


def _check_shared_fields(configs: Sequence[DescribeConfig]) -> None:
    """Models described together share everything but :data:`PER_MODEL_FIELDS`."""
    first = configs[0]
    for other in configs[1:]:
        for name in DescribeConfig.__dataclass_fields__:
            mine, theirs = _identity(getattr(first, name)), _identity(getattr(other, name))
            if name not in PER_MODEL_FIELDS and mine != theirs:
                raise InvalidInputError(f"Models described together must share `{name}` ({mine} and {theirs}): "
                                        "describe them separately instead.")


def _identity(value):
    """What makes a setting the same: a loaded CLIP or concept set by its name and content."""
    if isinstance(value, ClipModel):
        return f"{value.name} ({value.weights_id})"
    if isinstance(value, ConceptSet):
        return f"{value.name} ({value.sha256[:12]})"
    return value


def _load_target(config: DescribeConfig, progress: Optional[ProgressFn]) -> TargetModel:
    if isinstance(config.target_model, TargetModel):
        return config.target_model
    with about("target_model"):
        return load_target_model(config.target_model, config.target_checkpoint, weights_dir=config.data_dir,
                                 progress=progress)


def _check_distinct(models: Sequence[TargetModel]) -> None:
    """The same weights twice would be recorded twice into one cache entry."""
    seen: dict[tuple[str, str], int] = {}
    for number, model in enumerate(models):
        other = seen.setdefault((model.name, model.weights_id), number)
        if other != number:
            with about("target_model"):
                raise InvalidInputError(
                    f"Model {model.name} is listed twice (models {other + 1} and {number + 1} have the same "
                    "weights): list each model once.")


def _sample_batch(probe, target: TargetModel) -> torch.Tensor:
    """The first readable probe image, preprocessed for the target: a batch of one for
    reading the layers' layouts before the probe pass."""
    for index in range(min(len(probe), 50)):
        try:
            image = probe.load_image(index)
        except InvalidInputError:  # unreadable: skipped here as in the probe pass
            continue
        return target.preprocess(image).unsqueeze(0)
    raise InvalidInputError(
        f"None of the first images of probe set {probe.name!r} could be read. "
        "Check that the files are images (JPEG, PNG, …) and not damaged."
    )


# Bytes per stored value, per CLIP feature dimension assumed (ViT-L is 768, RN50x64 1024),
# and per row of a run's CSV files, for the free-space estimate before the probe pass.
_FLOAT_BYTES, _FEATURE_DIMS, _CSV_ROW_BYTES = 4, 1024, 64
# Units assumed for a layer whose module holds no weights to count them from (e.g. a ReLU).
_UNKNOWN_UNITS = 4096


def _units(module: torch.nn.Module) -> int:
    """The layer's channels, from the last weighted submodule (conv, linear, norm): an estimate."""
    for sub in reversed(list(module.modules())):
        for attribute in ("out_channels", "out_features", "num_features", "normalized_shape"):
            value = getattr(sub, attribute, None)
            if isinstance(value, int):
                return value
            if isinstance(value, tuple) and value:
                return int(value[-1])
    return _UNKNOWN_UNITS


def _check_room(config: DescribeConfig, cache_root: Path, n_images: int, targets: Sequence[TargetInputs],
                missing: Sequence[Sequence[str]], need_images: bool, new_concepts: int) -> None:
    """Check before the probe pass that the cache and result folders can be written and
    have room for what this run will store (a generous estimate), so a full disk or a
    read-only folder is found in seconds, not after hours of work."""
    units = [{layer: _units(get_layer(target.model.module, layer)) for layer in target.layers} for target in targets]
    all_units = [count for layers in units for count in layers.values()]
    cache_bytes = sum(n_images * (layers[layer] + 2) * _FLOAT_BYTES
                      for layers, missing_layers in zip(units, missing) for layer in missing_layers)
    cache_bytes += (n_images * _FEATURE_DIMS if need_images else 0) * _FLOAT_BYTES
    cache_bytes += new_concepts * _FEATURE_DIMS * _FLOAT_BYTES + len(all_units) * max(all_units) * 64
    run_bytes = sum(all_units) * (config.top_images + 2 * TOP_CONCEPTS_KEPT) * _CSV_ROW_BYTES
    margin = 1.25
    check_room(cache_root, int(cache_bytes * margin), "the cache", "pass another --activation_dir")
    check_room(Path(config.result_dir), int(run_bytes * margin), "the run folder", "pass another --result_dir")


def _align(entry: LayerActivations, image_features: ImageFeatures) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows of activations and image features for the images both could read.

    Both come from the same pass unless one was cached earlier; then an image that
    became unreadable in between is dropped from both.
    """
    act_indices, img_indices = entry.image_indices, image_features.image_indices
    if torch.equal(act_indices, img_indices):
        return entry.pooled, image_features.features, act_indices
    common, act_rows, img_rows = np.intersect1d(
        act_indices.numpy(), img_indices.numpy(), assume_unique=True, return_indices=True
    )
    return (entry.pooled[torch.from_numpy(act_rows)], image_features.features[torch.from_numpy(img_rows)],
            torch.from_numpy(common))


def _layer_tables(layer: str, best: BestConcepts, names: np.ndarray, pooled: torch.Tensor,
                  image_indices: torch.Tensor, mask_threshold: Optional[torch.Tensor],
                  top_images: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """A layer's rows of the descriptions, top concepts, top images and unit stats, unit by
    unit and rank by rank within a unit, built as whole columns (a Python loop over every
    unit's top images took seconds for a few thousand units)."""
    n_units, n_kept = best.indices.shape
    units = np.arange(n_units)
    concept_ids, scores = best.indices.numpy(), best.values.numpy().astype(np.float64)
    top_values, rows = top_rows(pooled, top_images)  # (k, units)
    n_images = top_values.shape[0]
    thresholds = (np.full(n_units, np.nan) if mask_threshold is None
                  else mask_threshold.numpy().astype(np.float64))
    return (
        pd.DataFrame({"layer": layer, "unit": units, "description": names[concept_ids[:, 0]],
                      "similarity": scores[:, 0]}),
        pd.DataFrame({"layer": layer, "unit": units.repeat(n_kept), "rank": np.tile(np.arange(n_kept), n_units),
                      "concept": names[concept_ids.reshape(-1)], "score": scores.reshape(-1)}),
        pd.DataFrame({"layer": layer, "unit": units.repeat(n_images), "rank": np.tile(np.arange(n_images), n_units),
                      "image_index": image_indices[rows].T.reshape(-1).numpy().astype(np.int64),
                      "activation": top_values.T.reshape(-1).numpy().astype(np.float64)}),
        pd.DataFrame({"layer": layer, "unit": units, "mask_threshold": thresholds}),
    )


def _plain_settings(config: DescribeConfig) -> dict:
    """The config's fields that are plain values, as JSON values (models and concept sets
    given as objects are recorded in their own manifest fields)."""
    settings = {k: v for k, v in vars(config).items() if k not in ("concept_set", "target_model", "clip_model")}
    return json.loads(json.dumps(settings, default=str))


def _quality_fix(similarity_fn: str, params: dict, settings: QualitySettings) -> str:
    """What gives a run its label-quality figures."""
    if similarity_fn not in RESCORABLE:
        return f"Use `similarity_fn` {' or '.join(RESCORABLE)} to have them."
    return (f"Use a probe set of at least {minimum_probe_images(params.get('top_k', 1), settings)} readable images "
            "(`d_probe`) to have them.")


def _output_checks(concepts: ConceptSet, descriptions: pd.DataFrame, top_concepts: pd.DataFrame) -> list:
    """CLIP-Dissect's output-layer check, for layers with one unit per concept when the
    concepts are class names: the built-in ImageNet names, or any list given in class order."""
    if concepts.source == "builtin:imagenet_classes":
        class_names = imagenet_class_names()  # with its duplicate names, so unit i is class i
    else:
        class_names = list(concepts.concepts)
    if not output_layers(descriptions, len(class_names)):
        return []
    return run_output_checks(descriptions, top_concepts, class_names)


def _versions() -> dict[str, str]:
    import open_clip
    import torchvision

    return {
        "dissect_core": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "open_clip": open_clip.__version__,
    }

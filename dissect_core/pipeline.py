"""The CLIP-Dissect pipeline, top to bottom, with every stage cached.

probe images → target activations (+ CLIP image features, same pass)
→ CLIP text features of the concepts → similarity per layer → descriptions.

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
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch

from . import __version__
from .activations import DEFAULT_TOP_MAPS, record_probe_pass, top_rows
from .cache import (FeatureCache, check_activations, check_image_features, check_similarity,
                    check_text_features)
from .catalog import pool_modes
from .clip import ClipModel, check_context_length, encode_texts, load_clip, parse_clip_name
from .concept_sources import CONCEPT_SOURCES
from .concepts import ConceptSet, imagenet_class_names, load_concept_set
from .device import resolve_device
from .drawing import view_steps
from .errors import InvalidInputError, about
from .files import check_room, file_sha256
from .manifest import CacheKeys, ConceptSetRecord, ProbeRecord, RunManifest
from .models import TargetModel, check_model_name, get_layer, load_target_model
from .probe_data import check_num_workers, open_probe
from .progress import ProgressFn, report, report_warning
from .recording import resolve_layouts
from .results import DESCRIPTIONS_FILE, Run, load_run, new_run_dir, refuse_imported, write_run
from .similarity import SIMILARITY_FUNCTIONS, check_probe_size, resolve_params, similarity_matrix
from .unit_views import write_stored_maps
from .quality import (
    LayerQuality, QualitySettings, check_payload, from_payload, layer_quality, output_layers, quality_files,
    run_output_checks, to_payload,
)

TOP_CONCEPTS_KEPT = 5


@dataclass
class DescribeConfig:
    """Everything that defines a dissection. Defaults are the reference tool's,
    except ``device``, where ``None`` means CUDA if available, else the CPU.

    ``target_model`` and ``clip_model`` are names to load, or already-built
    ``TargetModel`` / ``ClipModel`` objects (your own network, see the README).
    """

    target_model: Union[str, TargetModel] = "resnet50"
    target_layers: Sequence[str] = ("conv1", "layer1", "layer2", "layer3", "layer4")
    clip_model: Union[str, ClipModel] = "ViT-B/16"
    d_probe: str = "broden"
    concept_set: Union[str, ConceptSet] = "data/20k.txt"
    similarity_fn: str = "soft_wpmi"
    similarity_params: dict = field(default_factory=dict)
    pool_mode: str = "avg"
    batch_size: int = 200
    device: Optional[str] = None
    activation_dir: str = "saved_activations"
    result_dir: str = "results"
    target_checkpoint: Optional[str] = None
    data_dir: str = "data"
    imagenet_val_dir: Optional[str] = None
    download: bool = False
    num_workers: Optional[int] = None
    top_images: int = 100
    # "labels": concepts are the probe images' labels instead of concept_set's
    # texts through CLIP (dissect_core.concept_sources); clip_model is then unused.
    concept_source: str = "clip"
    probe_labels: Optional[str] = None  # labels CSV (image,label) for the labels source
    run_name: Optional[str] = None  # shown instead of "model · probe · concept set"
    top_maps: int = DEFAULT_TOP_MAPS  # activation maps stored per unit, for unit views and bundles
    layer_layout: dict = field(default_factory=dict)  # layer -> layout name, where it can't be read from the model
    quality_resamples: int = QualitySettings.resamples  # bootstrap resamples for label stability


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

    def summary(self) -> list["SummaryLine"]:
        """What a finished run reports, in order: the CLI prints these lines and the app
        shows them (warnings stand out in both)."""
        lines = [SummaryLine(f"Wrote {self.run_dir / DESCRIPTIONS_FILE}")]
        counts = self.run.descriptions.groupby("layer", sort=False)["description"].agg(["size", "nunique"])
        lines += [SummaryLine(f"{layer}: {row['size']} units, {row['nunique']} distinct concepts")
                  for layer, row in counts.iterrows()]
        if self.reused:
            lines.append(SummaryLine("Reused from the cache: " + ", ".join(self.reused)))
        lines += [SummaryLine(warning, warning=True) for warning in self.warnings]
        if self.skipped_images:
            lines.append(SummaryLine(f"Skipped {len(self.skipped_images)} unreadable image(s), "
                                     f"e.g. {self.skipped_images[0]}", warning=True))
        lines.append(SummaryLine("Timings: " + ", ".join(f"{stage} {seconds:.1f} s"
                                                         for stage, seconds in self.timings.items())))
        return lines


@dataclass(frozen=True)
class SummaryLine:
    text: str
    warning: bool = False  # something the user should look at (skipped images, recomputed entries)


def config_from_run(run: Run, **overrides) -> DescribeConfig:
    """The configuration a run was made with, changed by ``overrides``.

    With a new ``concept_set`` this re-describes the run's units from the cached
    activations and image features: only the concepts' text encoding and the
    similarity step are computed.
    """
    if run.from_reference_tool:
        raise InvalidInputError(
            f"{run.label} was imported from a CSV: its activations were never computed here. "
            "Run a new dissection of the model instead."
        )
    refuse_imported(run.sources)
    manifest = run.manifest
    known = set(DescribeConfig.__dataclass_fields__)
    settings = {key: value for key, value in manifest.config.items() if key in known}
    settings.update(target_layers=tuple(manifest.layers), target_model=manifest.target_model,
                    clip_model=manifest.clip_model, concept_set=manifest.concept_set.source)
    if settings.get("concept_source") == "labels" and "concept_set" in overrides:
        raise InvalidInputError(
            f"{run.label} takes its concepts from its probe images' labels, so it cannot be given a concept "
            "set: run a new dissection with the CLIP concept source instead."
        )
    settings.update(overrides)
    return DescribeConfig(**settings)


def _clip_identity(clip: Union[str, ClipModel]) -> tuple[str, str]:
    """Canonical CLIP name and an identity of its weights, without loading the model."""
    if isinstance(clip, ClipModel):
        return clip.name, clip.weights_id
    arch, pretrained = parse_clip_name(clip)
    if Path(pretrained).is_file():
        return f"{arch}:{Path(pretrained).resolve()}", file_sha256(pretrained)
    return f"{arch}:{pretrained}", pretrained


def _validate(config: DescribeConfig) -> tuple[list[str], dict]:
    """The checks that need nothing loaded: layer list, registered names, numbers."""
    layers = [layer.strip() for layer in config.target_layers if layer.strip()]
    with about("target_layers"):
        if not layers:
            raise InvalidInputError(
                "No target layers given: set `target_layers` to module paths such as layer2,layer3,layer4.")
        if len(set(layers)) != len(layers):
            raise InvalidInputError(f"A layer of `target_layers` is listed twice: {','.join(layers)}.")
    with about("pool_mode"):
        pool_modes().get(config.pool_mode)
    with about("similarity_fn"):
        SIMILARITY_FUNCTIONS.get(config.similarity_fn)
    with about("similarity_params"):
        params = resolve_params(config.similarity_fn, config.similarity_params)
    if isinstance(config.target_model, str):
        with about("target_model"):
            check_model_name(config.target_model)
    for name in ("batch_size", "top_images"):
        value = getattr(config, name)
        if value < 1:
            raise InvalidInputError(f"`{name}` must be at least 1, not {value}.")
    if config.top_maps < 0:
        raise InvalidInputError(f"`top_maps` must be 0 or more, not {config.top_maps}.")
    with about("num_workers"):
        check_num_workers(config.num_workers)
    with about("quality_resamples"):
        QualitySettings(resamples=config.quality_resamples).check()
    return layers, params


def describe(config: DescribeConfig, progress: Optional[ProgressFn] = None) -> DescribeResult:
    """Label every unit of the configured layers and write a run folder."""
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = timings.get(stage, 0.0) + now - clock
        clock = now

    warnings: list[str] = []

    def warn(message: str) -> None:
        warnings.append(message)
        report_warning(progress, message)

    # 1. Check every input before any heavy work.
    layers, params = _validate(config)
    with about("activation_dir"):
        cache = FeatureCache(config.activation_dir, on_problem=warn)
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
        probe = open_probe(
            config.d_probe,
            data_dir=config.data_dir,
            imagenet_val_dir=config.imagenet_val_dir,
            download=config.download,
            progress=progress,
            index_dir=cache.root,
        )
    if probe.listing_skipped:
        warn(f"Skipped while listing {probe.name}: "
             + ", ".join(f"{count} {reason}" for reason, count in sorted(probe.listing_skipped.items())) + ".")
    if isinstance(config.target_model, TargetModel):
        target = config.target_model
    else:
        with about("target_model"):
            target = load_target_model(
                config.target_model, config.target_checkpoint, weights_dir=config.data_dir, progress=progress
            )
    with about("target_layers"):
        for layer in layers:
            get_layer(target.module, layer)
    labelled = None
    if concept_source is not None:
        with about("probe_labels"):
            labelled = concept_source(probe, config.probe_labels)
        # No CLIP model: the manifest names the source in its place.
        concepts, clip_name, clip_weights = labelled.concepts, "labels", labelled.fingerprint
    layouts = resolve_layouts(target.module, layers, _sample_batch(probe, target), config.pool_mode,
                              config.layer_layout)
    check_probe_size(config.similarity_fn, len(probe), params)
    lap("load")

    # 2. Look up every stage in the cache.
    precision = "fp16" if device.type == "cuda" else "fp32"
    layer_parts = {
        layer: dict(target=target.name, weights=target.weights_id, layer=layer,
                    pool_mode=config.pool_mode, layout=layouts[layer].name, top_maps=config.top_maps,
                    probe=probe.fingerprint)
        for layer in layers
    }
    layer_keys = {layer: cache.key("activations", **parts) for layer, parts in layer_parts.items()}
    activations = {layer: cache.load("activations", layer_keys[layer], check_activations) for layer in layers}
    reused = [f"activations {layer}" for layer, entry in activations.items() if entry is not None]
    if labelled is None:
        image_parts = dict(clip=clip_name, weights=clip_weights, precision=precision, probe=probe.fingerprint)
        image_key = cache.key("clip_images", **image_parts)
        text_parts = dict(clip=clip_name, weights=clip_weights, precision=precision, concepts=concepts.sha256)
        text_key = cache.key("clip_texts", **text_parts)
        image_features = cache.load("clip_images", image_key, check_image_features)
        text_features = cache.load("clip_texts", text_key, check_text_features(len(concepts)))
        reused += ["CLIP image features"] if image_features is not None else []
        reused += ["CLIP text features"] if text_features is not None else []
    else:  # cheap to rebuild, so not stored; the keys make the similarity entries specific to the labels
        image_key = cache.key("label_images", probe=probe.fingerprint, labels=labelled.fingerprint)
        text_key = cache.key("label_texts", concepts=concepts.sha256)
        image_features = {"features": labelled.image_features, "image_indices": torch.arange(len(probe)),
                          "skipped": []}
        text_features = {"features": labelled.text_features}

    clip = config.clip_model if isinstance(config.clip_model, ClipModel) else None
    if clip is None and (image_features is None or text_features is None):
        clip = load_clip(config.clip_model, device)
    if clip is not None and text_features is None:
        check_context_length(clip, list(concepts.concepts))
    lap("load")

    # 3. One pass over the probe images for whatever is missing, once there is room for its results.
    missing_layers = [layer for layer in layers if activations[layer] is None]
    _check_room(config, cache.root, len(probe), {layer: _units(get_layer(target.module, layer)) for layer in layers},
                missing_layers, image_features is None, len(concepts) if text_features is None else 0)
    if missing_layers or image_features is None:
        probe_pass = record_probe_pass(
            probe,
            target=target if missing_layers else None,
            layouts={layer: layouts[layer] for layer in missing_layers},
            clip=clip if image_features is None else None,
            pool_mode=config.pool_mode,
            top_maps=config.top_maps,
            batch_size=config.batch_size,
            device=device,
            num_workers=config.num_workers,
            progress=progress,
        )
        for layer, recorded in probe_pass.layers.items():
            activations[layer] = {**recorded.to_payload(), "skipped": probe_pass.skipped}
            cache.save("activations", layer_keys[layer], activations[layer], layer_parts[layer])
        if probe_pass.clip_image_features is not None:
            image_features = {
                "features": probe_pass.clip_image_features,
                "image_indices": probe_pass.image_indices,
                "skipped": probe_pass.skipped,
            }
            cache.save("clip_images", image_key, image_features, image_parts)
    lap("probe pass")

    # 4. CLIP text features of the concepts.
    if text_features is None:
        text_features = {
            "features": encode_texts(clip, list(concepts.concepts), config.batch_size, progress=progress)
        }
        cache.save("clip_texts", text_key, text_features, text_parts)
    lap("text encoding")

    # 5. Similarity and descriptions, layer by layer (p(t) is taken over one layer's units).
    description_rows, concept_rows, image_rows, stat_rows = [], [], [], []
    similarity_keys = {}
    quality_settings = QualitySettings(resamples=config.quality_resamples)
    qualities: list[LayerQuality] = []
    quality_indices: dict[str, np.ndarray] = {}
    quality_skipped: Optional[str] = None
    for number, layer in enumerate(layers):
        entry = activations[layer]
        pooled, image_features_aligned, image_indices = _align(entry, image_features)
        similarity_parts = dict(
            activations=layer_keys[layer], images=image_key, texts=text_key,
            similarity_fn=config.similarity_fn, params=params,
        )
        similarity_keys[layer] = key = cache.key("similarity", **similarity_parts)
        best = cache.load("similarity", key, check_similarity(pooled.shape[1], len(concepts)))
        if best is None:
            scores = similarity_matrix(
                config.similarity_fn, image_features_aligned, text_features["features"], pooled,
                device=device, progress=progress, **params,
            )
            values, indices = torch.topk(scores, min(TOP_CONCEPTS_KEPT, scores.shape[1]), dim=1)
            best = {"values": values, "indices": indices}
            cache.save("similarity", key, best, similarity_parts)
        else:
            reused.append(f"similarity {layer}")
        _collect_rows(layer, best, concepts, pooled, image_indices, entry.get("mask_threshold"),
                      config.top_images, description_rows, concept_rows, image_rows, stat_rows)
        if quality_skipped is None:
            try:
                qualities.append(_label_quality(
                    cache, key, layer, best, concepts, image_features_aligned, text_features["features"], pooled,
                    config.similarity_fn, params, quality_settings, progress))
                quality_indices[layer] = image_indices.numpy()
            except InvalidInputError as error:
                # The labels stand without their quality figures; the run says why they are absent.
                quality_skipped = f"Label-quality figures were not computed: {error}"
                qualities = []
        report(progress, "describe layers", number + 1, len(layers))
    lap("similarity")
    descriptions = pd.DataFrame(description_rows, columns=["layer", "unit", "description", "similarity"])
    top_concepts = pd.DataFrame(concept_rows, columns=["layer", "unit", "rank", "concept", "score"])
    checks = _output_checks(concepts, descriptions, top_concepts)
    extra_files = quality_files(qualities, quality_indices) if qualities else {}
    lap("label quality")

    # 6. The run folder.
    skipped = sorted(set(activations[layers[0]].get("skipped", [])) | set(image_features.get("skipped", [])))
    skipped_labels = [probe.item_label(i) for i in skipped]
    run_dir = new_run_dir(config.result_dir, target.name)
    args = {
        "clip_model": clip_name if labelled or isinstance(config.clip_model, ClipModel) else config.clip_model,
        "target_model": target.name,
        "target_layers": layers,
        "d_probe": config.d_probe,
        "concept_set": config.concept_set if isinstance(config.concept_set, str) and not labelled else concepts.name,
        "batch_size": config.batch_size,
        "device": str(device),
        "activation_dir": str(config.activation_dir),
        "result_dir": str(config.result_dir),
        "pool_mode": config.pool_mode,
        "similarity_fn": config.similarity_fn,
    }
    manifest = RunManifest(
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        target_model=target.name,
        target_checkpoint=None if config.target_checkpoint is None else str(config.target_checkpoint),
        target_weights_sha256=target.weights_id,
        target_source=target.source,
        layers=layers,
        clip_model=clip_name,
        clip_weights=clip_weights,
        precision=precision,
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
        similarity_params=params,
        pool_mode=config.pool_mode,
        device=str(device),
        config=_plain_settings(config),
        cache_keys=CacheKeys(activations=layer_keys, clip_images=image_key, clip_texts=text_key,
                             similarity=similarity_keys),
        reused_from_cache=reused,
        warnings=warnings,
        versions=_versions(),
        timings_s=timings,
        layouts={layer: layouts[layer].name for layer in layers},
        label_quality=({"skipped": quality_skipped} if quality_skipped
                       else {"settings": asdict(quality_settings)}),
        output_check=[asdict(check) for check in checks],
    )
    top_images = pd.DataFrame(image_rows, columns=["layer", "unit", "rank", "image_index", "activation"])
    if config.top_maps:  # before the run files: a run is listed once descriptions.csv exists
        layer_maps = {layer: (activations[layer]["maps"], activations[layer]["map_images"])
                      for layer in layers if activations[layer].get("maps") is not None}
        write_stored_maps(run_dir, layer_maps, top_images, view_steps(target.preprocess),
                          min(config.top_maps, config.top_images))
    write_run(
        run_dir,
        descriptions,
        args=args,
        manifest=manifest,
        top_concepts=top_concepts,
        top_images=top_images,
        unit_stats=pd.DataFrame(stat_rows, columns=["layer", "unit", "mask_threshold"]),
        extra_files=extra_files,
    )
    lap("write")
    return DescribeResult(run_dir, load_run(run_dir), timings, reused, skipped_labels, warnings)


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


def _check_room(config: DescribeConfig, cache_root: Path, n_images: int, units: dict[str, int],
                missing_layers: list[str], need_images: bool, new_concepts: int) -> None:
    """Check before the probe pass that the cache and result folders can be written and
    have room for what this run will store (a generous estimate), so a full disk or a
    read-only folder is found in seconds, not after hours of work."""
    cache_bytes = sum(n_images * (units[layer] + 2) * _FLOAT_BYTES for layer in missing_layers)
    cache_bytes += (n_images * _FEATURE_DIMS if need_images else 0) * _FLOAT_BYTES
    cache_bytes += new_concepts * _FEATURE_DIMS * _FLOAT_BYTES + len(units) * max(units.values()) * 64
    run_bytes = sum(units.values()) * (config.top_images + 2 * TOP_CONCEPTS_KEPT) * _CSV_ROW_BYTES
    margin = 1.25
    check_room(cache_root, int(cache_bytes * margin), "the cache", "pass another --activation_dir")
    check_room(Path(config.result_dir), int(run_bytes * margin), "the run folder", "pass another --result_dir")


def _align(entry: dict, image_features: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows of activations and CLIP features for the images both could read.

    Both come from the same pass unless one was cached earlier; then an image that
    became unreadable in between is dropped from both.
    """
    act_indices, img_indices = entry["image_indices"], image_features["image_indices"]
    if torch.equal(act_indices, img_indices):
        return entry["pooled"], image_features["features"], act_indices
    common, act_rows, img_rows = np.intersect1d(
        act_indices.numpy(), img_indices.numpy(), assume_unique=True, return_indices=True
    )
    return (entry["pooled"][torch.from_numpy(act_rows)], image_features["features"][torch.from_numpy(img_rows)],
            torch.from_numpy(common))


def _collect_rows(layer, best, concepts, pooled, image_indices, mask_threshold, top_images,
                  description_rows, concept_rows, image_rows, stat_rows) -> None:
    names = concepts.concepts
    values, indices = best["values"].tolist(), best["indices"].tolist()
    top_values, rows = top_rows(pooled, top_images)
    top_probe = image_indices[rows]
    for unit in range(pooled.shape[1]):
        description_rows.append((layer, unit, names[indices[unit][0]], values[unit][0]))
        for rank, (score, concept) in enumerate(zip(values[unit], indices[unit])):
            concept_rows.append((layer, unit, rank, names[concept], score))
        for rank in range(top_values.shape[0]):
            image_rows.append((layer, unit, rank, int(top_probe[rank, unit]), float(top_values[rank, unit])))
        threshold = float("nan") if mask_threshold is None else float(mask_threshold[unit])
        stat_rows.append((layer, unit, threshold))


def _plain_settings(config: DescribeConfig) -> dict:
    """The config's fields that are plain values, as JSON values (models and concept sets
    given as objects are recorded in their own manifest fields)."""
    settings = {k: v for k, v in vars(config).items() if k not in ("concept_set", "target_model", "clip_model")}
    return json.loads(json.dumps(settings, default=str))


def _label_quality(cache: FeatureCache, similarity_key: str, layer: str, best: dict, concepts: ConceptSet,
                   image_features: torch.Tensor, text_features: torch.Tensor, pooled: torch.Tensor,
                   similarity_fn: str, params: dict, settings: QualitySettings,
                   progress: Optional[ProgressFn]) -> LayerQuality:
    """The layer's quality figures (dissect_core.quality), cached beside its similarity."""
    parts = dict(similarity=similarity_key, settings=asdict(settings))
    key = cache.key("label_quality", **parts)
    cached = cache.load("label_quality", key, check_payload(pooled.shape[1]))
    if cached is not None:
        return from_payload(cached)
    names = concepts.concepts
    descriptions = pd.DataFrame({"unit": range(pooled.shape[1]),
                                 "description": [names[i] for i in best["indices"][:, 0].tolist()],
                                 "similarity": best["values"][:, 0].numpy()})
    quality = layer_quality(layer, descriptions, best["values"], best["indices"], names, image_features,
                            text_features, pooled, similarity_fn, params, settings, progress)
    cache.save("label_quality", key, to_payload(quality), parts)
    return quality


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

"""The CLIP-Dissect pipeline, top to bottom, with every stage cached.

probe images → target activations (+ CLIP image features, same pass)
→ CLIP text features of the concepts → similarity per layer → descriptions.

Every input is checked before any heavy work starts, so a typo in a layer name
or an over-long concept fails in seconds rather than after the forward pass.
Each stage's output is stored in the content-addressed cache as soon as it is
computed, so an error later in the run loses nothing already computed.
"""
from __future__ import annotations

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
from .activations import POOL_MODES, record_probe_pass
from .cache import (FeatureCache, check_activations, check_image_features, check_similarity,
                    check_text_features)
from .clip import ClipModel, check_context_length, encode_texts, load_clip, parse_clip_name
from .concepts import ConceptSet, imagenet_class_names, load_concept_set
from .device import resolve_device
from .errors import InvalidInputError
from .files import file_sha256
from .models import TargetModel, get_layer, load_target_model
from .probe_data import check_num_workers, open_probe
from .progress import ProgressFn, report, report_warning
from .quality import (
    LayerQuality, QualitySettings, check_payload, from_payload, layer_quality, output_layers, quality_files,
    run_output_checks, to_payload,
)
from .results import Run, load_run, new_run_dir, write_run
from .similarity import SIMILARITY_FUNCTIONS, resolve_params, similarity_matrix

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
    settings = dict(run.manifest.get("config", {}))
    settings["target_layers"] = tuple(settings.get("target_layers", run.layers))
    settings["target_model"] = run.manifest["target_model"]
    settings["clip_model"] = run.args.get("clip_model", run.manifest.get("clip_model"))
    settings["concept_set"] = run.manifest.get("concept_set", {}).get("source", "")
    known = set(DescribeConfig.__dataclass_fields__)
    settings = {key: value for key, value in settings.items() if key in known}
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
    layers = [layer.strip() for layer in config.target_layers if layer.strip()]
    if not layers:
        raise InvalidInputError("No target layers given: pass e.g. --target_layers layer2,layer3,layer4.")
    if len(set(layers)) != len(layers):
        raise InvalidInputError(f"A target layer is listed twice: {','.join(layers)}.")
    if config.pool_mode not in POOL_MODES:
        raise InvalidInputError(f"--pool_mode must be one of {', '.join(POOL_MODES)}, not {config.pool_mode!r}.")
    if config.similarity_fn not in SIMILARITY_FUNCTIONS:
        raise InvalidInputError(
            f"--similarity_fn {config.similarity_fn!r} is unknown; choose one of {', '.join(SIMILARITY_FUNCTIONS)}."
        )
    if config.batch_size < 1:
        raise InvalidInputError(f"--batch_size must be at least 1, not {config.batch_size}.")
    check_num_workers(config.num_workers)
    if config.top_images < 1:
        raise InvalidInputError(f"top_images must be at least 1, not {config.top_images}.")
    QualitySettings(resamples=config.quality_resamples).check()
    return layers, resolve_params(config.similarity_fn, config.similarity_params)


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
    cache = FeatureCache(config.activation_dir, on_problem=warn)
    device = resolve_device(config.device)
    concepts = (
        config.concept_set if isinstance(config.concept_set, ConceptSet) else load_concept_set(config.concept_set)
    )
    clip_name, clip_weights = _clip_identity(config.clip_model)
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
        target = load_target_model(
            config.target_model, config.target_checkpoint, weights_dir=config.data_dir, progress=progress
        )
    for layer in layers:
        get_layer(target.module, layer)
    lap("load")

    # 2. Look up every stage in the cache.
    precision = "fp16" if device.type == "cuda" else "fp32"
    layer_parts = {
        layer: dict(target=target.name, weights=target.weights_id, layer=layer,
                    pool_mode=config.pool_mode, probe=probe.fingerprint)
        for layer in layers
    }
    layer_keys = {layer: cache.key("activations", **parts) for layer, parts in layer_parts.items()}
    image_parts = dict(clip=clip_name, weights=clip_weights, precision=precision, probe=probe.fingerprint)
    image_key = cache.key("clip_images", **image_parts)
    text_parts = dict(clip=clip_name, weights=clip_weights, precision=precision, concepts=concepts.sha256)
    text_key = cache.key("clip_texts", **text_parts)

    activations = {layer: cache.load("activations", layer_keys[layer], check_activations) for layer in layers}
    image_features = cache.load("clip_images", image_key, check_image_features)
    text_features = cache.load("clip_texts", text_key, check_text_features(len(concepts)))
    reused = [f"activations {layer}" for layer, entry in activations.items() if entry is not None]
    reused += ["CLIP image features"] if image_features is not None else []
    reused += ["CLIP text features"] if text_features is not None else []

    clip = config.clip_model if isinstance(config.clip_model, ClipModel) else None
    if clip is None and (image_features is None or text_features is None):
        clip = load_clip(config.clip_model, device)
    if clip is not None and text_features is None:
        check_context_length(clip, list(concepts.concepts))
    lap("load")

    # 3. One pass over the probe images for whatever is missing.
    missing_layers = [layer for layer in layers if activations[layer] is None]
    if missing_layers or image_features is None:
        probe_pass = record_probe_pass(
            probe,
            target=target if missing_layers else None,
            layers=missing_layers,
            clip=clip if image_features is None else None,
            pool_mode=config.pool_mode,
            batch_size=config.batch_size,
            device=device,
            num_workers=config.num_workers,
            progress=progress,
        )
        for layer, recorded in probe_pass.layers.items():
            activations[layer] = {
                "pooled": recorded.pooled,
                "image_indices": recorded.image_indices,
                "mask_threshold": recorded.mask_threshold,
                "skipped": probe_pass.skipped,
            }
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
        "clip_model": clip_name if isinstance(config.clip_model, ClipModel) else config.clip_model,
        "target_model": target.name,
        "target_layers": layers,
        "d_probe": config.d_probe,
        "concept_set": config.concept_set if isinstance(config.concept_set, str) else concepts.name,
        "batch_size": config.batch_size,
        "device": str(device),
        "activation_dir": str(config.activation_dir),
        "result_dir": str(config.result_dir),
        "pool_mode": config.pool_mode,
        "similarity_fn": config.similarity_fn,
    }
    manifest = {
        "format": "dissect_core-run/1",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "target_model": target.name,
        "target_checkpoint": config.target_checkpoint,
        "target_weights_sha256": target.weights_id,
        "target_source": target.source,
        "layers": layers,
        "clip_model": clip_name,
        "clip_weights": clip_weights,
        "precision": precision,
        "probe": {
            "name": probe.name,
            "spec": probe.spec,
            "fingerprint": probe.fingerprint,
            "n_images": len(probe),
            "n_skipped": len(skipped),
            "skipped": skipped_labels[:1000],
            "listing_skipped": probe.listing_skipped,
        },
        "concept_set": {
            "name": concepts.name,
            "source": concepts.source,
            "sha256": concepts.sha256,
            "n_concepts": len(concepts),
            "duplicates_dropped": concepts.duplicates_dropped,
            "blank_lines_dropped": concepts.blank_lines_dropped,
        },
        "similarity_fn": config.similarity_fn,
        "similarity_params": params,
        "pool_mode": config.pool_mode,
        "device": str(device),
        "config": {k: v for k, v in vars(config).items()
                   if k not in ("concept_set", "target_model", "clip_model")},
        "cache_keys": {"activations": layer_keys, "clip_images": image_key, "clip_texts": text_key,
                       "similarity": similarity_keys},
        "reused_from_cache": reused,
        "warnings": warnings,
        "versions": _versions(),
        "timings_s": timings,
        "label_quality": ({"skipped": quality_skipped} if quality_skipped
                          else {"settings": asdict(quality_settings)}),
        "output_check": [asdict(check) for check in checks],
    }
    write_run(
        run_dir,
        descriptions,
        args=args,
        manifest=manifest,
        top_concepts=top_concepts,
        top_images=pd.DataFrame(image_rows, columns=["layer", "unit", "rank", "image_index", "activation"]),
        unit_stats=pd.DataFrame(stat_rows, columns=["layer", "unit", "mask_threshold"]),
        extra_files=extra_files,
    )
    lap("write")
    return DescribeResult(run_dir, load_run(run_dir), timings, reused, skipped_labels, warnings)


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
    top_values, top_rows = torch.topk(pooled, min(top_images, pooled.shape[0]), dim=0)
    top_probe = image_indices[top_rows]
    for unit in range(pooled.shape[1]):
        description_rows.append((layer, unit, names[indices[unit][0]], values[unit][0]))
        for rank, (score, concept) in enumerate(zip(values[unit], indices[unit])):
            concept_rows.append((layer, unit, rank, names[concept], score))
        for rank in range(top_values.shape[0]):
            image_rows.append((layer, unit, rank, int(top_probe[rank, unit]), float(top_values[rank, unit])))
        threshold = float("nan") if mask_threshold is None else float(mask_threshold[unit])
        stat_rows.append((layer, unit, threshold))


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

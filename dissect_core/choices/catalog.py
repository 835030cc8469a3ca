"""The named choices whose implementations need torch, declared without importing it, and
every registry in one list, for the CLI, the app and the docs.

Probe sets, image decoders, named models, CLIP model names, similarity functions and pool
modes are each registered once, here: name, description, defaults, and the implementation
named by a :class:`~dissect_core.common.registry.LazyFunction`
(``"dissect_core.engine.similarity:soft_wpmi_scores"``), imported on its first call. So the CLI's
help, ``dissect list`` and the app's pickers import no torch, and the modules that
implement the choices look their entries up here. Concept sets (``concepts``), concept
sources (``concept_sources``) and layer layouts (``layouts``) are light and registered
beside their code.

``python -m dissect_core list`` prints :func:`listing`; the README's table of choices
is :func:`markdown` (``python -m dissect_core list --markdown``).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional

from dissect_core.choices.concept_sets import CONCEPT_SETS
from dissect_core.choices.config import DescribeConfig
from dissect_core.common.errors import about, name_settings
from dissect_core.choices.layouts import Layout
from dissect_core.common.registry import Entry, LazyFunction, Registry

if TYPE_CHECKING:  # only for the annotations: these modules import torch
    from PIL import Image
    from torch import Tensor

    from dissect_core.engine.probe_sets import ProbeOptions, ProbeSet

# ----------------------------------------------------------------------------- probe sets

IMAGENET_VAL_ENV = "DISSECT_IMAGENET_VAL"  # where imagenet_val is looked for without imagenet_val_dir


@dataclass(frozen=True)
class ProbeSource:
    """How a named probe set is opened; ``downloadable``: ``download=True`` can fetch it."""

    open: Callable[[ProbeOptions], ProbeSet]
    downloadable: bool = False


# Every named probe set. A new one is one registration here.
PROBE_SETS: Registry[ProbeSource] = Registry("probe set")
PROBE_SETS.add(
    "broden",
    ProbeSource(LazyFunction("dissect_core.engine.probe_sets:open_broden"), downloadable=True),
    "Broden1_224: 63,305 images of scenes, objects, parts, textures and colours (about 1 GB, downloadable)",
)
PROBE_SETS.add(
    "cifar100_train",
    ProbeSource(LazyFunction("dissect_core.engine.probe_sets:open_cifar100_train"), downloadable=True),
    "CIFAR-100 training split: 50,000 images of 32×32 pixels (161 MB, downloadable)",
)
PROBE_SETS.add(
    "cifar100_val",
    ProbeSource(LazyFunction("dissect_core.engine.probe_sets:open_cifar100_val"), downloadable=True),
    "CIFAR-100 test split: 10,000 images of 32×32 pixels (161 MB, downloadable)",
)
PROBE_SETS.add(
    "imagenet_val",
    ProbeSource(LazyFunction("dissect_core.engine.probe_sets:open_imagenet_val")),
    f"ImageNet validation: 50,000 images in class subfolders (needs a licence; give its folder as "
    f"`imagenet_val_dir` or ${IMAGENET_VAL_ENV})",
)
PROBE_SETS.add(
    "imagenet_broden",
    ProbeSource(LazyFunction("dissect_core.engine.probe_sets:open_imagenet_broden")),
    "ImageNet validation followed by Broden, in the reference's order",
)

# How probe images become model inputs. Both yield the same batches; the pixels differ
# slightly, so a run's cache key names the decoder (and the device it decoded on).
DECODERS: Registry[Callable[..., Any]] = Registry("image decoder")
DECODERS.add("pil", LazyFunction("dissect_core.engine.probe_loading:probe_loader"),
             "Pillow in the loader workers, then each model's own preprocessing (the reference's path)")
DECODERS.add("torchvision", LazyFunction("dissect_core.engine.gpu_decoding:device_probe_loader"),
             "JPEGs decoded by torchvision on the run's device (nvJPEG on a GPU) in batches and preprocessed "
             "there with tensor ops; other images as with pil")

# ----------------------------------------------------------------------------- models


@dataclass(frozen=True)
class NamedModel:
    """A model known by a name of its own: a torchvision architecture with weights from
    a file that is downloaded into ``weights_dir`` on first use."""

    architecture: str  # torchvision name
    weights_url: str
    weights_file: str  # its name in weights_dir
    weights_hash: str  # "md5:…" or "sha256:…", checked after the download
    preprocess: Callable[[], Callable[[Image.Image], Tensor]]


# Every named target model (torchvision names work besides). A new one is one registration here.
NAMED_MODELS: Registry[NamedModel] = Registry("named model")
NAMED_MODELS.add(
    "resnet18_places",
    NamedModel("resnet18", "http://places2.csail.mit.edu/models_places365/resnet18_places365.pth.tar",
               "resnet18_places365.pth.tar",
               # CSAIL publishes no checksum; this MD5 is the one a public NetDissect setup script checks.
               "md5:7a8808eefd4ea7458650ca84855f69b1",
               LazyFunction("dissect_core.engine.models:places_preprocess")),
    "torchvision resnet18 trained on Places365 scenes (CSAIL's weights, downloaded into `data_dir`)",
)

# The reference's clip_model names (OpenAI's CLIP package) and their open_clip architectures.
CLIP_ALIASES: Registry[str] = Registry("CLIP model name")
for _alias, _arch in (("ViT-B/16", "ViT-B-16"), ("ViT-B/32", "ViT-B-32"), ("ViT-L/14", "ViT-L-14"),
                      ("RN50", "RN50"), ("RN101", "RN101"), ("RN50x4", "RN50x4"), ("RN50x16", "RN50x16"),
                      ("RN50x64", "RN50x64")):
    CLIP_ALIASES.add(_alias, _arch, f"OpenAI's CLIP {_alias}: open_clip {_arch} with the openai weights")

# ----------------------------------------------------------------------------- scoring

# Each takes (image_features, text_features, activations, the call's settings) and returns
# the K×M scores (dissect_core.engine.similarity); its defaults are the reference's constants.
SIMILARITY_FUNCTIONS: Registry[Callable[..., Tensor]] = Registry("similarity function")
SIMILARITY_FUNCTIONS.add(
    "soft_wpmi", LazyFunction("dissect_core.engine.similarity:soft_wpmi_scores"),
    "CLIP-Dissect's default: PMI of a concept given a unit's top images, weighted softly by rank",
    top_k=100, a=10.0, lam=1.0, min_prob=1e-7, p_start=0.998, p_end=0.97,
)
SIMILARITY_FUNCTIONS.add(
    "wpmi", LazyFunction("dissect_core.engine.similarity:wpmi_scores"),
    "PMI of a concept given a unit's top_k images, unweighted",
    top_k=28, a=2.0, lam=0.6, min_prob=1e-7,
)
SIMILARITY_FUNCTIONS.add(
    "cos_similarity", LazyFunction("dissect_core.engine.similarity:cosine_scores"),
    "cosine between a unit's activations and a concept's CLIP scores over all images",
)
SIMILARITY_FUNCTIONS.add(
    "cos_similarity_cubed", LazyFunction("dissect_core.engine.similarity:cubed_cosine_scores"),
    "cosine of the centred, cubed activations and CLIP scores (stresses the highest)",
    min_norm=1e-3,
)
SIMILARITY_FUNCTIONS.add(
    "rank_reorder", LazyFunction("dissect_core.engine.similarity:rank_reorder_scores"),
    "how well a concept's CLIP scores reorder a unit's top activations (seeded permutations)",
    top_fraction=0.05, p=3.0, scale_p=0.5, seed=0,
)
# Scores against the probe images' own labels (dissect_core.engine.label_scores): for the labels
# concept source only. docs/labelled_scores.md compares them with soft-WPMI on the demo.
SIMILARITY_FUNCTIONS.add(
    "precision_at_k", LazyFunction("dissect_core.engine.label_scores:precision_at_k_scores"),
    "labelled probes only: the share of a unit's top_k images that carry the label",
    top_k=100,
)
SIMILARITY_FUNCTIONS.add(
    "auprc", LazyFunction("dissect_core.engine.label_scores:auprc_scores"),
    "labelled probes only: average precision (area under precision-recall) of a unit's activations "
    "at finding the label's images, less the label's share of images (chance); the labels source's default",
)
SIMILARITY_FUNCTIONS.add(
    "iou", LazyFunction("dissect_core.engine.label_scores:iou_scores"),
    "labelled probes only: Network Dissection's IoU at image level, |top_k images ∩ labelled images| / |∪|",
    top_k=100,
)
LABEL_SCORES = ("precision_at_k", "auprc", "iou")


@dataclass(frozen=True)
class PoolMode:
    """Reduces a layer's canonical output (dissect_core.engine.recording) to (batch, units)."""

    pool: Callable[[Tensor, Layout], Tensor]
    fits: tuple[str, ...]  # layouts it applies to; ``flat`` outputs pass through every mode


POOL_MODES: Registry[PoolMode] = Registry("pool mode")
POOL_MODES.add("avg", PoolMode(LazyFunction("dissect_core.engine.recording:average_pool"),
                               ("channels_first", "channels_last", "tokens")),
               "mean over spatial positions or over all tokens (the reference tool's default)")
POOL_MODES.add("max", PoolMode(LazyFunction("dissect_core.engine.recording:max_pool"),
                               ("channels_first", "channels_last", "tokens")),
               "maximum over spatial positions or over all tokens")
POOL_MODES.add("cls", PoolMode(LazyFunction("dissect_core.engine.recording:class_token"), ("tokens",)),
               "the first token (ViT's class token); token outputs only")
POOL_MODES.add("mean", PoolMode(LazyFunction("dissect_core.engine.recording:patch_token_mean"), ("tokens",)),
               "mean over the patch tokens, the class token left out; token outputs only")

# ----------------------------------------------------------------------------- all of them


def registries() -> list[Registry]:
    """Every registry, in the order the CLI's help and ``list`` show them."""
    return [PROBE_SETS, NAMED_MODELS, CLIP_ALIASES, CONCEPT_SETS, SIMILARITY_FUNCTIONS, POOL_MODES, DECODERS]


def format_defaults(entry: Entry[Any]) -> str:
    """``key=value, …`` of an entry's defaults ('' when it has none)."""
    return ", ".join(f"{key}={value}" for key, value in entry.defaults.items())


def listing(names: Optional[Mapping[str, str]] = None) -> str:
    """Plain text: one block per registry, one line per choice (name, description, defaults);
    settings in descriptions are said as ``names`` says them (see errors.name_settings)."""
    blocks = []
    for registry in registries():
        width = max(len(entry.name) for entry in registry)
        lines = [f"{registry.kind}s:"]
        for entry in registry:
            defaults = format_defaults(entry)
            text = name_settings(entry.description, names or {})
            lines.append(f"  {entry.name:<{width}}  {text}" + (f" [{defaults}]" if defaults else ""))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def markdown(names: Optional[Mapping[str, str]] = None) -> str:
    """The same as a Markdown table (kind, name, description, defaults)."""
    rows = ["| kind | name | description | defaults |", "|---|---|---|---|"]
    for registry in registries():
        for entry in registry:
            defaults = format_defaults(entry)
            text = name_settings(entry.description, names or {})
            rows.append(f"| {registry.kind} | `{entry.name}` | {text} | "
                        + (f"`{defaults}`" if defaults else "") + " |")
    return "\n".join(rows)


# ----------------------------------------------------------------------------- concept sources

# The similarity function of labelled runs that name none (docs/labelled_scores.md says why).
LABELS_SIMILARITY_FN = "auprc"

# A concept source builds a LabelledProbe from a probe set and an optional labels
# CSV; ``None`` means CLIP encodes the concept set's texts and the probe images. Its
# defaults fill the DescribeConfig fields left at None: ``similarity_fn``, and
# ``concept_set`` (None for labelled sources: the labels themselves).
# The implementation is named as "module:function" (it imports torch).
CONCEPT_SOURCES: Registry[Optional[LazyFunction]] = Registry("concept source")
CONCEPT_SOURCES.add(
    "clip", None,
    "concepts from the concept set, each image's match to them from CLIP (the method as published)",
    similarity_fn="soft_wpmi", concept_set="data/20k.txt",
)

CONCEPT_SOURCES.add(
    "labels", LazyFunction("dissect_core.engine.concept_sources:labelled_probe"),
    "the probe images' own labels: class sub-folders, or a CSV (image,label) given as probe_labels; "
    "a concept set then holds formulas over the labels (Sandal OR Sneaker)",
    similarity_fn=LABELS_SIMILARITY_FN, concept_set=None,
)


def with_source_defaults(config: DescribeConfig) -> DescribeConfig:
    """``config`` with ``concept_set`` and ``similarity_fn`` filled from its concept source's
    defaults where they are None."""
    with about("concept_source"):
        defaults = CONCEPT_SOURCES.get(config.concept_source).defaults
    return replace(
        config,
        concept_set=defaults["concept_set"] if config.concept_set is None else config.concept_set,
        similarity_fn=config.similarity_fn or defaults["similarity_fn"],
    )

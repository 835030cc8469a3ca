"""What defines a dissection: :class:`DescribeConfig`, with the reference tool's defaults.

Plain data without torch, so the CLI builds its flags and defaults from it at once;
``dissect_core.engine.pipeline`` runs it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional, Sequence, Union

from dissect_core.common.errors import InvalidInputError

if TYPE_CHECKING:  # only for the annotations: these modules import torch
    from dissect_core.engine.clip import ClipModel
    from dissect_core.choices.concept_sets import ConceptSet
    from dissect_core.engine.models import TargetModel

# Maps kept per unit by default: as many as the Unit explorer shows at first.
DEFAULT_TOP_MAPS = 10
# Bootstrap resamples of the probe images for each label's stability (quality.QualitySettings).
QUALITY_RESAMPLES = 20


@dataclass
class DescribeConfig:
    """Everything that defines a dissection. Defaults are the reference tool's,
    except ``device``, where ``None`` means CUDA if available, else the CPU.
    ``concept_set`` and ``similarity_fn`` left at ``None`` take the concept source's
    defaults (``choices.catalog.CONCEPT_SOURCES``, ``with_source_defaults``): the reference's data/20k.txt and
    soft_wpmi for CLIP concepts; the labels themselves and the labelled-probe default
    (docs/labelled_scores.md) for the labels source.

    ``target_model`` and ``clip_model`` are names to load, or already-built
    ``TargetModel`` / ``ClipModel`` objects (your own network, see the README).
    """

    target_model: Union[str, TargetModel] = "resnet50"
    target_layers: Sequence[str] = ("conv1", "layer1", "layer2", "layer3", "layer4")
    clip_model: Union[str, ClipModel] = "ViT-B/16"
    d_probe: str = "broden"
    # With the labels source, a concept set holds formulas over the labels (label_formulas).
    concept_set: Union[str, ConceptSet, None] = None
    similarity_fn: Optional[str] = None
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
    # "labels": concepts are the probe images' labels (or formulas over them) instead of
    # concept_set's texts through CLIP (dissect_core.engine.concept_sources); clip_model is then unused.
    concept_source: str = "clip"
    probe_labels: Optional[str] = None  # labels CSV (image,label) for the labels source
    run_name: Optional[str] = None  # shown instead of "model · probe · concept set"
    top_maps: int = DEFAULT_TOP_MAPS  # activation maps stored per unit, for unit views and bundles
    layer_layout: dict = field(default_factory=dict)  # layer -> layout name, where it can't be read from the model
    quality_resamples: int = QUALITY_RESAMPLES  # bootstrap resamples for label stability
    decoder: str = "pil"  # how probe images are decoded and preprocessed (catalog.DECODERS)


def default_num_workers() -> int:
    """Decode workers: the cores this process may use but one (the main process runs the
    models), at most 16. Decoding JPEGs is the bound of a pass once the models run on a GPU."""
    try:
        cores = len(os.sched_getaffinity(0))  # respects taskset and container CPU sets
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 2
    return min(16, max(1, cores - 1))


def check_num_workers(num_workers: Optional[int]) -> None:
    """Refuse a negative worker count (None means the default)."""
    if num_workers is not None and (isinstance(num_workers, bool) or not isinstance(num_workers, int)
                                    or num_workers < 0):
        raise InvalidInputError(
            f"`num_workers` must be 0 (decode images in the main process) or a positive number of "
            f"loader processes, not {num_workers!r}. Leave it out for the default ({default_num_workers()})."
        )

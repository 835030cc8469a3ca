"""Unit views computed now, for runs that stored no maps, and reopening a run's probe set
and model; drawing and stored maps are ``dissect_core.runs.unit_images``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import numpy as np
from PIL import Image
from torchvision import transforms as T

from dissect_core.common.errors import DissectError
from dissect_core.runs.manifest import RunSources
from dissect_core.runs.run_folders import refuse_imported
from dissect_core.runs.unit_images import UnitView, apply_view, draw_views

if TYPE_CHECKING:
    import torch

    from dissect_core.engine.models import TargetModel
    from dissect_core.engine.probe_sets import ProbeSet


def view_steps(preprocess: Callable) -> list[dict[str, Any]]:
    """The resize and crop steps of a preprocess transform, as JSON-ready records.

    Stored with a run's maps, they let its images be shown as the model saw them
    without loading the model.
    """
    steps = getattr(preprocess, "transforms", None)
    if steps is None:
        # torchvision weight transforms (ImageClassification) keep their sizes as attributes.
        records = []
        resize = getattr(preprocess, "resize_size", None)
        crop = getattr(preprocess, "crop_size", None)
        if resize is not None:
            records.append({"resize": list(resize), "interpolation": preprocess.interpolation.value,
                            "max_size": None, "antialias": getattr(preprocess, "antialias", True)})
        if crop is not None:
            records.append({"center_crop": list(crop)})
        return records
    records = []
    for step in steps:
        if isinstance(step, T.Resize):
            size = step.size if isinstance(step.size, int) else list(step.size)
            records.append({"resize": size, "interpolation": step.interpolation.value,
                            "max_size": step.max_size, "antialias": step.antialias})
        elif isinstance(step, T.CenterCrop):
            records.append({"center_crop": list(step.size)})
    return records


def model_view(preprocess: Callable, image: Image.Image) -> Image.Image:
    """Apply only the resize and crop steps of a preprocess transform."""
    return apply_view(view_steps(preprocess), image)


def live_unit_views(
    target: "TargetModel",
    probe: "ProbeSet",
    layer: str,
    unit: int,
    probe_indices: Sequence[int],
    activations: Sequence[float],
    mask_threshold: Optional[float],
    device: Optional["torch.device"] = None,
    layout: Optional[str] = None,
) -> list[UnitView]:
    """The unit's views with maps computed now, for runs that stored none.

    Layers without spatial maps (``recording.spatial_maps``: ``fc``, token outputs whose
    patches form no square grid) get the images alone.
    ``layout`` declares the layer's layout where it cannot be read from the model.
    """
    originals = [probe.load_image(int(i)) for i in probe_indices]
    if not originals:
        return []
    import torch

    from dissect_core.choices.layouts import FLAT
    from dissect_core.engine.recording import layer_outputs, resolve_layouts, spatial_maps

    batch = torch.stack([target.preprocess(img) for img in originals])
    layouts = resolve_layouts(target.module, [layer], batch[:1], None, layout and {layer: layout})
    maps: list[Optional[np.ndarray]] = [None] * len(originals)
    if layouts[layer] is not FLAT:  # one value per unit: no map, no need to run the model
        unit_maps = spatial_maps(layer_outputs(target.module, layouts, batch, device)[layer], layouts[layer])
        if unit_maps is not None:
            maps = list(unit_maps[:, unit].numpy())
    images = [model_view(target.preprocess, original) for original in originals]
    pairs = [(int(i), float(a)) for i, a in zip(probe_indices, activations)]
    return draw_views(pairs, [probe.item_label(i) for i, _ in pairs], images, maps, mask_threshold)


# --------------------------------------------------------------------------- a run's sources

def probe_for_run(sources: Optional[RunSources]) -> "ProbeSet":
    """Reopen a run's probe set (``Run.sources``), checking it still holds the same images.

    Raises ``DissectError`` saying why the images can't be shown: a run imported
    from the reference tool records no probe set, or the folder moved or changed.
    """
    if sources is None:
        raise DissectError(
            "This run was imported from a CSV, which records the labels only: the reference "
            "tool saves neither the probe images nor which of them activate each unit."
        )
    refuse_imported(sources)
    from dissect_core.engine.probe_sets import open_probe_spec

    return open_probe_spec(sources.probe_spec, expected_fingerprint=sources.probe_fingerprint)


def target_for_run(sources: RunSources) -> "TargetModel":
    """Reload the target model of a run, refusing weights that differ from the run's."""
    from dissect_core.engine.models import load_target_model

    refuse_imported(sources)
    try:
        target = load_target_model(sources.target_model, sources.target_checkpoint, weights_dir=sources.data_dir)
    except DissectError:
        raise
    except Exception as exc:  # a model given as an object to the library cannot be reloaded by name
        raise DissectError(f"The model {sources.target_model!r} cannot be reloaded by name: {exc}") from exc
    if target.weights_id != sources.target_weights_sha256:
        raise DissectError(
            f"The weights of {target.name} on this machine differ from the ones the run used, so "
            "activation maps would not match the labels."
        )
    return target

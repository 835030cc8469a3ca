"""The Unit explorer's gallery: a unit's top probe images with heatmaps and masks."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import streamlit as st

from app_ui.hosting import hosted
from dissect_core.bundle import THUMBNAILS_DIR
from dissect_core.manifest import RunSources
from dissect_core.results import Run


@st.cache_resource(show_spinner="Opening the probe images and loading the model…", max_entries=8)
def _load_run_sources(sources_key: str) -> tuple[Any, Any, Optional[str], Optional[str]]:
    """(probe, target, why no probe, why no target), cached per run sources.

    Failures are cached too: an offline weight check must not repeat on every rerun.
    """
    from dissect_core.errors import DissectError
    from dissect_core.heatmaps import probe_for_run, target_for_run

    sources = RunSources.from_key(sources_key)
    probe = target = probe_error = target_error = None
    try:
        probe = probe_for_run(sources)
    except DissectError as exc:
        probe_error = str(exc)
    if probe is not None:
        try:
            target = target_for_run(sources)
        except DissectError as exc:
            target_error = str(exc)
    return probe, target, probe_error, target_error


@dataclass
class UnitGallery:
    """A unit's top images ready to show, or why they (or their activation maps) are missing."""

    views: list[dict]           # label, activation, image, heatmap, mask (PIL images or None)
    no_images: Optional[str]    # why no images can be shown
    no_maps: Optional[str]      # why images are shown without activation maps


@st.cache_data(show_spinner="Drawing activation maps…", max_entries=64)
def _unit_views(sources_key: str, layer: str, unit: int, top: tuple, threshold: Optional[float],
                _probe: Any, _target: Any) -> list[dict]:
    """Cached per (run sources, layer, unit, images): the model and probe are fixed by the key."""
    from dissect_core.heatmaps import unit_images

    indices = [index for index, _ in top]
    activations = [activation for _, activation in top]
    if _target is None:
        return [{"label": _probe.item_label(i), "activation": a, "image": _probe.load_image(i),
                 "heatmap": None, "mask": None} for i, a in zip(indices, activations)]
    return [vars(item) for item in unit_images(_target, _probe, layer, unit, indices, activations, threshold)]


def unit_gallery(run: Run, layer: str, unit: int, count: int) -> UnitGallery:
    """The unit's ``count`` most activating probe images with heatmaps and masks."""
    if run.from_reference_tool or run.top_images is None:
        return UnitGallery([], (
            f"This run was imported from a {run.method} result file, which holds the labels only: it "
            "names neither the probe images nor which of them activate each unit."
        ), None)
    top = run.unit_top_images(layer, unit, count)
    pairs = tuple(zip(top["image_index"].astype(int).tolist(), top["activation"].astype(float).tolist()))
    threshold = run.mask_threshold(layer, unit)
    if run.path is not None and (run.path / THUMBNAILS_DIR).is_dir():
        # A bundled run is self-contained: its thumbnails and stored maps are drawn without
        # torch, and the manifest's folders (another machine's) are never opened.
        return UnitGallery(_stored_views(str(run.path), layer, unit, pairs, threshold) or [], None, None)
    if hosted():
        return UnitGallery([], "This demo shows images only for runs shared as results bundles.", None)
    key = run.sources.key()
    probe, target, no_probe, no_target = _load_run_sources(key)
    if probe is None:
        return UnitGallery([], no_probe, None)
    views = _unit_views(key, layer, unit, pairs, threshold, probe, target)
    return UnitGallery(views, None, no_target)


@st.cache_data(show_spinner=False, max_entries=64)
def _stored_views(run_dir: str, layer: str, unit: int, top: tuple, threshold: Optional[float]) -> Optional[list[dict]]:
    from dissect_core.heatmaps import stored_unit_images

    views = stored_unit_images(Path(run_dir), layer, unit, len(top), [i for i, _ in top], [a for _, a in top],
                               threshold)
    return None if views is None else [vars(view) for view in views]

"""The Unit explorer's gallery: a unit's top probe images with heatmaps and masks.

Drawn from the maps the run stored (``dissect_core.engine.unit_views``), with the images
from a bundle's thumbnails or the run's probe set: the model is loaded only for
runs that stored no maps.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import streamlit as st

from dissect_app.hosted_mode import hosted
from dissect_core.runs.demo_runs import is_demo_run
from dissect_core.runs.manifest import RunSources
from dissect_core.runs.run import Run
from dissect_core.runs.run_folders import thumbnails_dir
from dissect_core.runs.unit_evidence import stored_image_names


@st.cache_resource(show_spinner="Opening the probe images…", max_entries=8)
def _load_run_probe(sources_key: str) -> tuple[Any, Optional[str]]:
    """(probe, why no probe), cached per run sources; failures are cached too."""
    from dissect_core.common.errors import DissectError
    from dissect_core.engine.unit_views import probe_for_run

    try:
        return probe_for_run(RunSources.from_key(sources_key)), None
    except DissectError as exc:
        return None, str(exc)


@st.cache_resource(show_spinner="Loading the model…", max_entries=8)
def _load_run_target(sources_key: str) -> tuple[Any, Optional[str]]:
    """(target, why no target), cached per run sources: an offline weight check must not
    repeat on every rerun."""
    from dissect_core.common.errors import DissectError
    from dissect_core.engine.unit_views import target_for_run

    try:
        return target_for_run(RunSources.from_key(sources_key)), None
    except DissectError as exc:
        return None, str(exc)


@dataclass
class UnitGallery:
    """A unit's top images ready to show, or why they (or their activation maps) are missing."""

    views: list[dict]           # label, activation, image, heatmap, mask (PIL images or None)
    no_images: Optional[str]    # why no images can be shown
    no_maps: Optional[str]      # why images are shown without activation maps


def unit_gallery(run: Run, layer: str, unit: int, count: int) -> UnitGallery:
    """The unit's ``count`` most activating probe images with heatmaps and masks."""
    if run.from_reference_tool or run.top_images is None:
        return UnitGallery([], (
            f"This run was imported from a {run.method} result file, which holds the labels only: it "
            "names neither the probe images nor which of them activate each unit."
        ), None)
    from dissect_core.runs.unit_images import has_thumbnails, read_stored_maps

    top = run.unit_top_images(layer, unit, count)
    pairs = tuple(zip(top["image_index"].astype(int).tolist(), top["activation"].astype(float).tolist()))
    threshold = run.mask_threshold(layer, unit)
    if has_thumbnails(run.path):
        # A bundled run is self-contained: its thumbnails and stored maps are drawn without
        # torch, and the manifest's folders (another machine's) are never opened.
        views = _stored_views("", str(run.path), layer, unit, pairs, threshold, None)
        no_maps = None
        if thumbnails_dir(run.path).parent != run.path:  # its sweep's shared thumbnails: no maps kept
            no_maps = "This run is one of a sweep whose runs share their thumbnails and keep no activation maps."
            if is_demo_run(run.path):
                no_maps += (" The demo's two networks, its first and last checkpoints, have them: pick "
                            "the trained or the untrained network.")
        return UnitGallery(views, None, no_maps)
    if hosted():
        return UnitGallery([], "This demo shows images only for runs shared as results bundles.", None)
    key = run.sources.key()
    probe, no_probe = _load_run_probe(key)
    if probe is None:
        return UnitGallery([], no_probe, None)
    if run.path is not None and read_stored_maps(run.path) is not None:
        return UnitGallery(_stored_views(key, str(run.path), layer, unit, pairs, threshold, probe), None, None)
    target, no_target = _load_run_target(key)  # a run that stored no maps: drawn live
    layout = run.manifest.layouts.get(layer)
    return UnitGallery(_live_views(key, layer, unit, pairs, threshold, layout, probe, target), None, no_target)


def image_names(run: Run) -> Callable[[int], Optional[str]]:
    """A probe image's name (its path in the probe set) by index, for counting a labelled run's
    top-image labels: from a bundle's stored names, else from the run's probe set when it is
    on this machine; unknown (None) otherwise."""
    from dissect_core.runs.unit_images import has_thumbnails

    if has_thumbnails(run.path) or hosted() or run.from_reference_tool:
        return stored_image_names(run.path).get
    probe, _ = _load_run_probe(run.sources.key())
    if probe is None:
        return lambda index: None
    return lambda index: probe.item_label(index) if 0 <= index < len(probe) else None


# Drawn views are a few MB a unit; runs of hosted visitors' bundles add keys of their own,
# so the caches are bounded in entries and time (what a visit leaves behind; see
# benchmarks/bench_hosted_memory.py).
VIEWS_KEPT = 16
VIEWS_TTL_S = 600


@st.cache_data(show_spinner=False, max_entries=VIEWS_KEPT, ttl=VIEWS_TTL_S)
def _stored_views(sources_key: str, run_dir: str, layer: str, unit: int, top: tuple, threshold: Optional[float],
                  _probe: Any) -> list[dict]:
    """Cached per (run sources, run folder, layer, unit, images): the probe is fixed by the key."""
    from dissect_core.runs.unit_images import stored_unit_views

    views = stored_unit_views(Path(run_dir), layer, unit, [i for i, _ in top], [a for _, a in top], threshold,
                              _probe)
    return [vars(view) for view in views or []]


@st.cache_data(show_spinner="Drawing activation maps…", max_entries=VIEWS_KEPT, ttl=VIEWS_TTL_S)
def _live_views(sources_key: str, layer: str, unit: int, top: tuple, threshold: Optional[float],
                layout: Optional[str], _probe: Any, _target: Any) -> list[dict]:
    """Cached per (run sources, layer, unit, images): the model and probe are fixed by the key."""
    from dissect_core.engine.unit_views import live_unit_views

    indices = [index for index, _ in top]
    activations = [activation for _, activation in top]
    if _target is None:
        return [{"label": _probe.item_label(i), "activation": a, "image": _probe.load_image(i),
                 "heatmap": None, "mask": None} for i, a in zip(indices, activations)]
    views = live_unit_views(_target, _probe, layer, unit, indices, activations, threshold, layout=layout)
    return [vars(view) for view in views]

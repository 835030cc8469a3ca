"""Pickers shared by the pages: persistent widgets, the model and layer pickers, deep links."""
from __future__ import annotations

import re
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional
from urllib.parse import urlencode

import streamlit as st

from dissect_app.navigation import UNIT_EXPLORER_URL
from dissect_core.runs.formats import CLIP_DISSECT
from dissect_core.runs.run import Run
from dissect_app.text import md

if TYPE_CHECKING:
    from dissect_app.frame import Frame

# Session-state keys shared by all pages (widget keys; each has a "_"-prefixed shadow).
MODELS_KEY = "models"
LAYERS_KEY = "layers"
LAYERS_DROPPED_KEY = "layers_dropped"   # layers the user took out of the layer picker


def _remember(key: str, on_change: Optional[Callable[[], None]] = None) -> None:
    if on_change is not None:
        on_change()
    st.session_state[f"_{key}"] = st.session_state[key]


def persistent(
    widget: Callable[..., Any],
    label: str,
    *,
    key: str,
    default: Any,
    sanitize: Callable[[Any], Any] = lambda value: value,
    on_change: Optional[Callable[[], None]] = None,
    **kwargs: Any,
) -> Any:
    """Create ``widget`` whose value survives visits to pages that lack it.

    Streamlit drops a widget's state when a page without it runs, so the value is
    kept in the shadow key ``_<key>`` and re-seeded before the widget is drawn.
    ``sanitize`` maps a remembered value that no longer fits the options (a run was
    removed, say) to a valid one. ``on_change`` runs when the user changes the value,
    before it is remembered (the old value is still in ``_<key>``). Do not pass ``index``/``value``/``default`` to the
    widget: the value comes from session state.

    Example: ``persistent(st.selectbox, "Layer", key="layer", default=layers[0],
    sanitize=lambda v: v if v in layers else layers[0], options=layers)``.
    """
    shadow = f"_{key}"
    value = sanitize(st.session_state.get(shadow, default))
    st.session_state[shadow] = value
    st.session_state[key] = value
    return widget(label, key=key, on_change=_remember, args=(key, on_change), **kwargs)


def default_selection(runs: list[Run]) -> list[str]:
    """The default model pair: ImageNet ResNet-18 and Places ResNet-18 if loaded, else the first two.

    Among several Places runs, one with the ImageNet run's probe set and concept set wins.
    Only CLIP-Dissect runs make the pair; NetDissect or MILAN labels are compared on request.
    """
    clip_dissect = [r for r in runs if r.method == CLIP_DISSECT]
    imagenet = next((r for r in clip_dissect if r.target_model == "resnet18"), None)
    places = [r for r in clip_dissect if r.target_model.startswith("resnet18_places")]
    if imagenet and places:
        setup = (imagenet.probe_name, imagenet.concept_set_name)
        same_setup = [r for r in places if (r.probe_name, r.concept_set_name) == setup]
        return [imagenet.label, (same_setup or places)[0].label]
    return [r.label for r in runs[:2]]


def layer_order(runs: list[Run]) -> list[str]:
    """Every layer of ``runs`` once, each run's layers kept in their order.

    Runs list their layers in network order, so merging the orders places a new run's
    earlier layers before the others' (``conv1``, ``layer1`` before ``layer2``), not at
    the end. Where runs disagree on the order, layers come in the order first seen.
    """
    seen = list(dict.fromkeys(layer for run in runs for layer in run.layers))
    position = {layer: index for index, layer in enumerate(seen)}
    graph = TopologicalSorter({layer: () for layer in seen})
    for run in runs:
        for before, after in zip(run.layers, run.layers[1:]):
            graph.add(after, before)
    try:
        graph.prepare()
    except CycleError:
        return seen
    ordered: list[str] = []
    ready: list[str] = []
    while graph.is_active():
        ready = sorted([*ready, *graph.get_ready()], key=position.__getitem__)
        ordered.append(ready.pop(0))  # one at a time: the earliest-seen ready layer goes next
        graph.done(ordered[-1])
    return ordered


def _layers_changed() -> None:
    """Remember which layers the user took out of the picker (and put back)."""
    before = set(st.session_state.get(f"_{LAYERS_KEY}", []))
    after = set(st.session_state[LAYERS_KEY])
    dropped = (set(st.session_state.get(LAYERS_DROPPED_KEY, [])) | (before - after)) - after
    st.session_state[LAYERS_DROPPED_KEY] = sorted(dropped)


def pick_layers(frame: Frame, runs: Optional[list[Run]] = None) -> list[str]:
    """Layer multiselect (key ``"layers"``) in the sidebar over the runs' layers (``layer_order``).

    Every layer is picked but those the user took out: a new model's layers join the
    choice, and a layer taken out stays out, on every page, until put back. Under the
    picker, a note names the picked layers that a model lacks.
    """
    runs = frame.selected if runs is None else runs
    options = layer_order(runs)
    dropped = set(st.session_state.get(LAYERS_DROPPED_KEY, []))

    def sanitize(value: list[str]) -> list[str]:
        kept = [layer for layer in options if layer not in dropped]
        # Everything picked has vanished (other models) and the rest was taken out: start again from all layers.
        return kept if kept or not value else options

    picked = persistent(
        frame.controls.multiselect, "Layers", key=LAYERS_KEY, default=options,
        sanitize=sanitize, options=options, on_change=_layers_changed,
    )
    for run in runs:
        absent = [layer for layer in picked if layer not in run.layers]
        if absent:
            frame.controls.caption(f"{md(run.label)} has no {md(', '.join(absent))}: it is shown without them.")
    return picked


def require_layers(frame: Frame) -> list[str]:
    """The picked layers (``pick_layers``), or stop the page with a hint when none is picked."""
    layers = pick_layers(frame)
    if not layers:
        st.info("Pick at least one layer in the sidebar.", icon=":material/arrow_back:")
        st.stop()
    return layers


def unit_link_params(model: str, layer: str, unit: int) -> dict[str, str]:
    """Query parameters of a deep link to one unit in the Unit explorer."""
    return {"model": model, "layer": layer, "unit": str(int(unit))}


def unit_link_url(model: str, layer: str, unit: int) -> str:
    """Relative URL of the Unit explorer showing one unit (for ``LinkColumn``)."""
    return f"{UNIT_EXPLORER_URL}?{urlencode(unit_link_params(model, layer, unit))}"


@dataclass(frozen=True)
class UnitLink:
    """A deep link's model, layer and unit (``None`` where absent or unusable) and what was wrong."""

    model: Optional[str]
    layer: Optional[str]
    unit: Optional[int]
    problems: tuple[str, ...] = ()

    @property
    def target(self) -> tuple[Optional[str], Optional[str], Optional[int]]:
        return self.model, self.layer, self.unit


_UNIT_TEXT = re.compile(r"[0-9]{1,9}")  # ASCII digits only: int() also takes "٣" and "1_0"


def _quoted(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def parse_unit_link(params: Mapping[str, str]) -> UnitLink:
    """The model, layer and unit a deep link's query parameters name, checked for form only."""
    unit_text = params.get("unit")
    unit, problems = None, []
    if unit_text is not None:
        if _UNIT_TEXT.fullmatch(unit_text):
            unit = int(unit_text)
        else:
            problems.append(f"the unit {_quoted(unit_text)} is not a whole number from 0 to 999,999,999")
    return UnitLink(params.get("model") or None, params.get("layer") or None, unit, tuple(problems))


def check_unit_link(link: UnitLink, runs: Mapping[str, Run]) -> UnitLink:
    """``link`` with the model, layer and unit that the loaded ``runs`` lack removed, and why."""
    problems = list(link.problems)
    model, layer, unit = link.target
    if model is not None and model not in runs:
        problems.append(f"no model named {_quoted(model)} is loaded")
        model = layer = unit = None
    if model is not None and layer is not None and layer not in runs[model].layers:
        problems.append(f"{_quoted(model)} has no layer {_quoted(layer)}")
        layer = unit = None
    if model is not None and layer is not None and unit is not None:
        units = runs[model].units(layer)["unit"]
        if not (units == unit).any():
            problems.append(f"layer {_quoted(layer)} has no unit {unit} (units {int(units.min())} to "
                            f"{int(units.max())})")
            unit = None
    return UnitLink(model, layer, unit, tuple(problems))

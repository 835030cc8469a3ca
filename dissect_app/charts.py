"""Altair chart builders for the analysis frames, plus offline PNG/SVG export.

Each builder takes a small, already aggregated frame from ``dissect_core.runs.analysis``
(never raw per-unit rows), so charts stay far below Altair's inline-data row
limit and render quickly. Concept, layer and model names travel as chart data;
Vega draws them as text, so they are never interpreted as HTML or markdown.
"""
from __future__ import annotations

import textwrap
from typing import Optional

import altair as alt
import pandas as pd

# Bar height in pixels for horizontal bar charts, so long lists stay readable.
BAR_STEP = 18
# Height of one model's bar (or box) within a layer's group in the per-layer charts. Those
# run horizontally, one group of bars per layer, so the number of models and layers sets
# the height and never the width: every bar keeps a line of its own for its value label
# (side by side, eight models' labels overlapped in a 900 px window).
MODEL_STEP = 16
# A model's bar (or box) height in pixels, leaving a gap to the next. In pixels, not as a
# share of the band: Vega-Lite measures a share (Streamlit's theme sets 0.85) in the
# layer's band instead of the model's, which moved bars and boxes off their value
# labels and whiskers, the more so the more models.
MODEL_BAR = MODEL_STEP - 3
CATEGORY_PANEL_WIDTH = 165  # px per model in the category-mix chart, two panels to a row
# Model legends below the chart, one name to a line, in full: two columns were cut at
# the chart's edge in a 900 px window.
MODEL_LEGEND = alt.Legend(orient="bottom", direction="vertical", columns=1, labelLimit=400)
# Head room on the value axis past the longest bar, for its value label: a share of the
# axis, so the label fits at any width Streamlit gives the chart (Vega's pixel padding
# would also move the axis's start below 0).
VALUE_LABEL_ROOM = 0.2

# Concept names on a bar chart's axis: every one drawn (Vega may otherwise thin out
# labels it thinks overlap, e.g. under Streamlit's theme), cut only when very long.
# Not flush: a flush first label is moved off its bar, towards the second.
CONCEPT_AXIS = alt.Axis(labelOverlap=False, labelLimit=220, labelFontSize=11, labelSeparation=0, labelFlush=False)
# Layer names on the per-layer charts' y axis: all drawn, long module paths cut at 160 px.
LAYER_AXIS = alt.Axis(labelOverlap=False, labelLimit=160, labelFlush=False)
# Characters per line of a wrapped chart title (a model's name over a 420 px panel).
TITLE_LINE_CHARS = 48
# A value label just right of its bar's end.
VALUE_LABEL = {"align": "left", "dx": 3, "fontSize": 11}
# An axis of counts (units, concepts, images): whole-number ticks only.
COUNT_AXIS = alt.Axis(format="d", tickMinStep=1)


def _layer_sort(frame: pd.DataFrame) -> list[str]:
    """Layers in order of first appearance (file order), for the layer axis."""
    return list(dict.fromkeys(frame["layer"]))


def _value_scale(largest: float) -> alt.Scale:
    """A value axis from 0 with ``VALUE_LABEL_ROOM`` to spare past ``largest``."""
    return alt.Scale(domain=[0, (largest if largest > 0 else 1) * (1 + VALUE_LABEL_ROOM)])


def _per_layer(data: pd.DataFrame) -> dict:
    """Shared encodings of the per-layer charts: a row per layer (file order), the
    models' bars stacked inside it in their given order, one colour per model."""
    models = list(dict.fromkeys(data["model"]))
    return dict(
        y=alt.Y("layer:N", sort=_layer_sort(data), title="Layer", axis=LAYER_AXIS),
        yOffset=alt.YOffset("model:N", sort=models),
        color=alt.Color("model:N", title="Model", sort=models, legend=MODEL_LEGEND),
    )


def _per_layer_height() -> alt.Step:
    return alt.Step(MODEL_STEP, **{"for": "offset"})


def distinct_concepts_chart(summary: pd.DataFrame) -> alt.LayerChart:
    """Grouped horizontal bars: distinct concepts per layer, one bar per model, its count
    printed right of it.

    ``summary`` is ``analysis.summarize_models`` output (``model``, ``layer``,
    ``distinct_concepts``, ``units``).
    """
    data = summary[["model", "layer", "distinct_concepts", "units"]]
    base = alt.Chart(data).encode(
        x=alt.X("distinct_concepts:Q", title="Distinct concepts", scale=_value_scale(data["distinct_concepts"].max()),
                axis=COUNT_AXIS),
        **_per_layer(data),
        tooltip=[
            alt.Tooltip("model:N", title="Model"),
            alt.Tooltip("layer:N", title="Layer"),
            alt.Tooltip("distinct_concepts:Q", title="Distinct concepts"),
            alt.Tooltip("units:Q", title="Units"),
        ],
    )
    labels = base.mark_text(baseline="middle", **VALUE_LABEL).encode(text="distinct_concepts:Q", color=alt.value("#333"))
    return alt.layer(base.mark_bar(height=MODEL_BAR), labels).properties(title="Distinct concepts per layer",
                                                         height=_per_layer_height())


def similarity_chart(summary: pd.DataFrame) -> alt.LayerChart:
    """Horizontal box plot of similarity per layer and model from precomputed quartiles.

    Box: first to third quartile; white tick: median; dot: mean; whiskers: min to max.
    """
    data = summary[[
        "model", "layer", "mean_similarity", "median_similarity", "q1_similarity",
        "q3_similarity", "min_similarity", "max_similarity",
    ]]
    base = alt.Chart(data).encode(
        **_per_layer(data),
        tooltip=[
            alt.Tooltip("model:N", title="Model"),
            alt.Tooltip("layer:N", title="Layer"),
            *(alt.Tooltip(f"{stat}_similarity:Q", title=stat, format=".3f")
              for stat in ("min", "q1", "median", "mean", "q3", "max")),
        ],
    )
    whiskers = base.mark_rule().encode(
        x=alt.X("min_similarity:Q", title="Similarity"), x2="max_similarity:Q"
    )
    boxes = base.mark_bar(height=MODEL_BAR).encode(x="q1_similarity:Q", x2="q3_similarity:Q")
    # alt.value(): an encoded colour would override a mark's colour and hide these on the box.
    medians = base.mark_tick(thickness=2, size=MODEL_BAR).encode(
        x="median_similarity:Q", color=alt.value("white")
    )
    means = base.mark_point(filled=True, size=25).encode(x="mean_similarity:Q", color=alt.value("black"))
    return alt.layer(whiskers, boxes, medians, means).properties(title="Similarity per layer",
                                                                 height=_per_layer_height())


def shared_concepts_chart(
    shared: pd.DataFrame, title: str, *, top: int = 30, x_max: Optional[int] = None
) -> alt.Chart:
    """Horizontal bars: units per concept, most shared first, at most ``top`` bars.

    ``shared`` holds one model's and one layer's rows of ``analysis.shared_concepts``.
    ``x_max`` fixes the axis end so charts of several models can be compared by eye.
    """
    data = shared.nlargest(top, "n_units", keep="first")[["concept", "n_units", "units"]].copy()
    # Vega cannot show a list in a tooltip; a short string can.
    data["units"] = [", ".join(map(str, units)) for units in data["units"]]
    scale = alt.Scale(domain=[0, x_max]) if x_max else alt.Undefined
    return (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X("n_units:Q", title="Units", scale=scale, axis=COUNT_AXIS),
            y=alt.Y("concept:N", sort="-x", title=None, axis=CONCEPT_AXIS),
            tooltip=[
                alt.Tooltip("concept:N", title="Concept"),
                alt.Tooltip("n_units:Q", title="Units"),
                alt.Tooltip("units:N", title="Unit indices"),
            ],
        )
        .properties(title=_wrapped_title(title), height=alt.Step(BAR_STEP))
    )


def _wrapped_title(text: str) -> alt.TitleParams:
    """A title over several lines of at most ``TITLE_LINE_CHARS`` characters, from the
    chart's left edge: Vega cuts a one-line title at the plot's width (a model's name
    in a 420 px panel read "resnet18 · la…")."""
    return alt.TitleParams(textwrap.wrap(text, TITLE_LINE_CHARS) or [text], anchor="start", frame="bounds")


def jaccard_chart(jaccard: pd.DataFrame) -> alt.LayerChart:
    """Horizontal bars of the Jaccard index of the concept sets per layer
    (``analysis.jaccard_by_layer``), each index printed right of its bar."""
    data = jaccard[["layer", "jaccard", "shared", "distinct_a", "distinct_b"]]
    base = alt.Chart(data).encode(
        y=alt.Y("layer:N", sort=_layer_sort(data), title="Layer", axis=LAYER_AXIS),
        # Ticks up to 1 only: the axis runs on to leave room for a label at 1.
        x=alt.X("jaccard:Q", title="Jaccard index", scale=_value_scale(1.0),
                axis=alt.Axis(values=[0, 0.2, 0.4, 0.6, 0.8, 1])),
        tooltip=[
            alt.Tooltip("layer:N", title="Layer"),
            alt.Tooltip("jaccard:Q", title="Jaccard", format=".3f"),
            alt.Tooltip("shared:Q", title="Shared concepts"),
            alt.Tooltip("distinct_a:Q", title="Distinct in A"),
            alt.Tooltip("distinct_b:Q", title="Distinct in B"),
        ],
    )
    labels = base.mark_text(baseline="middle", **VALUE_LABEL).encode(text=alt.Text("jaccard:Q", format=".2f"),
                                                                      color=alt.value("#333"))
    return alt.layer(base.mark_bar(), labels).properties(title="Overlap of concept sets (Jaccard)",
                                                         height=alt.Step(BAR_STEP))


def diff_chart(comparison: pd.DataFrame, label_a: str, label_b: str, *, top: int = 25) -> alt.Chart:
    """Diverging bars for one layer: units per concept in A to the left, in B to the right.

    ``comparison`` holds one layer's rows of ``analysis.compare_models``; the ``top``
    concepts with the most units in A and B together are shown, largest first.
    """
    data = comparison.assign(total=comparison["n_units_a"] + comparison["n_units_b"])
    data = data.nlargest(top, "total", keep="first")
    long = pd.concat([
        pd.DataFrame({"concept": data["concept"], "model": label_a, "units": data["n_units_a"],
                      "signed_units": -data["n_units_a"], "total": data["total"], "where": data["where"]}),
        pd.DataFrame({"concept": data["concept"], "model": label_b, "units": data["n_units_b"],
                      "signed_units": data["n_units_b"], "total": data["total"], "where": data["where"]}),
    ], ignore_index=True)
    return (
        alt.Chart(long)
        .mark_bar()
        .encode(
            x=alt.X("signed_units:Q", title="← units in A · units in B →",
                    axis=alt.Axis(labelExpr="format(abs(datum.value), 'd')", tickMinStep=1)),
            y=alt.Y("concept:N", title=None, axis=CONCEPT_AXIS,
                    sort=alt.EncodingSortField(field="total", op="max", order="descending")),
            color=alt.Color("model:N", title="Model", scale=alt.Scale(domain=[label_a, label_b]),
                            legend=MODEL_LEGEND),
            tooltip=[
                alt.Tooltip("concept:N", title="Concept"),
                alt.Tooltip("model:N", title="Model"),
                alt.Tooltip("units:Q", title="Units"),
                alt.Tooltip("where:N", title="Occurs in"),
            ],
        )
        .properties(height=alt.Step(BAR_STEP))
    )


def chart_to_png(chart: alt.TopLevelMixin, scale: float = 2.0) -> bytes:
    """Render a chart to PNG offline with vl-convert (no browser, no network)."""
    import vl_convert  # imported lazily: only needed when someone downloads a chart

    return vl_convert.vegalite_to_png(chart.to_json(), scale=scale)


def chart_to_svg(chart: alt.TopLevelMixin) -> str:
    """Render a chart to SVG offline with vl-convert."""
    import vl_convert

    return vl_convert.vegalite_to_svg(chart.to_json())


def category_mix_chart(mix: pd.DataFrame) -> alt.FacetChart:
    """Stacked bars: the share of each concept category among a layer's labels, one panel per model.

    ``mix`` has ``model``, ``layer``, ``category``, ``units`` and ``share`` (see
    ``dissect_core.runs.categories.category_mix``). Panels of a fixed width wrap two to a row,
    with each model's name split at " · " over several header lines, so eight models
    stay within a 900 px window (panels side by side grew past it).
    """
    from dissect_core.runs.categories import CATEGORIES

    data = mix[["model", "layer", "category", "units", "share"]]
    bars = alt.Chart(data).mark_bar().encode(
        x=alt.X("layer:N", sort=_layer_sort(data), title="Layer"),
        y=alt.Y("share:Q", title="Share of units", axis=alt.Axis(format="%"), stack="normalize"),
        color=alt.Color("category:N", title="Category", sort=list(CATEGORIES), scale=alt.Scale(domain=list(CATEGORIES)),
                        legend=alt.Legend(orient="bottom", columns=4)),
        order=alt.Order("category_rank:Q"),
        tooltip=[
            alt.Tooltip("model:N", title="Model"),
            alt.Tooltip("layer:N", title="Layer"),
            alt.Tooltip("category:N", title="Category"),
            alt.Tooltip("units:Q", title="Units"),
            alt.Tooltip("share:Q", title="Share", format=".1%"),
        ],
    ).transform_calculate(
        category_rank=f"indexof({list(CATEGORIES)!r}, datum.category)"
    ).properties(width=CATEGORY_PANEL_WIDTH, height=160)
    header = alt.Header(title=None, labelExpr="split(datum.label, ' · ')", labelLimit=CATEGORY_PANEL_WIDTH)
    return bars.facet(facet=alt.Facet("model:N", header=header, sort=list(dict.fromkeys(data["model"]))),
                      columns=2).properties(title="Concept categories per layer")


def quality_scatter_chart(points: pd.DataFrame, x_title: str) -> alt.Chart:
    """Activation against the label's match over held-out probe images (``points``:
    ``activation``, ``similarity``); ``x_title`` says what the match is (``Run.match_name``:
    CLIP similarity, or for labelled runs whether the image carries the label)."""
    return alt.Chart(points[["activation", "similarity"]]).mark_circle(size=18, opacity=0.5).encode(
        x=alt.X("similarity:Q", title=x_title, scale=alt.Scale(zero=False)),
        y=alt.Y("activation:Q", title="Unit activation", scale=alt.Scale(zero=False)),
        tooltip=[alt.Tooltip("similarity:Q", format=".3f"), alt.Tooltip("activation:Q", format=".3f")],
    ).properties(title=_wrapped_title("Activation vs the label (held-out images)"), height=260)


def label_counts_chart(counts: pd.DataFrame, label: str, title: str) -> alt.LayerChart:
    """Horizontal bars: how many of a unit's top images carry each label (``counts``:
    ``label``, ``images``, most first), the unit's own ``label`` highlighted, counts printed."""
    data = counts[["label", "images"]].assign(is_label=counts["label"] == label)
    base = alt.Chart(data).encode(
        y=alt.Y("label:N", sort=list(data["label"]), title=None, axis=CONCEPT_AXIS),
        x=alt.X("images:Q", title="Top images", axis=COUNT_AXIS, scale=_value_scale(data["images"].max())),
        tooltip=[alt.Tooltip("label:N", title="Label"), alt.Tooltip("images:Q", title="Images")],
    )
    bars = base.mark_bar().encode(color=alt.condition(alt.datum.is_label, alt.value("#d6604d"),
                                                      alt.value("#4c78a8")))
    values = base.mark_text(baseline="middle", **VALUE_LABEL).encode(text="images:Q", color=alt.value("#333"))
    return alt.layer(bars, values).properties(title=_wrapped_title(title), height=alt.Step(BAR_STEP))

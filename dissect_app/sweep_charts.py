"""Charts of a sweep (``dissect_core.runs.sweep_summary``), drawn for up to hundreds of runs.

With that many runs a colour per run and a legend entry per run cannot be read, so runs
are coloured along one sequential scale by their place in the sweep (the training step
where the sweep knows it), with one gradient legend; every figure is also in a table.
"""
from __future__ import annotations

import altair as alt
import pandas as pd

SWEEP_SCHEME = "viridis"  # perceptually ordered: early runs dark, late runs bright
# The whole chart's height: Streamlit fits the axes' titles and the legend into it too, and
# at 260 px the plot kept 88 px for 100 runs' lines.
CHART_HEIGHT = 360
# px per category panel, two to a row: a faceted chart cannot take the container's width,
# and at 900 px, beside the sidebar, the content column is 440 px wide (three 200 px panels
# overflowed it, cutting the third column and scrolling the page sideways).
CATEGORY_PANEL_WIDTH = 160
CATEGORY_COLUMNS = 2


def _order(data: pd.DataFrame) -> tuple[str, str]:
    """The field that orders the runs (training step where every run has one) and its title."""
    if "step" in data and data["step"].notna().all() and len(data):
        return "step", "Training step"
    return "position", "Position in the sweep"


def _colour(data: pd.DataFrame) -> alt.Color:
    field, title = _order(data)
    return alt.Color(f"{field}:Q", title=title, scale=alt.Scale(scheme=SWEEP_SCHEME),
                     legend=alt.Legend(type="gradient", orient="bottom", direction="horizontal", gradientLength=240,
                                       format="d", tickMinStep=1))


def depth_chart(profile: pd.DataFrame) -> alt.Chart:
    """Distinct concepts against relative depth, one line per run."""
    # Hollow points: filled ones give the colour a fill legend too, and Vega then draws the
    # runs' scale as a few dots (0, 10000, ...), as if there were five groups, not a gradient.
    point = alt.OverlayMarkDef(size=18, filled=False)
    return alt.Chart(profile).mark_line(point=point, strokeWidth=1.2, opacity=0.8).encode(
        x=alt.X("depth:Q", title="Relative depth (first layer 0, last 1)", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("distinct_concepts:Q", title="Distinct concepts", axis=alt.Axis(tickMinStep=1, format="d")),
        color=_colour(profile),
        detail="position:N",
        tooltip=["model:N", "layer:N", "units:Q", "distinct_concepts:Q"],
    ).properties(height=CHART_HEIGHT)


def category_depth_chart(shares: pd.DataFrame) -> alt.FacetChart:
    """Per concept category, its share of a layer's units against relative depth, one line
    per run; panels wrap, so the chart grows in height, never width."""
    return alt.Chart(shares).mark_line(strokeWidth=1, opacity=0.7).encode(
        x=alt.X("depth:Q", title="Relative depth", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("share:Q", title="Share of units", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
        color=_colour(shares),
        detail="position:N",
        tooltip=["model:N", "layer:N", "category:N", alt.Tooltip("share:Q", format=".0%")],
    ).properties(width=CATEGORY_PANEL_WIDTH, height=140).facet(
        facet=alt.Facet("category:N", title=None, header=alt.Header(labelFontSize=12)), columns=CATEGORY_COLUMNS,
    )


def changes_chart(changes: pd.DataFrame) -> alt.Chart:
    """How many concepts appear (above zero) and vanish (below) at each run of the sweep."""
    field, title = _order(changes)
    counts = changes.groupby([field, "change"], as_index=False).size().rename(columns={"size": "concepts"})
    # One bar per run, appearing up and vanishing down, rather than the two side by side:
    # with 100 runs at 900 px the pairs were 1.3 px bars whose colours blurred together.
    counts["signed"] = counts["concepts"].where(counts["change"] == "appears", -counts["concepts"])
    return alt.Chart(counts).mark_bar().encode(
        x=alt.X(f"{field}:O", title=title, axis=alt.Axis(labelOverlap=True, labelAngle=0)),
        y=alt.Y("signed:Q", title="Concepts",
                axis=alt.Axis(tickMinStep=1, format="d", labelExpr="abs(datum.value)")),
        color=alt.Color("change:N", title=None, scale=alt.Scale(domain=["appears", "vanishes"],
                                                               range=["#2a9d8f", "#e76f51"]),
                        legend=alt.Legend(orient="bottom")),
        tooltip=[f"{field}:O", "change:N", "concepts:Q"],
    ).properties(height=CHART_HEIGHT)


def figures_chart(figures: pd.DataFrame) -> alt.Chart:
    """How far the runs' labels hold along the sweep: one line per figure, runs in sweep order.

    Training steps go on a symmetric-log axis: checkpoints are usually saved more densely
    early on, where a network changes most, and a linear axis crowds them at its left end."""
    field, title = _order(figures)
    scale = alt.Scale(type="symlog") if field == "step" else alt.Scale()
    # Ticks at the runs themselves (Vega's own symlog ticks left 0, 200 and 400 alone).
    ticks = sorted({int(value) for value in figures[field]})
    return alt.Chart(figures).mark_line(point=alt.OverlayMarkDef(size=30), strokeWidth=2).encode(
        x=alt.X(f"{field}:Q", title=title, scale=scale, axis=alt.Axis(format="d", values=ticks, labelOverlap=True)),
        y=alt.Y("share:Q", title="Share of units", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("figure:N", title=None, legend=alt.Legend(orient="bottom", direction="vertical", labelLimit=0)),
        tooltip=["model:N", f"{field}:Q", "figure:N", alt.Tooltip("share:Q", format=".0%")],
    ).properties(height=CHART_HEIGHT)


def unit_labels_chart(labels: pd.DataFrame, score_name: str) -> alt.Chart:
    """One row per unit and one column per run, coloured by the unit's label: where a unit
    settles on a concept, its row turns one colour."""
    field, title = _order(labels)
    return alt.Chart(labels).mark_rect().encode(
        x=alt.X(f"{field}:O", title=title, axis=alt.Axis(labelOverlap=True, labelAngle=0)),
        y=alt.Y("unit:O", title="Unit", axis=alt.Axis(labelOverlap=True)),
        color=alt.Color("description:N", title="Label", scale=alt.Scale(scheme="tableau20"),
                        legend=alt.Legend(orient="bottom", columns=3, labelLimit=0)),
        tooltip=["model:N", "unit:O", alt.Tooltip("description:N", title="label"),
                 alt.Tooltip("similarity:Q", title=score_name, format=".3f")],
    ).properties(height=alt.Step(8) if labels["unit"].nunique() > 40 else alt.Step(14))

"""Shared concepts: per layer, the concepts that label at least N units, model by model."""
import pandas as pd
import streamlit as st

import dissect_app
from dissect_core.runs import analysis
from dissect_app import charts

TOP_BARS = 30  # a chart with hundreds of bars is unreadable; the table below has every row
PANEL_WIDTH = 420  # px per model's chart: concept names (up to 220 px) and bars side by side

frame = dissect_app.page_frame("Shared concepts")
runs = dissect_app.require_models(frame, 1)
layers = dissect_app.require_layers(frame)
if len(runs) == 1:
    st.info("Pick a second model in the sidebar to compare side by side.", icon=":material/arrow_back:")

largest = int(analysis.summarize_models(frame.frames, layers)["top_concept_units"].max())
slider_max = max(largest, 2)
min_units = dissect_app.persistent(
    st.slider, "Show concepts learned by at least N units", key="min_units", default=4,
    sanitize=lambda value: min(max(int(value), 1), slider_max), min_value=1, max_value=slider_max,
)
stable_only = dissect_app.stable_toggle(runs)
shared = {run.label: analysis.shared_concepts(dissect_app.descriptions_for(run, stable_only), min_units) for run in runs}
if stable_only:
    moves = dissect_app.count_moves(runs, layers)
    if not moves.empty:
        st.caption("How the numbers move when unstable units are left out:")
        dissect_app.show_table(moves, key="shared_moves_csv", file_name="stable_units_per_layer")

for index, layer in enumerate(layers):
    st.subheader(f"Layer {dissect_app.md(layer)}")
    in_layer = {label: rows[rows["layer"] == layer] for label, rows in shared.items()}
    x_max = max((int(rows["n_units"].max()) for rows in in_layer.values() if not rows.empty), default=0)
    # One fixed-width panel per model in a wrapping row (one to a row at 900 px, two at
    # 1400 px): in a column per model, eight models left each chart a sliver.
    with st.container(horizontal=True, wrap=True):
        for run in runs:
            rows = in_layer[run.label]
            with st.container(width=PANEL_WIDTH):
                if layer not in run.layers:
                    st.info(f"{dissect_app.md(run.label)} has no layer {dissect_app.md(layer)}.")
                elif rows.empty:
                    st.info(f"{dissect_app.md(run.label)}: no concept labels {min_units} or more units here.")
                else:
                    if len(rows) > TOP_BARS:
                        st.caption(f"The {TOP_BARS} most shared of {len(rows)} concepts; the table has all.")
                    dissect_app.show_chart(
                        charts.shared_concepts_chart(rows, run.label, top=TOP_BARS, x_max=x_max),
                        key=f"shared_{index}_{run.label}", file_name=f"shared_{run.label}_{layer}",
                    )
    table = pd.concat(
        [rows.drop(columns="layer").assign(model=label) for label, rows in in_layer.items()], ignore_index=True
    )[["model", "concept", "n_units", "units"]]
    if not table.empty:
        dissect_app.show_table(
            table, key=f"shared_{index}_csv", file_name=f"shared_concepts_{layer}",
            column_config={"units": st.column_config.ListColumn("Units (indices)")},
        )

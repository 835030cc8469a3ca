"""Sweep: many runs at once (a model zoo, or one network's checkpoints over training): how far
the labels hold along the sweep, concepts against depth, category shares by depth, concepts
that appear or vanish, and a table of every run from which any two open in Model differences."""
import streamlit as st

import dissect_app
from dissect_app import sweep_charts
from dissect_core.runs import categories, sweep_summary

frame = dissect_app.page_frame("Sweep")
points = dissect_app.sweep_points(frame)
if len(points) < 2:
    st.info("A sweep needs at least two runs: load a sweep's folder with `--results`, "
            "or run `dissect sweep SPEC.toml`.", icon=":material/info:")
    st.stop()
st.caption(f"{len(points)} runs, in sweep order.")

figures = sweep_summary.figures_along(points)
if not figures.empty:
    st.subheader("How far the labels hold along the sweep")
    st.caption("Per run, shares of units: labels that hold in 80 % of resamples of the probe images; the "
               "classifier's output-layer check (output unit i labelled with class i); for probe labels, "
               "labels that are the most frequent label among the unit's top images. Over training they "
               "rise as the network's units come to stand for its classes.")
    dissect_app.show_chart(sweep_charts.figures_chart(figures), key="sweep_figures", file_name="sweep_figures")

if sweep_summary.one_network(points):
    st.subheader("Each unit's label along the sweep")
    st.caption("The runs are one network's checkpoints, so a unit is the same unit in every run: one row "
               "per unit, one column per run, coloured by its label. A row that settles on one colour is "
               "a unit that has found its concept.")
    layers = points[0].run.layers
    layer = frame.controls.selectbox("Layer to follow", layers, index=len(layers) - 1, key="sweep_layer")
    labels = sweep_summary.unit_labels_along(points, layer)
    score_name = points[-1].run.score_name or "similarity"
    dissect_app.show_chart(sweep_charts.unit_labels_chart(labels, score_name), key="sweep_unit_labels",
                           file_name=f"sweep_unit_labels_{layer}")

st.subheader("Distinct concepts by depth")
st.caption("One line per run, coloured by its place in the sweep (dark: first, bright: last). "
           "Depth is relative: a network's first chosen layer is 0, its last 1.")
profile = sweep_summary.depth_profile(points)
dissect_app.show_chart(sweep_charts.depth_chart(profile), key="sweep_depth", file_name="sweep_concepts_by_depth")

st.subheader("Concept categories by depth")
shares = sweep_summary.category_share_by_depth(points)
if set(shares["category"]) == {categories.OWN_CLASS}:
    st.caption("Every concept is one of the probe images' own classes (probe labels): there are no "
               "categories to compare.")
elif not shares.empty:
    dissect_app.show_chart(sweep_charts.category_depth_chart(shares), key="sweep_categories",
                           file_name="sweep_categories_by_depth")

st.subheader("Concepts that appear or vanish along the sweep")
changes = sweep_summary.concept_changes(points)
if changes.empty:
    st.caption("Every run names the same concepts.")
else:
    dissect_app.show_chart(sweep_charts.changes_chart(changes), key="sweep_changes", file_name="sweep_changes")
    # The change and the concept first after the run's (pinned) name: behind the position
    # and the step they were cut off at 900 px.
    dissect_app.show_table(changes[["model", "change", "concept", "units", "step", "position"]],
                           key="sweep_changes_csv", file_name="sweep_concept_changes")

st.subheader("Every run")
st.caption("Sort by any column. Pick two rows to compare them in Model differences.")
table = sweep_summary.sweep_table(points)
picked = st.dataframe(
    table, key="sweep_table", hide_index=True, on_select="rerun", selection_mode="multi-row",
    # The run pinned, the figures to sort by next to it and short headers: at 900 px the
    # content column is 440 px, and a large Run column followed by step and method left no
    # figure in view; these fit #, the run, its step and its concept count.
    column_order=["position", "model", "step", "distinct_concepts", "stable_share", "output_top1", "majority_share",
                  "units", "layers", "method"],
    column_config={
        "position": st.column_config.NumberColumn("#", width=44, pinned=True),
        "model": st.column_config.TextColumn("Run", width="medium", pinned=True),
        "step": st.column_config.NumberColumn("Step"),
        "distinct_concepts": st.column_config.NumberColumn("Concepts", help="Distinct concepts over all its layers"),
        "units": st.column_config.NumberColumn("Units"),
        "layers": st.column_config.NumberColumn("Layers"),
        "method": st.column_config.TextColumn("Method"),
        "stable_share": st.column_config.NumberColumn("Stable units", format="percent",
                                                      help="Share of units whose label holds in 80 % of resamples"),
        "output_top1": st.column_config.NumberColumn("Output check (top-1)", format="percent"),
        "majority_share": st.column_config.NumberColumn(
            "Top-image majority", format="percent",
            help="Probe labels: share of units whose label is the most frequent among their top images"),
    },
)
rows = picked.selection.rows
if len(rows) == 2:
    first, second = (table.iloc[row]["model"] for row in rows)
    if st.button("Compare these two in Model differences", icon=":material/compare_arrows:", type="primary"):
        dissect_app.open_differences(first, second)
elif rows:
    st.caption("Pick exactly two rows to compare them.")

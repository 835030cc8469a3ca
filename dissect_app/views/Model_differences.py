"""Model differences: which concepts only model A, only model B, or both learned, layer by layer."""
import pandas as pd
import streamlit as st

import dissect_app
from dissect_core.runs import analysis
from dissect_app import charts

frame = dissect_app.page_frame("Model differences")
runs = dissect_app.require_models(frame, 2)
labels = [run.label for run in runs]

pick_a, pick_b = st.columns(2)
with pick_a:
    label_a = dissect_app.persistent(st.selectbox, "Model A", key="model_a", default=labels[0],
                                sanitize=lambda v: v if v in labels else labels[0], options=labels)
with pick_b:
    label_b = dissect_app.persistent(st.selectbox, "Model B", key="model_b", default=labels[1],
                                sanitize=lambda v: v if v in labels else labels[1], options=labels)
if label_a == label_b:
    st.warning("Pick two different models.")
    st.stop()
run_a, run_b = frame.runs[label_a], frame.runs[label_b]
stable_only = dissect_app.stable_toggle([run_a, run_b])
df_a, df_b = dissect_app.descriptions_for(run_a, stable_only), dissect_app.descriptions_for(run_b, stable_only)
st.caption(dissect_app.md(f"Labels of A by {run_a.method_name}, of B by {run_b.method_name}.")
           + (" Concepts match only where both methods name them the same way."
              if run_a.method_name != run_b.method_name else ""))

common, only_a, only_b = analysis.compare_layers(df_a, df_b)
for label, missing in ((label_a, only_a), (label_b, only_b)):
    if missing:
        st.info(f"Only {dissect_app.md(label)} has layer(s) {dissect_app.md(', '.join(missing))}; "
                "they are left out of the comparison.")
if not common:
    st.warning("The two models have no layer in common.")
    st.stop()
layers = [layer for layer in dissect_app.pick_layers(frame, [run_a, run_b]) if layer in common]
if not layers:
    st.info("Pick at least one layer the two models share in the sidebar.", icon=":material/arrow_back:")
    st.stop()

st.subheader("Overlap per layer")
if stable_only:
    moves = dissect_app.count_moves([run_a, run_b], layers)
    if not moves.empty:
        st.caption("With unstable units left out, units and distinct concepts per layer move as follows:")
        dissect_app.show_table(moves, key="differences_moves_csv", file_name="stable_units_per_layer")
jaccard = analysis.jaccard_by_layer(analysis.filter_layers(df_a, layers), analysis.filter_layers(df_b, layers))
# Table, then chart, each at full width: beside the table the chart was 170 px wide at
# 900 px, its title cut and its labels crowded.
dissect_app.show_table(jaccard, key="jaccard_csv", file_name="jaccard", column_config={
    "distinct_a": "Distinct in A", "distinct_b": "Distinct in B", "shared": "Shared concepts",
    "jaccard": st.column_config.NumberColumn("Jaccard", format="%.3f"),
    "same_unit_same_concept": "Same unit, same concept",
})
dissect_app.show_chart(charts.jaccard_chart(jaccard), key="jaccard", file_name="jaccard")

st.subheader("Concepts only in A, only in B, in both")
comparison = analysis.compare_models(df_a, df_b)
comparison = comparison[comparison["layer"].isin(layers)]
unit_columns = {"n_units_a": "Units in A", "n_units_b": "Units in B"}
for index, (layer, tab) in enumerate(zip(layers, st.tabs([dissect_app.md(layer) for layer in layers]))):
    rows = comparison[comparison["layer"] == layer]
    groups = {where: rows[rows["where"] == where] for where in analysis.WHERE_ORDER}
    with tab:
        for column, (title, where, shown) in zip(st.columns(3), (
            ("Only in A", "only A", ["concept", "n_units_a"]),
            ("In both", "both", ["concept", "n_units_a", "n_units_b"]),
            ("Only in B", "only B", ["concept", "n_units_b"]),
        )):
            with column:
                st.metric(title, len(groups[where]), help="Distinct concepts")
                dissect_app.show_table(groups[where][shown], key=f"diff_{index}_{where}_csv",
                                  file_name=f"{where}_{layer}", column_config=unit_columns, height=300)
        st.caption("Concepts with the most units in A and B together (at most 25).")
        dissect_app.show_chart(charts.diff_chart(rows, label_a, label_b), key=f"diff_{index}",
                          file_name=f"differences_{layer}")

st.subheader("Units that carry a concept")
concepts = sorted(set(df_a["description"]) | set(df_b["description"]))
both = comparison[comparison["where"] == "both"]
default_concept = str(both.iloc[0]["concept"]) if not both.empty else concepts[0]
concept = dissect_app.persistent(st.selectbox, "Concept", key="concept", default=default_concept,
                            sanitize=lambda v: v if v in concepts else default_concept, options=concepts)
for column, (label, df) in zip(st.columns(2), ((label_a, df_a), (label_b, df_b))):
    score_name = frame.runs[label].score_name or "similarity"  # a labelled run's is its label score
    units = analysis.units_with_concept(df, concept)
    with column:
        st.markdown(f"**{dissect_app.md(label)}**: {len(units)} unit(s)")
        if units.empty:
            continue
        units["link"] = [dissect_app.unit_link_url(label, layer, unit) for layer, unit in zip(units["layer"], units["unit"])]
        dissect_app.show_table(units, key=f"concept_units_{label}_csv", file_name=f"units_{label}_{concept}",
                          column_config={
                              "similarity": st.column_config.NumberColumn(score_name.capitalize(), format="%.3f"),
                              "link": st.column_config.LinkColumn("Unit explorer", display_text="open ↗"),
                          })
        best = analysis.best_unit(units)
        score = "" if pd.isna(best["similarity"]) else f", {dissect_app.md(score_name)} {best['similarity']:.3f}"
        st.page_link(dissect_app.UNIT_EXPLORER_PAGE, icon=":material/grid_view:",
                     label=f"Open the best unit ({dissect_app.md(best['layer'])}, unit {int(best['unit'])}{score})",
                     query_params=dissect_app.unit_link_params(label, best["layer"], best["unit"]))

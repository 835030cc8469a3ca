"""Overview (home page): units, distinct concepts and similarity per model and layer.

Start with ``streamlit run streamlit_app.py -- --results DIR`` to load every
``descriptions.csv`` under ``DIR``; see ``dissect_app`` for the other sources.
"""
import pandas as pd
import streamlit as st

import dissect_app
from dissect_core.runs import analysis
from dissect_core.runs import categories
from dissect_app import charts

frame = dissect_app.page_frame("Overview")
runs = dissect_app.require_models(frame, 1)
layers = dissect_app.require_layers(frame)

summary = analysis.summarize_models(frame.frames, layers)
summary["method"] = summary["model"].map({run.label: run.method_name for run in runs})  # who made the labels

CARD_WIDTH = 200  # px: cards wrap, as many to a row as fit (two at 900 px, four at 1400 px)

# One card per model, fixed width, in a wrapping row: with columns, eight models at
# 900 px cut the numbers ("8..") and the labels.
with st.container(horizontal=True, wrap=True):
    for run in runs:
        chosen = analysis.filter_layers(run.descriptions, layers)
        with st.container(border=True, width=CARD_WIDTH):
            st.markdown(f"**{dissect_app.md(run.label)}**")
            details = [run.method_name, run.clip_model, run.probe_name, run.concept_set_name, run.similarity_fn]
            st.caption(dissect_app.md(" · ".join(str(d) for d in details if d)))
            st.metric("Units", len(chosen))
            st.metric(
                "Distinct concepts overall", analysis.unique_concept_counts(chosen).overall,
                help="Distinct descriptions across the chosen layers; a concept found in two layers counts once.",
            )

# Tables and charts stacked, each at full width: side by side, with many models the
# table lost its columns and the chart its height at 900 px.
st.subheader("Units and concepts per layer")
dissect_app.show_table(
    summary[["model", "layer", "units", "distinct_concepts", "top_concept_units", "top_concept", "method"]],
    key="overview_counts_csv", file_name="concepts_per_layer",
    column_config={
        "distinct_concepts": st.column_config.Column("Concepts", help="Distinct concepts in the layer"),
        "top_concept_units": st.column_config.Column("Max units", help="Most units of the layer that share one concept"),
        "top_concept": st.column_config.Column("Top concept", help="The concept those units share"),
    },
)
dissect_app.show_chart(charts.distinct_concepts_chart(summary), key="overview_distinct", file_name="distinct_concepts")

st.subheader("Similarity scores per layer")
st.caption("Box: first to third quartile · white tick: median · dot: mean · whiskers: minimum to maximum.")
other_scores = {run.method_name: run.score_name for run in runs if run.score_name != "similarity"}
if other_scores:  # NetDissect's IoU, labelled runs' label scores and CLIP similarity have different scales
    st.caption(dissect_app.md(" · ".join(f"{method}: {score or 'no score'}" for method, score in other_scores.items())
                              + " instead of CLIP-Dissect's similarity, on a scale of its own."))
similarity = summary[["model", "layer", "mean_similarity", "median_similarity", "q1_similarity",
                      "q3_similarity", "min_similarity", "max_similarity"]]
dissect_app.show_table(
    similarity, key="overview_similarity_csv", file_name="similarity_per_layer",
    column_config={
        column: st.column_config.NumberColumn(column.split("_")[0].capitalize(), format="%.3f")
        for column in similarity.columns[2:]
    },
)
dissect_app.show_chart(charts.similarity_chart(summary), key="overview_similarity", file_name="similarity")

st.subheader("How far to trust the labels")
st.caption("**Stable units**: share of units that keep their label in at least 80 % of bootstrap resamples "
           "of the probe images. **Correlation**: mean over units of the correlation between a unit's "
           "activation and its label's CLIP similarity on held-out images"
           + (" (for probe-label runs: whether the image carries the label)" if any(r.labelled for r in runs)
              else "")
           + ". **Distinct concepts** with a 95 % bootstrap interval, kept within the possible range (at most "
           "the layer's units and concepts): two models' counts differ credibly only where the intervals do "
           "not overlap.")
quality = dissect_app.quality_table(runs, layers)
if not quality.empty:
    dissect_app.show_table(quality, key="overview_quality_csv", file_name="label_quality_per_layer", column_config={
        "stable_share": st.column_config.NumberColumn("Stable units", format="percent"),
        "mean_correlation": st.column_config.NumberColumn("Correlation", format="%.3f"),
        "distinct_concepts": st.column_config.Column("Distinct concepts [95 % interval]"),
    })
dissect_app.absent_notes(runs)
checks = dissect_app.output_checks(runs)
if not checks.empty:
    st.markdown("**Output-layer check**: on the classifier, dissected with the class names as concepts, "
                "unit *i* should be labelled class *i* (CLIP-Dissect's own check).")
    dissect_app.show_table(checks, key="overview_output_check_csv", file_name="output_layer_check", column_config={
        "top1": st.column_config.NumberColumn("Top-1", format="percent"),
        "top5": st.column_config.NumberColumn("Top-5", format="percent"),
    })

st.subheader("Concept categories per layer")
st.caption("Each label's category: Broden's own for Broden labels (-c colours, -s scenes, its texture and "
           "material lists), otherwise the most frequent WordNet 3.0 noun sense; see the README. Probe-label "
           "runs' labels are the data set's own classes: category *class*.")
mix = pd.concat([categories.category_mix(analysis.filter_layers(run.descriptions, layers), own_classes=run.labelled)
                 .assign(model=run.label) for run in runs], ignore_index=True)
dissect_app.show_table(mix[["model", "layer", "category", "units", "share"]], key="overview_categories_csv",
                  file_name="concept_categories", height=300,
                  column_config={"share": st.column_config.NumberColumn("Share", format="percent")})
dissect_app.show_chart(charts.category_mix_chart(mix), key="overview_categories", file_name="concept_categories")

"""Unit explorer: one unit's concepts, its top probe images with heatmaps and masks,
and the layer's units ranked by how well a concept explains them.

The URL carries model, layer and unit (``?model=…&layer=…&unit=…``), so a view can
be shared as a link.
"""
import math

import pandas as pd
import streamlit as st

import dissect_app
from dissect_core.runs import analysis, unit_evidence
from dissect_app import charts
from dissect_app.unit_notes import label_counts_note, margin_note


frame = dissect_app.page_frame("Unit explorer")
if not frame.runs:
    dissect_app.how_to_get_results()
    st.stop()
labels = list(frame.runs)

# A link opened from outside (or another page) seeds the pickers once; afterwards the
# pickers win and the URL follows them. What the link named but is not here is said.
link = dissect_app.parse_unit_link(st.query_params)
link_problems: tuple[str, ...] = ()
if (link.target != st.session_state.get("_unit_link_written") and any(v is not None for v in link.target)) \
        or link.problems:
    checked = dissect_app.check_unit_link(link, frame.runs)
    link_problems = checked.problems
    if checked.model is not None:
        st.session_state["_unit_model"] = checked.model
    if checked.layer is not None:
        st.session_state["_unit_layer"] = checked.layer
    if checked.unit is not None:
        st.session_state["_unit"] = checked.unit

default_model = frame.selected[0].label if frame.selected else labels[0]
model = dissect_app.persistent(st.sidebar.selectbox, "Model", key="unit_model", default=default_model,
                          sanitize=lambda v: v if v in frame.runs else default_model, options=labels)
run = frame.runs[model]
layers = run.layers
layer = dissect_app.persistent(st.sidebar.selectbox, "Layer", key="unit_layer", default=layers[0],
                          sanitize=lambda v: v if v in layers else layers[0], options=layers)
units = run.units(layer)
last_unit = int(units["unit"].max())


def step(delta: int) -> None:
    st.session_state["_unit"] = min(max(int(st.session_state.get("_unit", 0)) + delta, 0), last_unit)


unit = dissect_app.persistent(st.sidebar.number_input, "Unit", key="unit", default=0,
                         sanitize=lambda v: min(max(int(v), 0), last_unit), min_value=0, max_value=last_unit)
previous, following = st.sidebar.columns(2)
previous.button("◀ Previous", key="unit_previous", on_click=step, args=(-1,), disabled=unit == 0, width="stretch")
following.button("Next ▶", key="unit_next", on_click=step, args=(1,), disabled=unit == last_unit,
                 width="stretch")
count = dissect_app.persistent(st.sidebar.slider, "Images", key="unit_images", default=10,
                          min_value=5, max_value=50, step=5)

written = dissect_app.unit_link_params(model, layer, unit)
st.query_params.from_dict(written)
st.session_state["_unit_link_written"] = (model, layer, unit)
if link_problems:
    st.warning(dissect_app.message(f"This link could not be followed: {'; '.join(link_problems)}. "
                              f"Showing {model}, layer {layer}, unit {unit} instead."), icon=":material/link_off:")

row = units[units["unit"] == unit]
if row.empty:
    st.warning(f"Unit {unit} is not in the results of layer {dissect_app.md(layer)}.")
    st.stop()
concept, similarity = row["description"].iloc[0], float(row["similarity"].iloc[0])
st.subheader(f"{dissect_app.md(layer)} · unit {unit}: {dissect_app.md(concept)}")
# Labelled runs' concepts are their probe images' labels: no CLIP model chose them.
source = "concepts: its probe images' labels (no CLIP)" if run.labelled else f"labels by {dissect_app.md(run.method)}"
if run.score_name and not math.isnan(similarity):
    st.caption(f"{dissect_app.md(model)} · {source} · {dissect_app.md(run.score_name)} {similarity:.4f} · "
               f"rank {int(analysis.rank_units(run.descriptions, layer).set_index('unit').loc[unit, 'rank'])} "
               f"of {len(units)} in this layer by {dissect_app.md(run.score_name)}")
else:
    st.caption(f"{dissect_app.md(model)} · {source}, which gives no score")

figures = None
if run.label_quality is not None:
    figures = run.label_quality[(run.label_quality["layer"] == layer) & (run.label_quality["unit"] == unit)]
if figures is None or figures.empty:
    st.info(f"No label-quality figures: {dissect_app.md(run.quality_absent_reason(layer) or 'none for this layer.')}",
            icon=":material/help:")
else:
    figure = figures.iloc[0]
    stability_column, correlation_column, margin_column = st.columns(3)
    stability_column.metric("Stability", f"{figure['stability']:.0%}",
                            help="Share of bootstrap resamples of the probe images that give this unit the same label.")
    correlation = figure["correlation"]
    correlation_column.metric(
        "Correlation", "n/a" if pd.isna(correlation) else f"{correlation:.3f}",
        help=f"Correlation on held-out images between the unit's activation and whether each image "
             f"{'carries the label' if run.labelled else 'matches the label (CLIP similarity)'} "
             "(the label chosen on the other images).")
    if not pd.isna(correlation):
        correlation_column.caption(f"95 % interval {figure['correlation_low']:.3f} to {figure['correlation_high']:.3f}")
    margin_column.metric("Margin", f"{figure['margin']:.4g}",
                         help=f"Score gap between the top two concepts. {unit_evidence.MARGIN_RULE}")
    margin_column.caption(margin_note(figure, unit_evidence.unit_close_margin(run, layer, unit), run.labelled))
    points = run.quality_points(layer)
    # Below the figures at full width: beside them, at 900 px, its title and axis were cut.
    if figure["heldout_label"] != concept:
        st.caption(f"Chosen on half the probe images the label is {dissect_app.md(figure['heldout_label'])}; "
                   "the correlation and the scatter score that label.")
    if points is not None and unit < points[1].shape[1]:
        scatter = pd.DataFrame({"activation": points[1][:, unit].astype(float),
                                "similarity": points[2][:, unit].astype(float)})
        dissect_app.show_chart(charts.quality_scatter_chart(scatter, run.match_name(figure["heldout_label"])),
                               key="unit_scatter", file_name=f"{model}_{layer}_{unit}_scatter")

if run.labelled:
    counts = unit_evidence.top_label_counts(run, layer, unit, dissect_app.image_names(run))
    if counts is None:
        st.caption("Its top images' labels are not counted: the run lists no top images, or its probe's labels "
                   "come from a labels CSV rather than class folders.")
    elif counts.counts.empty:
        st.caption("Its top images' labels cannot be counted here: the images' names are not stored with this "
                   "run and its probe images are not on this machine.")
    else:
        label_counts_column, label_counts_words = st.columns([2, 1])
        with label_counts_column:
            dissect_app.show_chart(charts.label_counts_chart(counts.counts, concept,
                                                             f"Labels of its top {counts.counted} images"),
                                   key="unit_label_counts", file_name=f"{model}_{layer}_{unit}_label_counts")
        label_counts_words.markdown("\n\n".join(label_counts_note(counts, run.similarity_fn)))

THUMBNAIL_PX = 128  # each image at a fixed width, as many to a row as fit: 3 at 900 px, 7 at 1400 px

# Stacked, each at full width: beside the images, at 900 px, the table lost its columns
# and the images shrank to 50 px.
st.markdown("**Top concepts**")
dissect_app.show_table(run.unit_top_concepts(layer, unit), key="unit_concepts_csv",
                       file_name=f"{model}_{layer}_{unit}_concepts",
                       column_config={"rank": st.column_config.NumberColumn("Rank", width="small"),
                                      "concept": st.column_config.TextColumn("Concept", width="medium"),
                                      "score": st.column_config.NumberColumn("Score", format="%.4f",
                                                                             width="small")})

gallery = dissect_app.unit_gallery(run, layer, unit, count)
if gallery.no_images:
    st.info(f"No images for this run. {dissect_app.message(gallery.no_images)}", icon=":material/hide_image:")
else:
    tabs = {"Heatmaps": "heatmap", "Masks (top 0.5 %)": "mask", "Images": "image"}
    if gallery.no_maps:
        st.warning(f"Showing the images without activation maps. {dissect_app.message(gallery.no_maps)}")
        tabs = {"Images": "image"}
    elif gallery.views and gallery.views[0]["heatmap"] is None:
        st.info(f"Layer {dissect_app.md(layer)} has no spatial map to draw (one value per image, or patch "
                "tokens that form no square grid).")
        tabs = {"Images": "image"}
    if len(gallery.views) < count:
        st.caption(f"{len(gallery.views)} images are available for this unit: a dissection stores the "
                   "activation maps of each unit's top images (10 by default, more with --top_maps).")
    for tab, field in zip(st.tabs(list(tabs)), tabs.values()):
        with tab, st.container(horizontal=True, wrap=True):
            for view in gallery.views:
                st.image(view[field], width=THUMBNAIL_PX,
                         caption=dissect_app.breakable(f"{view['activation']:.3f} · {view['label']}"))
    if "heatmap" in tabs.values():  # said only where heatmaps and masks are shown
        st.caption("Heatmap: the unit's activation map upsampled over the image (bright = strong). "
                   "Mask: the region above the unit's top-0.5 % activation level over the probe set "
                   "(the Network Dissection view).")

st.subheader(f"Most interpretable units of {dissect_app.md(layer)}")
ranked = analysis.rank_units(run.descriptions, layer)
if run.label_quality is not None and layer in set(run.label_quality["layer"]):
    in_layer = run.label_quality[run.label_quality["layer"] == layer]
    # Labels have no text to compare: no near-synonyms in a labelled run.
    figure_columns = ["unit", "stability", "correlation", "margin"] + ([] if run.labelled else ["near_synonym"])
    ranked = ranked.merge(in_layer[figure_columns], on="unit", how="left")
    stability_filter, correlation_filter, sort_column = st.columns(3)
    min_stability = stability_filter.slider("Minimum stability", 0.0, 1.0, 0.0, 0.05, key="unit_min_stability")
    min_correlation = correlation_filter.slider("Minimum correlation", -1.0, 1.0, -1.0, 0.05,
                                                key="unit_min_correlation")
    sort_by = sort_column.selectbox(
        "Sort by", ["similarity", "stability", "correlation", "margin"], key="unit_sort_by",
        format_func=lambda column: (run.score_name or column) if column == "similarity" else column)
    keep = (ranked["stability"] >= min_stability) & (ranked["correlation"].fillna(-1.0) >= min_correlation)
    ranked = ranked[keep].sort_values([sort_by, "unit"], ascending=[False, True], na_position="last",
                                      kind="stable")
    st.caption(f"{len(ranked)} of {len(in_layer)} units pass the filters.")
ranked["open"] = [dissect_app.unit_link_url(model, layer, u) for u in ranked["unit"]]
dissect_app.show_table(ranked, key="unit_ranking_csv", file_name=f"{model}_{layer}_ranking", height=320,
                  # The unit pinned: at 900 px the figures scroll beside it.
                  column_config={"unit": st.column_config.NumberColumn("Unit", pinned=True),
                                 "similarity": st.column_config.NumberColumn((run.score_name or "similarity").capitalize(), format="%.4f",
                                                                             width="small"),
                                 "stability": st.column_config.NumberColumn("Stability", format="percent",
                                                                            width="small"),
                                 "correlation": st.column_config.NumberColumn("Correlation", format="%.3f",
                                                                              width="small"),
                                 "margin": st.column_config.NumberColumn("Margin", format="%.4g", width="small"),
                                 "open": st.column_config.LinkColumn("Open", display_text="open ↗",
                                                                     width="small")})

"""Summaries and model-to-model comparisons of CLIP-Dissect descriptions.

Every function takes descriptions frames as returned by
``dissect_core.runs.formats.read_descriptions`` (columns ``layer``, ``unit``,
``description``, ``similarity``) and returns plain values or small frames, so the
app, the CLI and notebooks share one implementation. Layers always come out in
file order (the order in which they were dissected), never alphabetically.
In the output frames a unit's label is called ``concept``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

import pandas as pd

from dissect_core.common.errors import InvalidInputError
from dissect_core.runs.formats import layer_order

WHERE_ORDER = ("both", "only A", "only B")

SUMMARY_COLUMNS = (
    "layer", "units", "distinct_concepts", "top_concept", "top_concept_units",
    "mean_similarity", "median_similarity", "q1_similarity", "q3_similarity",
    "min_similarity", "max_similarity",
)


def filter_layers(df: pd.DataFrame, layers: Optional[Iterable[str]]) -> pd.DataFrame:
    """The rows of ``layers`` (all rows when ``layers`` is None), file order kept."""
    if layers is None:
        return df
    return df[df["layer"].isin(list(layers))]


@dataclass(frozen=True)
class ConceptCounts:
    """Distinct descriptions per layer (file order) and across all layers.

    The overall count is a field of its own, so no layer name (not even
    ``"overall"``) can collide with it.
    """

    per_layer: dict[str, int]
    overall: int


def unique_concept_counts(df: pd.DataFrame) -> ConceptCounts:
    """Distinct descriptions per layer and overall; a concept found in two layers counts once overall."""
    per_layer = df.groupby("layer", sort=False)["description"].nunique()
    return ConceptCounts(
        per_layer={layer: int(per_layer[layer]) for layer in layer_order(df)},
        overall=int(df["description"].nunique()),
    )


def _top_concept(descriptions: pd.Series) -> tuple[str, int]:
    """The concept most units share; ties go to the alphabetically first, for stable output."""
    counts = descriptions.value_counts()
    top_units = int(counts.iloc[0])
    return min(counts.index[counts == top_units]), top_units


def layer_summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per layer: units, distinct concepts, most shared concept, similarity statistics.

    Columns are ``SUMMARY_COLUMNS``; the quartiles feed the similarity box plot.
    """
    rows = []
    for layer, group in df.groupby("layer", sort=False):
        top, top_units = _top_concept(group["description"])
        similarity = group["similarity"]
        rows.append({
            "layer": layer,
            "units": len(group),
            "distinct_concepts": group["description"].nunique(),
            "top_concept": top,
            "top_concept_units": top_units,
            "mean_similarity": similarity.mean(),
            "median_similarity": similarity.median(),
            "q1_similarity": similarity.quantile(0.25),
            "q3_similarity": similarity.quantile(0.75),
            "min_similarity": similarity.min(),
            "max_similarity": similarity.max(),
        })
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def summarize_models(frames: Mapping[str, pd.DataFrame], layers: Optional[Iterable[str]] = None) -> pd.DataFrame:
    """``layer_summary`` of several models stacked, with a leading ``model`` column.

    ``layers`` restricts every model to those layers; a model lacking a layer simply
    has no row for it.
    """
    layers = None if layers is None else list(layers)
    parts = []
    for model, df in frames.items():
        summary = layer_summary(filter_layers(df, layers))
        summary.insert(0, "model", model)
        parts.append(summary)
    if not parts:
        return pd.DataFrame(columns=["model", *SUMMARY_COLUMNS])
    return pd.concat(parts, ignore_index=True)


def _ordered(frame: pd.DataFrame, layers: list[str], by: list[str], ascending: list[bool]) -> pd.DataFrame:
    """Sort by layer in file order, then by ``by``."""
    rank = frame["layer"].map({layer: i for i, layer in enumerate(layers)})
    return (
        frame.assign(_layer_rank=rank)
        .sort_values(["_layer_rank", *by], ascending=[True, *ascending], kind="stable")
        .drop(columns="_layer_rank")
        .reset_index(drop=True)
    )


def shared_concepts(df: pd.DataFrame, min_units: int) -> pd.DataFrame:
    """Concepts that label at least ``min_units`` units of a layer.

    Columns ``layer, concept, n_units, units`` (``units``: sorted list of unit
    indices); layers in file order, then by ``n_units`` descending, then concept.
    """
    sizes = df.groupby(["layer", "description"], sort=False).size()
    kept = sizes[sizes >= min_units]
    if kept.empty:
        return pd.DataFrame({"layer": [], "concept": [], "n_units": [], "units": []}).astype(
            {"layer": str, "concept": str, "n_units": "int64", "units": object}
        )
    rows = df.set_index(["layer", "description"]).index.isin(kept.index)
    units = df[rows].groupby(["layer", "description"], sort=False)["unit"].agg(lambda s: sorted(s.tolist()))
    out = pd.DataFrame({"n_units": kept.astype("int64"), "units": units}).reset_index()
    out = out.rename(columns={"description": "concept"})
    return _ordered(out, layer_order(df), ["n_units", "concept"], [False, True])


def compare_layers(df_a: pd.DataFrame, df_b: pd.DataFrame) -> tuple[list[str], list[str], list[str]]:
    """(layers in both, layers only in A, layers only in B), each in file order (A's first)."""
    layers_a, layers_b = layer_order(df_a), layer_order(df_b)
    common = [layer for layer in layers_a if layer in layers_b]
    return (
        common,
        [layer for layer in layers_a if layer not in layers_b],
        [layer for layer in layers_b if layer not in layers_a],
    )


def compare_models(df_a: pd.DataFrame, df_b: pd.DataFrame) -> pd.DataFrame:
    """Per common layer and concept: units in A, units in B, and where the concept occurs.

    Columns ``layer, concept, n_units_a, n_units_b, where`` with ``where`` one of
    ``"both"``, ``"only A"``, ``"only B"``. Layers present in only one model are left
    out (a concept cannot be "only in A" when B has no such layer); ``compare_layers``
    names them. Sorted by layer, then where (both, only A, only B), then total units
    descending, then concept.
    """
    common, _, _ = compare_layers(df_a, df_b)
    count_a = filter_layers(df_a, common).groupby(["layer", "description"]).size().rename("n_units_a")
    count_b = filter_layers(df_b, common).groupby(["layer", "description"]).size().rename("n_units_b")
    merged = pd.concat([count_a, count_b], axis=1).fillna(0).astype("int64").reset_index()
    merged = merged.rename(columns={"description": "concept"})
    in_a, in_b = merged["n_units_a"] > 0, merged["n_units_b"] > 0
    merged["where"] = "both"
    merged.loc[in_a & ~in_b, "where"] = "only A"
    merged.loc[~in_a & in_b, "where"] = "only B"
    merged["_where_rank"] = merged["where"].map({w: i for i, w in enumerate(WHERE_ORDER)})
    merged["_total"] = merged["n_units_a"] + merged["n_units_b"]
    ordered = _ordered(merged, common, ["_where_rank", "_total", "concept"], [True, False, True])
    return ordered.drop(columns=["_where_rank", "_total"])[["layer", "concept", "n_units_a", "n_units_b", "where"]]


def jaccard_by_layer(df_a: pd.DataFrame, df_b: pd.DataFrame) -> pd.DataFrame:
    """Overlap of the distinct concept sets of A and B in each common layer.

    Columns ``layer, distinct_a, distinct_b, shared, jaccard, same_unit_same_concept``;
    the last counts unit indices labelled identically in both models, which is only
    meaningful when A and B share an architecture.
    """
    common, _, _ = compare_layers(df_a, df_b)
    rows = []
    for layer in common:
        part_a = df_a[df_a["layer"] == layer]
        part_b = df_b[df_b["layer"] == layer]
        set_a, set_b = set(part_a["description"]), set(part_b["description"])
        by_unit = part_a.merge(part_b, on="unit", suffixes=("_a", "_b"))
        rows.append({
            "layer": layer,
            "distinct_a": len(set_a),
            "distinct_b": len(set_b),
            "shared": len(set_a & set_b),
            "jaccard": len(set_a & set_b) / len(set_a | set_b),
            "same_unit_same_concept": int((by_unit["description_a"] == by_unit["description_b"]).sum()),
        })
    return pd.DataFrame(
        rows, columns=["layer", "distinct_a", "distinct_b", "shared", "jaccard", "same_unit_same_concept"]
    )


def units_with_concept(df: pd.DataFrame, concept: str) -> pd.DataFrame:
    """The units labelled ``concept``: ``layer, unit, similarity``, by layer then similarity descending."""
    rows = df.loc[df["description"] == concept, ["layer", "unit", "similarity"]]
    return _ordered(rows, layer_order(df), ["similarity", "unit"], [False, True])


def best_unit(units: pd.DataFrame) -> pd.Series:
    """The row of ``units_with_concept`` output with the highest similarity (the first if none is scored)."""
    scored = units["similarity"].notna()
    return units.loc[units.loc[scored, "similarity"].idxmax()] if scored.any() else units.iloc[0]


def rank_units(df: pd.DataFrame, layer: str) -> pd.DataFrame:
    """The units of ``layer``, most interpretable first (highest similarity; NaN last).

    Columns ``rank`` (1-based), ``unit``, ``concept``, ``similarity``.
    """
    rows = df[df["layer"] == layer]
    if rows.empty:
        raise InvalidInputError(
            f"Layer {layer!r} is not in these results (layers: {', '.join(layer_order(df))})."
        )
    ranked = rows.sort_values(["similarity", "unit"], ascending=[False, True], na_position="last", kind="stable")
    ranked = ranked[["unit", "description", "similarity"]].rename(columns={"description": "concept"})
    ranked.insert(0, "rank", range(1, len(ranked) + 1))
    return ranked.reset_index(drop=True)


def only_stable(df: pd.DataFrame, label_quality: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """The rows of units whose label's stability is at least ``threshold`` (file order kept).

    ``label_quality`` is a run's ``label_quality.csv`` (``layer``, ``unit``, ``stability``).
    Layers it has no figures for (left out on loading: ``quality_files.match_descriptions``)
    keep all their units, as runs without figures do: their stability is unknown, not low.
    """
    stable = label_quality.loc[label_quality["stability"] >= threshold, ["layer", "unit"]]
    keys = pd.MultiIndex.from_frame(stable)
    unknown = ~df["layer"].isin(set(label_quality["layer"]))
    return df[pd.MultiIndex.from_frame(df[["layer", "unit"]]).isin(keys) | unknown.to_numpy()]

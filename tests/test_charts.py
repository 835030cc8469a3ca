"""dissect_core.charts: chart specs built from analysis frames, and offline PNG/SVG export."""
from __future__ import annotations

import pandas as pd
import pytest

from dissect_core import analysis, charts


def frame(rows: list[tuple[str, int, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["layer", "unit", "description", "similarity"])


A = frame([("layer4", 0, "dog", 0.5), ("layer4", 1, "dog", 0.4), ("layer2", 0, "dotted", 0.2),
           ("layer2", 1, "stripe", 0.1)])
B = frame([("layer4", 0, "cat", 0.6), ("layer4", 1, "dog", 0.3), ("layer2", 0, "dotted", 0.3),
           ("layer2", 1, "dotted", 0.2)])
HOSTILE = "<img src=x onerror=alert(1)>"


def data_of(chart) -> list[dict]:
    """The rows of a chart's (single) inline dataset."""
    spec = chart.to_dict()
    (rows,) = spec["datasets"].values()
    return rows


def layers_of(spec: dict) -> list[dict]:
    return spec.get("layer", [spec])


def test_distinct_concepts_chart_groups_models_per_layer_in_file_order() -> None:
    summary = analysis.summarize_models({"A": A, "B": B})
    chart = charts.distinct_concepts_chart(summary)
    spec = chart.to_dict()
    bars = layers_of(spec)[0]
    assert bars["mark"]["type"] == "bar"
    assert bars["encoding"]["xOffset"]["field"] == "model"
    assert bars["encoding"]["x"]["sort"] == ["layer4", "layer2"]
    rows = {(r["model"], r["layer"]): r["distinct_concepts"] for r in data_of(chart)}
    assert rows == {("A", "layer4"): 1, ("A", "layer2"): 2, ("B", "layer4"): 2, ("B", "layer2"): 1}


def test_similarity_chart_draws_box_median_mean_whiskers() -> None:
    summary = analysis.summarize_models({"A": A, "B": B})
    chart = charts.similarity_chart(summary)
    marks = [layer["mark"]["type"] for layer in layers_of(chart.to_dict())]
    assert marks == ["rule", "bar", "tick", "point"]
    row = next(r for r in data_of(chart) if r["model"] == "B" and r["layer"] == "layer4")
    assert (row["min_similarity"], row["max_similarity"]) == (0.3, 0.6)
    assert row["mean_similarity"] == pytest.approx(0.45)


def test_shared_concepts_chart_sorts_limits_and_fixes_axis() -> None:
    shared = pd.DataFrame({"concept": [f"c{i}" for i in range(40)], "n_units": list(range(40, 0, -1)),
                           "units": [[i] for i in range(40)]})
    chart = charts.shared_concepts_chart(shared, "model A", top=5, x_max=50)
    spec = chart.to_dict()
    assert spec["encoding"]["y"]["sort"] == "-x"
    assert spec["encoding"]["x"]["scale"]["domain"] == [0, 50]
    assert spec["title"] == "model A"
    rows = data_of(chart)
    assert [r["concept"] for r in rows] == ["c0", "c1", "c2", "c3", "c4"]
    assert rows[0]["units"] == "0"


def test_jaccard_chart_data() -> None:
    chart = charts.jaccard_chart(analysis.jaccard_by_layer(A, B))
    rows = data_of(chart)
    assert [(r["layer"], r["jaccard"]) for r in rows] == [("layer4", 0.5), ("layer2", 0.5)]
    assert layers_of(chart.to_dict())[0]["encoding"]["y"]["scale"]["domain"] == [0, 1]


def test_diff_chart_puts_a_left_and_b_right() -> None:
    comparison = analysis.compare_models(A, B)
    chart = charts.diff_chart(comparison[comparison["layer"] == "layer4"], "A", "B")
    rows = {(r["concept"], r["model"]): r["signed_units"] for r in data_of(chart)}
    assert rows == {("dog", "A"): -2, ("dog", "B"): 1, ("cat", "A"): 0, ("cat", "B"): 1}


def test_concept_names_are_chart_data_and_exported_as_escaped_text() -> None:
    shared = pd.DataFrame({"concept": [HOSTILE, "**bold**"], "n_units": [3, 2], "units": [[0, 1, 2], [3, 4]]})
    chart = charts.shared_concepts_chart(shared, "[link](x)")
    assert {r["concept"] for r in data_of(chart)} == {HOSTILE, "**bold**"}
    svg = charts.chart_to_svg(chart)
    assert svg.lstrip().startswith("<svg")
    assert "&lt;img src=x onerror=alert(1)&gt;" in svg
    assert "<img" not in svg
    assert "**bold**" in svg and "[link](x)" in svg


def test_chart_to_png_renders_offline() -> None:
    png = charts.chart_to_png(charts.jaccard_chart(analysis.jaccard_by_layer(A, B)), scale=1)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 1000

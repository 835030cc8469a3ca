"""dissect_app.charts: chart specs built from analysis frames, and offline PNG/SVG export."""
from __future__ import annotations

import pandas as pd
import pytest

from dissect_core.runs import analysis
from dissect_app import charts


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
    assert bars["encoding"]["yOffset"]["field"] == "model"
    assert bars["encoding"]["y"]["sort"] == ["layer4", "layer2"]
    rows = {(r["model"], r["layer"]): r["distinct_concepts"] for r in data_of(chart)}
    assert rows == {("A", "layer4"): 1, ("A", "layer2"): 2, ("B", "layer4"): 2, ("B", "layer2"): 1}


def test_per_layer_charts_grow_in_height_with_models_and_leave_room_for_value_labels() -> None:
    summary = analysis.summarize_models({"A": A, "B": B})
    for chart in (charts.distinct_concepts_chart(summary), charts.similarity_chart(summary)):
        assert chart.to_dict()["height"] == {"step": charts.MODEL_STEP, "for": "offset"}
    # The value axis runs past the largest count (2), so the label right of its bar fits.
    bars, labels = layers_of(charts.distinct_concepts_chart(summary).to_dict())
    assert bars["encoding"]["x"]["scale"]["domain"] == [0, pytest.approx(2 * (1 + charts.VALUE_LABEL_ROOM))]
    assert labels["mark"]["type"] == "text" and labels["mark"]["align"] == "left"


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
    assert spec["title"]["text"] == ["model A"]
    rows = data_of(chart)
    assert [r["concept"] for r in rows] == ["c0", "c1", "c2", "c3", "c4"]
    assert rows[0]["units"] == "0"


def test_shared_concepts_chart_wraps_a_long_title_over_lines() -> None:
    shared = pd.DataFrame({"concept": ["dog"], "n_units": [3], "units": [[0, 1, 2]]})
    name = "convnext_tiny · features.1.0–features.7.2 · broden · 20k (my fine-tuned copy)"
    lines = charts.shared_concepts_chart(shared, name).to_dict()["title"]["text"]
    assert len(lines) > 1 and all(len(line) <= charts.TITLE_LINE_CHARS for line in lines)
    assert " ".join(lines) == name


def test_jaccard_chart_data() -> None:
    chart = charts.jaccard_chart(analysis.jaccard_by_layer(A, B))
    rows = data_of(chart)
    assert [(r["layer"], r["jaccard"]) for r in rows] == [("layer4", 0.5), ("layer2", 0.5)]
    x = layers_of(chart.to_dict())[0]["encoding"]["x"]
    assert x["scale"]["domain"] == [0, pytest.approx(1 + charts.VALUE_LABEL_ROOM)]  # room for a label at 1
    assert x["axis"]["values"][-1] == 1


def test_diff_chart_puts_a_left_and_b_right() -> None:
    comparison = analysis.compare_models(A, B)
    chart = charts.diff_chart(comparison[comparison["layer"] == "layer4"], "A", "B")
    rows = {(r["concept"], r["model"]): r["signed_units"] for r in data_of(chart)}
    assert rows == {("dog", "A"): -2, ("dog", "B"): 1, ("cat", "A"): 0, ("cat", "B"): 1}


def test_concept_names_are_chart_data_and_exported_as_escaped_text() -> None:
    shared = pd.DataFrame({"concept": [HOSTILE, "**bold**"], "n_units": [3, 2], "units": [[0, 1, 2], [3, 4]]})
    chart = charts.shared_concepts_chart(shared, "[link](x)")
    assert {r["concept"] for r in data_of(chart)} == {HOSTILE, "**bold**"}
    assert chart.to_dict()["title"]["text"] == ["[link](x)"]
    svg = charts.chart_to_svg(chart)
    assert svg.lstrip().startswith("<svg")
    assert "&lt;img src=x onerror=alert(1)&gt;" in svg
    assert "<img" not in svg
    assert "**bold**" in svg and "[link](x)" in svg


def test_chart_to_png_renders_offline() -> None:
    png = charts.chart_to_png(charts.jaccard_chart(analysis.jaccard_by_layer(A, B)), scale=1)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 1000

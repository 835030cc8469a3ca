"""Values from links and files validated into range, bounded page work, safe CSV downloads,
and the pages' readability fixes (every concept name on the charts, eight models)."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import dissect_app
from dissect_app import charts
from dissect_core.runs.run import MAX_RUN_NAME_CHARS
from tests.test_app_pages import (  # noqa: F401  (results: the autouse --results folder)
    APP, DIFFERENCES, IMAGENET, IMAGENET_ROWS, PLACES, PLACES_ROWS, SHARED, descriptions_csv, open_app, rerun,
    results, table, upload,
)

EXPLORER = dissect_app.UNIT_EXPLORER_PAGE


def explorer_with_link(**params: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update(params)
    at.run()
    at.switch_page(EXPLORER).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


# --------------------------------------------------------------------------- deep links

@pytest.mark.parametrize("unit_text", ["٣", "1e30", "9" * 30, "-1", "3 ", "1_0"])
def test_a_unit_that_is_not_plain_ascii_digits_is_refused(unit_text: str) -> None:
    link = dissect_app.parse_unit_link({"model": "m", "layer": "l", "unit": unit_text})
    assert link.unit is None and "is not a whole number" in link.problems[0]


@pytest.mark.parametrize("params, said, shown", [
    ({"model": "nope", "layer": "layer2", "unit": "1"}, "no model named 'nope' is loaded", f"Showing {IMAGENET}"),
    ({"model": IMAGENET, "layer": "layer9", "unit": "1"}, "has no layer 'layer9'", "layer layer2, unit"),
    ({"model": IMAGENET, "layer": "layer2", "unit": "99"}, "layer 'layer2' has no unit 99 (units 0 to 7)",
     "layer layer2, unit 0"),
    ({"model": IMAGENET, "layer": "layer2", "unit": "٣"}, "is not a whole number", "unit 0"),
])
def test_a_bad_deep_link_says_what_was_wrong_and_what_is_shown(params, said, shown) -> None:
    at = explorer_with_link(**params)
    (warning,) = [w.value.replace("\\", "") for w in at.warning if "link" in w.value]
    assert said in warning and shown in warning
    assert at.query_params["model"] in (IMAGENET, PLACES)  # the URL now names what is shown
    rerun(at)
    assert not [w for w in at.warning if "link" in w.value]  # said once, not on every rerun


def test_a_good_deep_link_opens_the_unit_without_a_warning() -> None:
    at = explorer_with_link(model=PLACES, layer="layer3", unit="4")
    assert not at.warning
    assert at.subheader[0].value.startswith("layer3 · unit 4")


# --------------------------------------------------------------------------- bounded pages

def test_a_run_over_the_layer_limit_is_refused_with_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dissect_app.sources, "MAX_LAYERS", 2)
    at = open_app()
    upload(at, ("wide.csv", descriptions_csv(IMAGENET_ROWS + [("layer4", "x", [0])]).encode()))
    assert "it has 3 layers; the app shows runs with at most 2 layers" in at.sidebar.error[0].value.replace("\\", "")
    assert not any("uploaded" in option for option in at.sidebar.multiselect(key="models").options)


def test_unit_numbers_out_of_range_are_refused() -> None:
    at = open_app()
    upload(at, ("huge.csv", b"layer,unit,description,similarity\nlayer2,0,a,0.1\nlayer2,5000000,b,0.2\n"))
    assert "unit numbers must lie between 0 and 1,000,000" in at.sidebar.error[0].value.replace("\\", "")


def test_a_layer_named_overall_is_counted_like_any_other() -> None:
    at = open_app()
    upload(at, ("odd.csv", descriptions_csv([("overall", "dog", [0, 1]), ("layer4", "cat", [0])]).encode()))
    assert not at.error
    rerun(at.sidebar.multiselect(key="models").set_value(["odd.csv · overall, layer4 · 3 units · uploaded"]))
    assert [(m.label, m.value) for m in at.metric] == [("Units", "3"), ("Distinct concepts overall", "2")]


# --------------------------------------------------------------------------- downloads

def test_csv_downloads_neutralise_formula_cells() -> None:
    frame = pd.DataFrame({"concept": ["=cmd|' /C calc'!A0", "+1", "-s", "@SUM(A1)", "\tx", "\rx", "dog"],
                          "similarity": [-0.5, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]})
    safe = dissect_app.spreadsheet_safe(frame)
    assert safe["concept"].tolist() == ["'=cmd|' /C calc'!A0", "'+1", "'-s", "'@SUM(A1)", "'\tx", "'\rx", "dog"]
    assert safe["similarity"].tolist() == frame["similarity"].tolist()  # numbers untouched
    assert frame["concept"][0].startswith("=")  # the shown table is not changed


# --------------------------------------------------------------------------- readable pages

def vega_specs(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("vega_lite_chart")]


def test_every_concept_name_is_drawn_on_the_bar_charts() -> None:
    at = open_app(SHARED)
    rerun(at.slider(key="min_units").set_value(1))
    shared = [spec for spec in vega_specs(at) if spec.get("encoding", {}).get("y", {}).get("field") == "concept"]
    assert shared and all(spec["encoding"]["y"]["axis"]["labelOverlap"] is False for spec in shared)
    at = open_app(DIFFERENCES)
    butterfly = [spec for spec in vega_specs(at) if spec.get("encoding", {}).get("y", {}).get("field") == "concept"]
    assert butterfly and all(spec["encoding"]["y"]["axis"]["labelOverlap"] is False for spec in butterfly)
    # Rendered offline, the chart holds every name as text.
    rows = pd.DataFrame({"concept": [f"concept number {i}" for i in range(12)], "n_units": range(12, 0, -1),
                         "units": [[i] for i in range(12)]})
    svg = charts.chart_to_svg(charts.shared_concepts_chart(rows, "model"))
    assert all(f"concept number {i}<" in svg for i in range(12))


def test_overview_with_eight_models() -> None:
    at = open_app()
    for i in range(6):
        upload(at, (f"model_{i}.csv", descriptions_csv(IMAGENET_ROWS[:i + 2]).encode()))
    picked = at.sidebar.multiselect(key="models").value
    assert len(picked) == 8
    assert len(at.metric) == 16  # two numbers on each model's card
    assert {row[0] for row in table(at, 0)} == set(picked)
    heights = [spec.get("height") for spec in vega_specs(at)]
    # Distinct concepts and similarity per layer a bar's height per model, then the category mix.
    assert heights[:2] == [{"step": charts.MODEL_STEP, "for": "offset"}] * 2 and len(heights) == 3


# --------------------------------------------------------------------------- renaming

def rename(at: AppTest, old: str, new: str) -> AppTest:
    at.sidebar.selectbox(key="rename_model").set_value(old)
    at.sidebar.text_input(key="rename_name").set_value(new)
    (submit,) = [button for button in at.sidebar.button if button.label == "Rename"]
    return rerun(submit.click())


def test_a_renamed_run_keeps_its_name_and_stays_picked(tmp_path) -> None:
    at = open_app()
    rename(at, IMAGENET, "  ImageNet   baseline ")
    picker = at.sidebar.multiselect(key="models")
    assert "ImageNet baseline" in picker.options and IMAGENET not in picker.options
    assert picker.value == ["ImageNet baseline", PLACES]
    names = json.loads((dissect_app.results_dir() / "names.json").read_text())
    assert list(names.values()) == ["ImageNet baseline"]
    assert "ImageNet baseline" in open_app().sidebar.multiselect(key="models").options  # a new session too


def test_uploads_of_one_file_name_are_told_apart_by_their_content() -> None:
    """Two different descriptions.csv: names say layers and units, then what else differs."""
    at = open_app()
    upload(at, ("descriptions.csv", descriptions_csv(IMAGENET_ROWS).encode()))
    upload(at, ("descriptions.csv", descriptions_csv(PLACES_ROWS).encode()))
    # Same layers and units as the first, other labels: only the labels' digest tells them apart.
    relabelled = [(layer, concept.upper(), units) for layer, concept, units in IMAGENET_ROWS]
    upload(at, ("descriptions.csv", descriptions_csv(relabelled).encode()))
    assert not at.error
    uploads = [o for o in at.sidebar.multiselect(key="models").options if o.startswith("descriptions.csv")]
    assert len(uploads) == len(set(uploads)) == 3
    first, places, second = uploads
    assert places == "descriptions.csv · layer2–layer4 · 18 units · uploaded"
    assert first.startswith("descriptions.csv · layer2, layer3 · 14 units · uploaded · labels ")
    assert second.startswith("descriptions.csv · layer2, layer3 · 14 units · uploaded · labels ")
    assert "#" not in first + second  # a digest of the labels, not an ordinal
    assert set(uploads) <= set(at.sidebar.multiselect(key="models").value)  # each joined the choice

    rename(at, second, "upper-case copy")
    rerun(at.switch_page(SHARED))
    picker = at.sidebar.multiselect(key="models")
    assert "upper-case copy" in picker.options and second not in picker.options
    # No longer sharing its name, the first upload drops the digest and stays picked.
    short = "descriptions.csv · layer2, layer3 · 14 units · uploaded"
    assert {"upper-case copy", short, places} <= set(picker.value) and first not in picker.options


def test_a_name_that_is_empty_or_taken_is_refused() -> None:
    at = open_app()
    rename(at, IMAGENET, "   ")
    assert f"1 to {MAX_RUN_NAME_CHARS} characters" in at.sidebar.error[0].value
    rename(at, IMAGENET, PLACES)
    assert "already called" in at.sidebar.error[0].value
    assert IMAGENET in at.sidebar.multiselect(key="models").options

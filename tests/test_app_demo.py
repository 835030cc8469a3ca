"""AppTest: a fresh app with no results shows the built-in demo on every page, with its numbers."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import dissect_app
from dissect_core.runs import analysis
from dissect_core.runs.demo_runs import demo_runs
from dissect_core.runs.run_folders import load_run
from tests.test_app_pages import open_app


@pytest.fixture(autouse=True)
def nothing_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["streamlit_app.py"])
    monkeypatch.setenv(dissect_app.RESULTS_ENV, str(tmp_path / "no_runs_yet"))
    monkeypatch.setenv(dissect_app.CACHE_ENV, str(tmp_path / "cache"))  # the Run page lists the probe's labels
    st.cache_data.clear()


@pytest.fixture(scope="module")
def demo():
    return [load_run(folder) for folder in demo_runs()]


def shows_demo_banner(at: AppTest) -> bool:
    return any(info.value.startswith("**Demo.**") for info in at.info)


def test_overview_shows_the_demo_with_its_counts(demo):
    at = open_app()
    trained, untrained = demo
    assert at.sidebar.multiselect(key="models").value == [trained.label, untrained.label]
    assert shows_demo_banner(at)
    units = [len(run.descriptions) for run in demo]
    overall = [run.descriptions["description"].nunique() for run in demo]
    assert [(m.label, m.value) for m in at.metric] == [
        ("Units", str(units[0])), ("Distinct concepts overall", str(overall[0])),
        ("Units", str(units[1])), ("Distinct concepts overall", str(overall[1])),
    ]
    counts = at.dataframe[0].value
    assert counts[["model", "layer"]].values.tolist() == [
        [run.label, layer] for run in demo for layer in run.layers]


def test_overview_shows_the_demos_label_quality_and_output_check(demo):
    at = open_app()
    quality = next(frame.value for frame in at.dataframe if "stable_share" in frame.value.columns)
    assert quality[["model", "layer"]].values.tolist() == [[run.label, layer] for run in demo for layer in run.layers]
    expected = [share for run in demo for share in run.layer_quality["stable_share"]]
    assert quality["stable_share"].tolist() == pytest.approx(expected)
    checks = next(frame.value for frame in at.dataframe if "top1" in frame.value.columns)
    assert checks[["layer", "top1"]].values.tolist() == [
        [check["layer"], check["top1"]] for run in demo for check in run.manifest.output_check]
    # Unit i of the trained classifier carries class i; the untrained one's do not (chance is 1 in 10).
    (trained_top1, untrained_top1) = checks["top1"].tolist()
    assert trained_top1 == 1.0 and untrained_top1 <= 0.2
    assert not [c for c in at.caption if "no label-quality figures" in c.value]


def test_unit_explorer_shows_the_demos_unit_figures():
    at = open_app(dissect_app.UNIT_EXPLORER_PAGE)
    assert {"Stability", "Correlation"} <= {metric.label for metric in at.metric}
    assert not [info for info in at.info if info.value.startswith("No label-quality figures")]


def test_shared_concepts_shows_the_demo(demo):
    at = open_app(dissect_app.SHARED_CONCEPTS_PAGE)
    assert shows_demo_banner(at)
    assert [h.value for h in at.subheader] == [f"Layer {layer}" for layer in demo[0].layers]
    min_units = at.slider[0].value
    expected = sorted((run.label, row.concept, row.n_units) for run in demo
                      for row in analysis.shared_concepts(run.descriptions, min_units).itertuples())
    shown = [row for frame in at.dataframe for row in zip(frame.value["model"], frame.value["concept"],
                                                         frame.value["n_units"])]
    assert expected and sorted(shown) == expected


def test_model_differences_shows_the_demo(demo):
    at = open_app(dissect_app.MODEL_DIFFERENCES_PAGE)
    assert shows_demo_banner(at)
    expected = analysis.jaccard_by_layer(demo[0].descriptions, demo[1].descriptions)
    shown = at.dataframe[0].value
    assert shown["jaccard"].round(6).tolist() == expected["jaccard"].round(6).tolist()
    assert len(shown) == len(demo[0].layers)


def test_unit_explorer_shows_demo_heatmaps_and_masks(demo):
    at = open_app(dissect_app.UNIT_EXPLORER_PAGE)
    assert shows_demo_banner(at)
    trained = demo[0]
    expected = trained.units("conv1")["description"].iloc[0]
    assert at.subheader[0].value == f"conv1 · unit 0: {expected}"
    assert [tab.label for tab in at.tabs] == ["Heatmaps", "Masks (top 0.5 %)", "Images"]
    assert len(at.tabs[0].get("image")) == 10 and len(at.tabs[1].get("image")) == 10


def test_unit_explorer_shows_a_training_sweep_runs_shared_thumbnails_and_says_why_no_maps():
    from dissect_core.runs.demo_runs import demo_sweep_runs

    step = load_run(demo_sweep_runs()[4])
    at = AppTest.from_file(dissect_app.ENTRY_SCRIPT, default_timeout=60)
    at.query_params.update({"model": step.label, "layer": "conv2", "unit": "1"})
    at.switch_page(dissect_app.UNIT_EXPLORER_PAGE).run()
    assert not at.exception
    assert [tab.label for tab in at.tabs] == ["Images"] and len(at.tabs[0].get("image")) == 10
    assert "keep no activation maps" in at.warning[0].value
    assert not any(caption.value.startswith("Heatmap:") for caption in at.caption)


def test_the_demo_can_be_put_away_and_brought_back(demo):
    at = open_app()
    at.button(key="demo_hide").click().run()
    assert not shows_demo_banner(at)
    assert at.info[0].value == "No CLIP-Dissect results are loaded yet."
    assert at.sidebar.multiselect(key="models").options == []
    # Where runs are saved, as it is (a code span shows no markdown escapes: no "\_" in the path).
    assert any(f"`{dissect_app.results_dir()}`" in text.value for text in at.markdown)
    at.switch_page(dissect_app.SHARED_CONCEPTS_PAGE).run()  # stays away on the other pages
    assert not shows_demo_banner(at)
    at.button(key="demo_show").click().run()
    assert shows_demo_banner(at)
    # Back with its two networks picked, as at the start (not an empty choice).
    assert at.sidebar.multiselect(key="models").value == [run.label for run in demo]


def test_the_demo_gives_way_to_loaded_results(tmp_path, monkeypatch):
    results = tmp_path / "mine" / "run"
    results.mkdir(parents=True)
    (results / "descriptions.csv").write_text("layer,unit,description,similarity\nlayer2,0,red,0.2\n")
    monkeypatch.setattr(sys, "argv", ["streamlit_app.py", "--results", str(tmp_path / "mine")])
    at = open_app()
    assert not shows_demo_banner(at)
    assert at.sidebar.multiselect(key="models").options == ["run · layer2 · 1 unit"]


def test_run_page_offers_the_demo_for_labels_and_formulas(demo):
    at = open_app(dissect_app.RUN_PAGE)
    from dissect_core.runs.demo_runs import demo_sweep_runs

    sweep = [load_run(folder).label for folder in demo_sweep_runs()]
    assert at.selectbox(key="redescribe_run").options == [run.label for run in demo] + sweep
    # Formulas over its labels, typed or uploaded: no CLIP concept sets.
    assert "redescribe_concept_choice" not in [box.key for box in at.selectbox]
    assert at.radio(key="formulas_source").options == ["type them here", "upload a .txt list"]


def test_sweep_page_follows_the_demos_training(demo):
    from dissect_core.runs.demo_runs import DEMO_DIR, SWEEP_DIR, demo_info, demo_sweep_runs

    steps = demo_info()["checkpoint_steps"]
    assert len(steps) >= 8 and steps[0] == 0  # issue 15: at least 8 points from the initial weights on
    at = open_app(dissect_app.SWEEP_PAGE)
    assert shows_demo_banner(at) and not at.exception
    picker = at.sidebar.selectbox(key="sweep_folder")
    assert Path(picker.value).resolve() == (DEMO_DIR / SWEEP_DIR).resolve()
    assert picker.options[0] == "the built-in demo's training"
    assert f"{len(steps)} runs, in sweep order." in [c.value for c in at.caption]
    assert [h.value for h in at.subheader][:3] == ["How far the labels hold along the sweep",
                                                   "Each unit's label along the sweep", "Distinct concepts by depth"]
    assert at.sidebar.selectbox(key="sweep_layer").value == "fc"  # the classifier's units first
    (table,) = [frame for frame in at.dataframe if "distinct_concepts" in frame.value.columns]
    assert list(table.value["step"]) == steps
    assert list(table.value["model"]) == [load_run(folder).label for folder in demo_sweep_runs()]
    # The sweep ends where the two networks are: the trained net's output check, the untrained one's.
    trained, untrained = demo
    assert table.value["output_top1"].iloc[-1] == trained.manifest.output_check[-1]["top1"]
    # The comparison pages keep the two networks as the default pair.
    assert at.sidebar.multiselect(key="models").value == [trained.label, untrained.label]

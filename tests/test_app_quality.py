"""AppTest of the label-quality views on planted runs (trained and untrained) and an imported CSV."""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
import streamlit as st
import torch
from streamlit.testing.v1 import AppTest

import dissect_app
from dissect_core.engine.pipeline import DescribeConfig, describe
from dissect_core.runs.run_folders import load_run
from planted import make_planted_probe, planted_clip, planted_target, write_concepts

APP = dissect_app.ENTRY_SCRIPT


@pytest.fixture(scope="module")
def planted_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("quality_app")
    make_planted_probe(root / "probe")
    concepts = write_concepts(root / "concepts.txt")
    torch.manual_seed(0)
    untrained = planted_target("untrained-net")
    untrained.module.detect[0].reset_parameters()
    untrained.weights_id = "untrained"
    labels = []
    for target in (planted_target(), untrained):
        run = describe(DescribeConfig(
            target_model=target, target_layers=("detect",), clip_model=planted_clip(), d_probe=str(root / "probe"),
            concept_set=str(concepts), device="cpu", batch_size=64, activation_dir=str(root / "cache"),
            result_dir=str(root / "results"), num_workers=0, quality_resamples=5)).run
        labels.append(run.label)
    imported = root / "imported" / "reference_run"
    imported.mkdir(parents=True)
    (imported / "descriptions.csv").write_text("layer,unit,description,similarity\ndetect,0,red,0.2\n")
    return root, labels


@pytest.fixture
def app(planted_runs, monkeypatch):
    root, _ = planted_runs
    monkeypatch.setattr(sys, "argv", ["streamlit_app.py", "--results", str(root / "imported")])
    monkeypatch.setenv(dissect_app.RESULTS_ENV, str(root / "results"))
    st.cache_data.clear()
    return AppTest.from_file(APP, default_timeout=120)


def select(app: AppTest, labels: list[str]) -> AppTest:
    app.run()
    app.sidebar.multiselect(key="models").set_value(labels).run()
    return app


def test_overview_shows_stable_shares_and_count_intervals(app, planted_runs):
    _, (trained, untrained) = planted_runs
    select(app, [trained, untrained])
    assert not app.exception
    quality = next(frame.value for frame in app.dataframe if "stable_share" in frame.value.columns)
    rows = quality.set_index("model")
    assert rows.loc[trained, "stable_share"] == 1.0
    assert rows.loc[trained, "distinct_concepts"] == "6 [6–6]"
    assert rows.loc[untrained, "mean_correlation"] < rows.loc[trained, "mean_correlation"]
    categories = next(frame.value for frame in app.dataframe if "category" in frame.value.columns)
    assert set(categories.query("model == @trained")["category"]) == {"colour"}


def test_stable_toggle_shows_how_the_numbers_move(app, planted_runs):
    _, (trained, untrained) = planted_runs
    select(app, [trained, untrained])
    app.switch_page(dissect_app.SHARED_CONCEPTS_PAGE).run()
    app.toggle(key=dissect_app.STABLE_KEY).set_value(True).run()
    assert not app.exception
    moves = next(frame.value for frame in app.dataframe if "distinct_stable" in frame.value.columns)
    trained_row = moves.set_index("model").loc[trained]
    assert (trained_row["units"], trained_row["stable_units"]) == (6, 6)
    app.switch_page(dissect_app.MODEL_DIFFERENCES_PAGE).run()
    assert not app.exception
    assert app.toggle(key=dissect_app.STABLE_KEY).value  # the choice follows the user across pages


def test_unit_explorer_shows_figures_scatter_and_filters(app, planted_runs):
    _, (trained, _) = planted_runs
    app.query_params.update({"model": trained, "layer": "detect", "unit": "1"})
    app.switch_page(dissect_app.UNIT_EXPLORER_PAGE).run()
    assert not app.exception
    metrics = {metric.label: metric.value for metric in app.metric}
    assert metrics["Stability"] == "100%"
    assert float(metrics["Correlation"]) > 0.5
    assert any("Runner-up" in caption.value for caption in app.caption)
    ranking = app.dataframe[-1].value
    assert {"stability", "correlation", "margin"} <= set(ranking.columns) and len(ranking) == 6
    app.selectbox(key="unit_sort_by").set_value("correlation").run()
    ranking = app.dataframe[-1].value
    assert list(ranking["correlation"]) == sorted(ranking["correlation"], reverse=True)
    threshold = round(float(ranking["correlation"].median()) * 20) / 20  # the slider's 0.05 steps
    app.slider(key="unit_min_correlation").set_value(threshold).run()
    kept = app.dataframe[-1].value
    assert len(kept) == (ranking["correlation"] >= threshold).sum() and (kept["correlation"] >= threshold).all()
    assert any(f"{len(kept)} of 6 units pass the filters" in caption.value for caption in app.caption)


def test_imported_csv_says_why_it_has_no_figures(app):
    app.query_params.update({"model": "reference_run", "layer": "detect", "unit": "0"})
    app.switch_page(dissect_app.UNIT_EXPLORER_PAGE).run()
    assert not app.exception
    assert any("imported from a result file" in info.value for info in app.info)
    assert not [metric for metric in app.metric if metric.label == "Stability"]


def test_bundles_carry_the_quality_figures(planted_runs, tmp_path):
    from dissect_core.engine.bundle_export import export_bundle
    from dissect_core.runs.bundle_format import import_bundle
    from dissect_core.runs.run_folders import find_runs

    root, (trained, _) = planted_runs
    runs, _ = find_runs(root / "results")
    run = next(run for run in runs if run.label == trained)
    [folder] = import_bundle(export_bundle([run], device="cpu"), tmp_path / "imported")
    copy = load_run(folder)
    pd.testing.assert_frame_equal(copy.label_quality, run.label_quality)
    pd.testing.assert_frame_equal(copy.layer_quality, run.layer_quality)
    assert np.array_equal(copy.quality_points("detect")[1], run.quality_points("detect")[1])


def test_figures_that_do_not_fit_the_labels_are_left_out_and_the_page_says_why(planted_runs, tmp_path, monkeypatch):
    import shutil

    from dissect_core.runs.run_folders import find_runs

    root, (trained, _) = planted_runs
    run = next(run for run in find_runs(root / "results")[0] if run.label == trained)
    copy = shutil.copytree(run.path, tmp_path / "doctored" / run.path.name)
    lines = (copy / "label_quality.csv").read_text().splitlines(keepends=True)
    (copy / "label_quality.csv").write_text("".join(lines[:-1]))  # one unit's figures lost
    monkeypatch.setattr(sys, "argv", ["streamlit_app.py", "--results", str(tmp_path / "doctored")])
    monkeypatch.setenv(dissect_app.RESULTS_ENV, str(tmp_path / "none"))
    st.cache_data.clear()
    app = AppTest.from_file(APP, default_timeout=120)
    app.query_params.update({"model": trained, "layer": "detect", "unit": "1"})
    app.switch_page(dissect_app.UNIT_EXPLORER_PAGE).run()
    assert not app.exception
    # The reason, as markdown (escaped): which file and how it disagrees.
    assert any("did not fit this layer" in info.value and "has figures for 5 units" in info.value
               and "labels 6" in info.value for info in app.info)
    assert not [metric for metric in app.metric if metric.label == "Stability"]
    assert any("Label-quality figures of layer detect left out" in text.value for text in app.sidebar.text)

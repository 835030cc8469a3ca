"""AppTest of the Unit explorer on a run computed by dissect_core (images, heatmaps,
masks) and on an imported reference CSV (labels only, with the reason)."""
from __future__ import annotations

import sys

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import dissect_app
from dissect_core.runs.run_folders import load_run

APP = dissect_app.ENTRY_SCRIPT
PAGE = dissect_app.UNIT_EXPLORER_PAGE


@pytest.fixture
def app(computed_run, tmp_path, monkeypatch):
    imported = tmp_path / "imported" / "resnet18_25_07_16_18_08"
    imported.mkdir(parents=True)
    (imported / "descriptions.csv").write_text(
        "layer,unit,description,similarity\nlayer2,0,red,0.26\nlayer2,1,dotted,0.21\nlayer2,2,<b>x</b>,0.3\n")
    monkeypatch.setattr(sys, "argv", ["streamlit_app.py", "--results", str(tmp_path / "imported")])
    monkeypatch.setenv(dissect_app.RESULTS_ENV, str(computed_run["results"]))
    st.cache_data.clear()
    return AppTest.from_file(APP, default_timeout=120)


def open_link(app: AppTest, model: str, layer: str, unit: int) -> AppTest:
    """Open the Unit explorer from a deep link, as a browser would."""
    app.query_params.update({"model": model, "layer": layer, "unit": str(unit)})
    return app.switch_page(PAGE).run()


def computed_label(computed_run) -> str:
    return load_run(computed_run["run_dir"]).label


def test_deep_link_shows_the_unit_with_heatmaps_and_masks(app, computed_run):
    label = computed_label(computed_run)
    run = load_run(computed_run["run_dir"])
    open_link(app, label, "layer4", 3)
    assert not app.exception
    expected = run.descriptions.query("layer == 'layer4' and unit == 3")["description"].iloc[0]
    assert app.subheader[0].value == f"layer4 · unit 3: {expected}"
    assert [tab.label for tab in app.tabs] == ["Heatmaps", "Masks (top 0.5 %)", "Images"]
    assert len(app.tabs[0].get("image")) == 10  # the default 10 images in each view
    assert len(app.tabs[1].get("image")) == 10
    top_concepts = app.dataframe[0].value
    assert top_concepts["concept"].iloc[0] == expected and len(top_concepts) == 5


def test_next_and_image_count_move_the_view_and_the_url(app, computed_run):
    label = computed_label(computed_run)
    open_link(app, label, "layer4", 3)
    app.button(key="unit_next").click().run()
    assert app.subheader[0].value.startswith("layer4 · unit 4:")
    assert app.query_params["unit"] == ["4"] or app.query_params["unit"] == "4"
    app.slider(key="unit_images").set_value(5).run()
    assert len(app.tabs[0].get("image")) == 5
    # The run stored maps for 10 images per unit (the default): asking for more says so.
    app.slider(key="unit_images").set_value(15).run()
    assert len(app.tabs[0].get("image")) == 10
    assert any("10 images are available" in caption.value for caption in app.caption)


def test_layer_without_spatial_map_shows_images_only(app, computed_run):
    open_link(app, computed_label(computed_run), "fc", 0)
    assert not app.exception
    assert [tab.label for tab in app.tabs] == ["Images"]
    assert any("no spatial map" in info.value for info in app.info)


def test_imported_csv_shows_labels_and_says_why_no_images(app):
    open_link(app, "resnet18_25_07_16_18_08 · layer2 · 3 units", "layer2", 2)
    assert not app.exception
    # A hostile concept name is escaped, not rendered as HTML.
    heading = app.subheader[0].value
    assert heading == f"layer2 · unit 2: {dissect_app.md('<b>x</b>')}" and "<b>" not in heading
    assert any("labels only" in info.value for info in app.info)
    ranking = app.dataframe[1].value
    assert ranking["unit"].tolist() == [2, 0, 1]  # most interpretable first

"""A results bundle through the app: imported in the sidebar on a 'machine' without the
probe images, its units shown with stored thumbnails and heatmaps; a bad bundle refused."""
from __future__ import annotations

import shutil
import sys

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import dissect_app
from dissect_app.sources import user_import_dir
from dissect_core.engine.bundle_export import export_bundle
from dissect_core.runs.run_folders import find_runs, load_run

APP = dissect_app.ENTRY_SCRIPT


@pytest.fixture(scope="module")
def bundle(computed_run, tmp_path_factory) -> bytes:
    # Export from a copy whose probe folder is then deleted: the bundle must not need it.
    root = tmp_path_factory.mktemp("bundle_source")
    shutil.copytree(computed_run["probe"], root / "probe")
    run_dir = shutil.copytree(computed_run["run_dir"], root / computed_run["run_dir"].name)
    manifest = (run_dir / "manifest.json").read_text().replace(str(computed_run["probe"]), str(root / "probe"))
    (run_dir / "manifest.json").write_text(manifest)
    data = export_bundle([load_run(run_dir)])
    shutil.rmtree(root / "probe")
    return data


@pytest.fixture
def app(tmp_path, monkeypatch) -> AppTest:
    monkeypatch.setattr(sys, "argv", ["streamlit_app.py"])
    monkeypatch.setenv(dissect_app.RESULTS_ENV, str(tmp_path / "results"))
    st.cache_data.clear()
    st.cache_resource.clear()
    app = AppTest.from_file(APP, default_timeout=120)
    return app.run()


def test_imported_bundle_joins_the_picker_and_shows_stored_heatmaps(app, bundle, tmp_path):
    app.file_uploader(key="bundle_file").set_value(("demo.zip", bundle, "application/zip")).run()
    assert not app.exception and not app.error
    # Unpacked outside the checkout and the result folder: in the user's own data folder.
    assert not (tmp_path / "results").exists()
    runs, problems = find_runs(user_import_dir())
    assert len(runs) == 1 and not problems
    label = runs[0].label
    assert app.multiselect(key="models").value == [label]

    app.query_params.update({"model": label, "layer": "layer4", "unit": "3"})
    app.switch_page(dissect_app.UNIT_EXPLORER_PAGE).run()
    assert not app.exception
    assert [tab.label for tab in app.tabs] == ["Heatmaps", "Masks (top 0.5 %)", "Images"]
    assert len(app.tabs[0].get("image")) == 10


def test_a_bad_bundle_is_refused_and_changes_nothing(app, tmp_path):
    app.file_uploader(key="bundle_file").set_value(("notes.zip", b"not a zip at all", "application/zip")).run()
    assert "zip" in app.error[0].value
    assert not (tmp_path / "results").exists() or find_runs(tmp_path / "results")[0] == []


def test_share_builds_a_bundle_of_the_selected_models(computed_run, monkeypatch):
    import io
    import json
    import zipfile

    monkeypatch.setattr(sys, "argv", ["streamlit_app.py"])
    monkeypatch.setenv(dissect_app.RESULTS_ENV, str(computed_run["results"]))
    st.cache_data.clear()
    app = AppTest.from_file(APP, default_timeout=300).run()
    assert app.multiselect(key="models").value  # the computed run is picked by default
    app.button(key="bundle_build").click().run()
    assert not app.exception
    data = app.session_state[dissect_app.BUNDLE_KEY]
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        manifest = json.loads(archive.read("bundle.json"))
        assert [entry["label"] for entry in manifest["runs"]] == app.multiselect(key="models").value
        assert any(name.endswith("maps/layer4.npy") for name in archive.namelist())
    assert any(button.label == "Download bundle" for button in app.get("download_button"))


def test_an_imported_bundle_is_removed_and_the_demo_comes_back(app, bundle):
    app.file_uploader(key="bundle_file").set_value(("demo.zip", bundle, "application/zip")).run()
    label = find_runs(user_import_dir())[0][0].label
    assert app.multiselect(key="models").options == [label]  # the demo stepped aside
    (remove,) = [button for button in app.sidebar.button if button.label.startswith(r"Remove demo\.zip")]
    app = remove.click().run()
    assert not app.exception
    assert find_runs(user_import_dir())[0] == []  # the app's copy is gone; nothing else was touched
    assert label not in app.multiselect(key="models").options
    assert any(info.value.startswith("**Demo.**") for info in app.info)
    # Still in the uploader, the bundle is not imported again behind the user's back.
    assert "was removed" in app.sidebar.info[0].value and find_runs(user_import_dir())[0] == []

"""AppTest of the Run page: a new dissection on stand-ins, a bad concept list, and
re-describing a finished run with an uploaded list from the cache."""
from __future__ import annotations

import sys

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import dissect_app
from dissect_core.engine import downloads
from dissect_core.runs.run_folders import find_runs

APP = dissect_app.ENTRY_SCRIPT
PAGE = dissect_app.RUN_PAGE


@pytest.fixture
def results(computed_run, tmp_path, monkeypatch):
    """A results folder holding a copy of the computed run, whose manifest names a copy of
    its cache (2 MB), the app's cache too: what one test computes must not be served from
    the cache to the next."""
    import json
    import shutil

    results = tmp_path / "results"
    run_dir = shutil.copytree(computed_run["run_dir"], results / computed_run["run_dir"].name)
    cache = shutil.copytree(computed_run["cache"], tmp_path / "cache")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["config"]["activation_dir"] = str(cache)  # re-describing reuses the run's own cache
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    monkeypatch.setattr(sys, "argv", ["streamlit_app.py"])
    monkeypatch.setenv(dissect_app.RESULTS_ENV, str(results))
    monkeypatch.setenv(dissect_app.CACHE_ENV, str(cache))
    monkeypatch.setattr(downloads, "is_reachable", lambda *a, **k: pytest.fail("network was checked"))
    st.cache_data.clear()
    return results


def open_run_page() -> AppTest:
    app = AppTest.from_file(APP, default_timeout=300)
    app.run()
    return app.switch_page(PAGE).run()


def fill_new_dissection(app: AppTest, computed_run: dict, models: list[str], layers: str = "layer4",
                        probe_folder: str | None = None) -> None:
    """The New dissection form set to the computed run's stand-ins, on the CPU."""
    app.multiselect(key="run_models").set_value(models)
    app.text_input(key="run_layers").set_value(layers)
    app.selectbox(key="run_probe").set_value("a folder of images").run()
    app.text_input(key="run_probe_folder").set_value(probe_folder or str(computed_run["probe"]))
    app.text_input(key="run_data_dir").set_value(str(computed_run["data"]))
    app.text_input(key="run_clip").set_value(computed_run["clip"])
    app.selectbox(key="run_device").set_value("cpu")


def test_new_dissection_from_the_form(results, computed_run):
    app = open_run_page()
    assert not app.exception
    fill_new_dissection(app, computed_run, ["resnet18_places"])
    app.selectbox(key="run_concept_choice").set_value("upload a .txt list").run()
    app.file_uploader(key="run_concepts_file").set_value(("mine.txt", b"dog\ncat\n\ndog\nsky\n", "text/plain")).run()
    assert app.caption[0].value == f"{dissect_app.md('mine.txt')}: 3 concepts, 1 duplicate(s) dropped, 1 blank line(s) dropped"
    app.button(key="run_start").click().run()

    assert not app.exception
    assert app.status[0].state == "complete"
    assert "Reused from the cache: activations layer4, CLIP image features" in [t.value for t in app.text]
    assert "layer4: 512 units" in " ".join(t.value for t in app.text)
    runs, _ = find_runs(results)
    assert len(runs) == 2
    newest = max(runs, key=lambda run: run.manifest.created + run.path.name)
    assert set(newest.descriptions["description"]) <= {"dog", "cat", "sky"}


def test_two_models_from_the_form_are_dissected_in_one_pass(results, computed_run, tmp_path, monkeypatch):
    from standins import place_torchvision_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    place_torchvision_weights("resnet18")
    app = open_run_page()
    fill_new_dissection(app, computed_run, ["resnet18_places", "resnet18"])
    app.selectbox(key="run_concept_choice").set_value("upload a .txt list").run()
    app.file_uploader(key="run_concepts_file").set_value(("mine.txt", b"dog\ncat\nsky\n", "text/plain")).run()
    app.button(key="run_start").click().run()

    assert not app.exception
    assert [status.state for status in app.status] == ["complete"]  # one status box: one pass for both
    assert {f"**{dissect_app.md(name)}**" for name in ("resnet18_places", "resnet18")} <= {m.value for m in app.markdown}
    runs, _ = find_runs(results)
    assert sorted(run.target_model for run in runs) == ["resnet18", "resnet18_places", "resnet18_places"]


def test_unusable_concept_list_is_refused(results):
    app = open_run_page()
    app.selectbox(key="run_concept_choice").set_value("upload a .txt list").run()
    app.file_uploader(key="run_concepts_file").set_value(("bad.txt", b"caf\xe9\n", "text/plain")).run()
    assert dissect_app.md("bad.txt: not UTF-8 text (byte 3 is 0xe9)") in app.error[0].value
    assert app.button(key="run_start").disabled
    assert len(find_runs(results)[0]) == 1


def test_new_concepts_for_a_finished_run_come_from_the_cache(results):
    app = open_run_page()
    app.selectbox(key="redescribe_concept_choice").set_value("upload a .txt list").run()
    app.file_uploader(key="redescribe_concepts_file").set_value(("fresh.txt", b"zebra\nwheel\n", "text/plain")).run()
    app.button(key="redescribe_start").click().run()
    assert not app.exception
    assert app.status[-1].state == "complete"
    reused = [t.value for t in app.text if t.value.startswith("Reused from the cache")]
    assert reused and "activations layer4" in reused[0] and "CLIP image features" in reused[0]
    runs, _ = find_runs(results)
    assert any(run.manifest.concept_set.name == "fresh.txt" for run in runs)


def test_errors_name_the_widgets(results, computed_run):
    app = open_run_page()
    fill_new_dissection(app, computed_run, ["resnet18_places"], layers="layer9")
    app.button(key="run_start").click().run()
    assert not app.exception
    message = app.error[0].value
    assert message.startswith(dissect_app.md("“Layers”: The model has no layer 'layer9'"))
    assert "target_layers" not in message


def test_the_run_page_defaults_to_the_standard_20k_words(results):
    app = open_run_page()
    assert app.selectbox(key="run_concept_choice").value == "english_20k"


def test_a_failed_run_says_why_without_a_click(results, computed_run, tmp_path):
    app = open_run_page()
    fill_new_dissection(app, computed_run, ["resnet18_places"], probe_folder=str(tmp_path / "no_such_folder"))
    app.button(key="run_start").click().run()
    assert not app.exception
    assert app.status[0].state == "error"
    errors = [error for error in app.main.error]  # beside the status box, not hidden inside it
    assert errors and "no_such_folder" in errors[0].value.replace("\\", "") and "`" not in errors[0].value


def test_bundled_runs_are_not_offered_for_new_concepts(results, computed_run):
    import shutil

    bundled = results / "bundled_copy"
    shutil.copytree(computed_run["run_dir"], bundled)
    (bundled / "thumbnails").mkdir()
    app = open_run_page()
    offered = app.selectbox(key="redescribe_run").options
    assert len(offered) == 1  # the computed run, not its bundled copy
    # The reason is in plain sight, beside the run's name: not in a collapsed expander.
    reasons = [line for info in app.info for line in info.value.replace("\\", "").split("\n") if "read-only" in line]
    assert len(reasons) == 1 and "bundle" in reasons[0] and "bundled_copy" in reasons[0]
    assert not app.main.expander

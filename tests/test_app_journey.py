"""AppTest: a user's sequence over every page and sidebar widget, from the built-in demo
through uploads, renames, layer picks and bundle imports, and back again.

Every result file is made here (no ../shared): a reference-tool descriptions.csv with
layers layer2-layer4 and a MILAN file with conv1-layer4, as in the issue's steps.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import dissect_app
from dissect_app.sources import user_import_dir
from dissect_core.runs.demo_runs import demo_runs, demo_sweep_runs
from dissect_core.runs.run_folders import find_runs, load_run
from tests.test_app_bundle import bundle  # noqa: F401  (module fixture: a bundle of the computed run)
from tests.test_app_pages import open_app, rerun, upload
from tests.test_app_limits import rename

SHARED = dissect_app.SHARED_CONCEPTS_PAGE
DIFFERENCES = dissect_app.MODEL_DIFFERENCES_PAGE
EXPLORER = dissect_app.UNIT_EXPLORER_PAGE
BROWSING = (dissect_app.HOME_PAGE, SHARED, DIFFERENCES, EXPLORER)
UNITS = {"conv1": 4, "layer1": 4, "layer2": 8, "layer3": 8, "layer4": 16}


def descriptions_file(layers: list[str], with_scores: bool) -> bytes:
    """A result file over ``layers`` (UNITS units each): CLIP-Dissect's columns, or MILAN's (no score)."""
    header = "layer,unit,description,similarity" if with_scores else "layer,unit,description"
    rows = [header]
    for layer in layers:
        for unit in range(UNITS[layer]):
            concept = ("dog", "sky", "grass", "road")[unit % 4]
            rows.append(f"{layer},{unit},{concept}" + (f",{0.1 + unit / 100:.4f}" if with_scores else ""))
    return ("\n".join(rows) + "\n").encode()


CLIP_FILE = ("descriptions.csv", descriptions_file(["layer2", "layer3", "layer4"], with_scores=True))
MILAN_FILE = ("m_base_resnet18_places365.csv",
              descriptions_file(["conv1", "layer1", "layer2", "layer3", "layer4"], with_scores=False))


@pytest.fixture(autouse=True)
def fresh_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["streamlit_app.py"])
    monkeypatch.delenv(dissect_app.HOSTED_ENV, raising=False)
    monkeypatch.setenv(dissect_app.RESULTS_ENV, str(tmp_path / "results"))
    st.cache_data.clear()


def models(at: AppTest):
    return at.sidebar.multiselect(key="models")


def layers(at: AppTest):
    return at.sidebar.multiselect(key="layers")


def visit_every_page(at: AppTest) -> AppTest:
    """Open each browsing page in this session (each must run without an exception), back to the Overview."""
    for page in (*BROWSING[1:], BROWSING[0]):
        rerun(at.switch_page(page))
    return at


def card_units(at: AppTest) -> list[int]:
    return [int(metric.value.replace(",", "")) for metric in at.metric if metric.label == "Units"]


def test_the_demo_is_renamed_on_every_page_and_named_back() -> None:
    trained, untrained = (load_run(folder).label for folder in demo_runs())
    at = open_app()
    rename(at, trained, "Trained")
    assert not at.sidebar.error
    assert models(at).value == ["Trained", untrained]
    assert "**Trained**" in [m.value for m in at.markdown]  # its card
    visit_every_page(at)
    rerun(at.switch_page(EXPLORER))
    assert at.sidebar.selectbox(key="unit_model").value == "Trained"
    assert any(c.value.startswith("Trained · concepts: its probe images") for c in at.caption)
    rename(at, "Trained", trained)  # undo
    assert models(at).value == [trained, untrained]
    assert at.sidebar.selectbox(key="unit_model").value == trained
    # The demo's names live in the session: nothing is written to the result folder.
    assert not dissect_app.results_dir().exists()


def test_uploads_add_their_layers_in_order_and_cards_count_every_unit() -> None:
    at = open_app()
    upload(at, CLIP_FILE)
    clip_label = models(at).value[0]
    assert models(at).value == [clip_label]  # the demo gave way
    assert layers(at).options == layers(at).value == ["layer2", "layer3", "layer4"]
    upload(at, MILAN_FILE)
    milan_label = models(at).value[1]
    # The MILAN run's earlier layers come first, none is dropped for having been the demo's.
    everything = ["conv1", "layer1", "layer2", "layer3", "layer4"]
    assert layers(at).options == layers(at).value == everything
    assert card_units(at) == [8 + 8 + 16, sum(UNITS.values())]
    (note,) = [c.value for c in at.sidebar.caption if "has no" in c.value]
    assert "conv1, layer1" in note.replace("\\", "") and "shown without them" in note

    # Taken out: stays out on every page and after the next upload; put back: counted again.
    rerun(layers(at).unselect("layer3"))
    assert card_units(at) == [8 + 16, sum(UNITS.values()) - UNITS["layer3"]]
    visit_every_page(at)
    assert layers(at).value == ["conv1", "layer1", "layer2", "layer4"]
    upload(at, ("other.csv", descriptions_file(["layer3", "layer4"], with_scores=True)))
    other_label = models(at).value[2]
    assert "layer3" not in layers(at).value
    rerun(layers(at).select("layer3"))
    assert layers(at).value == everything
    assert card_units(at)[:2] == [8 + 8 + 16, sum(UNITS.values())]

    # Unpicking a model (undoing its upload's choice) takes its layers out of the picker.
    rerun(models(at).unselect(milan_label))
    rerun(models(at).unselect(other_label))
    assert layers(at).options == ["layer2", "layer3", "layer4"]
    assert not [c for c in at.sidebar.caption if "has no" in c.value]
    visit_every_page(at)

    rename(at, milan_label, "MILAN base")  # an upload not picked can be renamed, then picked
    rerun(models(at).select("MILAN base"))
    rerun(at.switch_page(EXPLORER))
    rerun(at.sidebar.selectbox(key="unit_model").select("MILAN base"))
    rerun(at.sidebar.selectbox(key="unit_layer").select("conv1"))
    assert at.subheader[0].value == "conv1 · unit 0: dog"
    rename(at, "MILAN base", milan_label)
    assert at.sidebar.selectbox(key="unit_model").value == milan_label


def test_put_the_demo_away_upload_then_bring_it_back() -> None:
    at = open_app()
    rerun(at.button(key="demo_hide").click())
    assert models(at).options == []
    for page in BROWSING[1:]:
        rerun(at.switch_page(page))
        assert at.info[0].value == "No CLIP-Dissect results are loaded yet."
    rerun(at.switch_page(dissect_app.HOME_PAGE))
    upload(at, CLIP_FILE)
    assert len(models(at).options) == 1
    visit_every_page(at)
    rerun(models(at).set_value([]))  # nothing picked: each page says what to do
    for page in BROWSING[:3]:
        rerun(at.switch_page(page))
        assert any(info.value.startswith("Pick") for info in at.info)
    rerun(at.switch_page(dissect_app.HOME_PAGE))
    assert not [b for b in at.button if b.key == "demo_show"]  # the demo comes back only with nothing loaded


def test_a_bundle_is_imported_once_outside_the_checkout_renamed_and_kept_from_a_hosted_server(
        bundle, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:  # noqa: F811
    at = open_app()
    at.sidebar.file_uploader(key=dissect_app.BUNDLE_UPLOAD_KEY).set_value(("shared.zip", bundle, "application/zip"))
    rerun(at)
    (imported,) = find_runs(user_import_dir())[0]
    assert models(at).value == [imported.label]
    assert not dissect_app.results_dir().exists() and not (Path.cwd() / "results" / "imported").exists()
    visit_every_page(at)

    rename(at, imported.label, "Shared run")  # a bundled run is a folder run: its name is kept
    assert models(at).value == ["Shared run"]
    again = open_app()  # another local session: the same bundle again
    again.sidebar.file_uploader(key=dissect_app.BUNDLE_UPLOAD_KEY).set_value(
        ("shared copy.zip", bundle, "application/zip"))
    rerun(again)
    assert "imported before" in again.sidebar.info[0].value
    assert models(again).options == ["Shared run"]  # nothing added, no "#2"
    assert len(find_runs(user_import_dir())[0]) == 1
    rename(again, "Shared run", imported.label)  # undo the rename
    assert models(again).options == [imported.label]

    # A hosted server from the same place shows none of it: only its own runs (here the demo).
    monkeypatch.setenv(dissect_app.HOSTED_ENV, "1")
    hosted = open_app()
    assert imported.label not in models(hosted).options
    assert [run.label for run in map(load_run, demo_runs() + demo_sweep_runs())] == models(hosted).options

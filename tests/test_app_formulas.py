"""AppTest: a labelled run, the built-in demo's included, is described on the Run page with a
typed list of labels and formulas over them (issue 18, item 3); bad lines are all named, with
their line numbers, and nothing is computed; an imported bundle's labelled run stays read-only.

The demo's stages are computed once (about 10 s on a CPU) into a module-wide cache folder;
every test writes its runs to a results folder of its own.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import dissect_app
from tests.test_app_limits import rename
from dissect_core.runs.demo_runs import demo_runs, demo_sweep_runs
from dissect_core.runs.run_folders import find_runs, load_run

FORMULAS = ("Sandal OR Sneaker OR Ankle boot", "Shirt AND NOT T-shirt or top")
TRAINED = "small CNN · trained on Fashion-MNIST"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the module: the demo's activations are computed by the first test only."""
    return tmp_path_factory.mktemp("formulas_cache")


@pytest.fixture
def results(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(sys, "argv", ["streamlit_app.py"])
    monkeypatch.delenv(dissect_app.HOSTED_ENV, raising=False)
    monkeypatch.setenv(dissect_app.RESULTS_ENV, str(tmp_path / "results"))
    monkeypatch.setenv(dissect_app.CACHE_ENV, str(cache))
    st.cache_data.clear()
    return tmp_path / "results"


def open_run_page() -> AppTest:
    at = AppTest.from_file(dissect_app.ENTRY_SCRIPT, default_timeout=300).run()
    at = at.switch_page(dissect_app.RUN_PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def plain(text: str) -> str:
    return text.replace("\\", "")  # markdown escapes


def describe_demo_with(at: AppTest, lines: str) -> AppTest:
    at.selectbox(key="redescribe_run").select(TRAINED).run()
    at.text_area(key="formulas_text").input(lines).run()
    return at.button(key="redescribe_start").click().run()


def test_the_demo_is_described_with_typed_formulas(results: Path):
    at = open_run_page()
    assert TRAINED in at.selectbox(key="redescribe_run").options
    at.selectbox(key="redescribe_run").select(TRAINED).run()
    # A labelled run is offered no CLIP concept sets; its labels, the grammar and examples show.
    assert "redescribe_concept_choice" not in [box.key for box in at.selectbox]
    texts = " ".join(plain(element.value) for kind in ("markdown", "caption") for element in getattr(at, kind))
    assert "Its 10 labels:" in texts and "**T-shirt or top**" in texts and "AND, OR, NOT" in texts
    assert all(f"“{formula}”" in texts for formula in FORMULAS)

    at = describe_demo_with(at, "\n".join(FORMULAS) + "\n")
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.status[-1].state == "complete"
    runs, _ = find_runs(results)
    (run,) = runs
    # Told apart from the demo's own run, and from other typed lists, by its name.
    assert run.label == f"{TRAINED} · formulas (Sandal OR Sneaker OR Ankle boot, …)"
    assert run.manifest.concept_set.n_concepts == 2
    assert set(run.top_concepts["concept"]) == set(FORMULAS)  # exactly these two concepts
    assert set(run.descriptions["description"]) <= set(FORMULAS)
    labels = dict(zip(run.units("fc")["unit"], run.units("fc")["description"]))
    assert [labels[unit] for unit in (5, 7, 9)] == [FORMULAS[0]] * 3  # the footwear outputs
    assert labels[6] == FORMULAS[1]
    # The new run is on every page, beside the demo's own two (it does not replace the demo), and
    # joins the model picker's choice.
    at.switch_page(dissect_app.HOME_PAGE).run()
    picker = at.sidebar.multiselect(key="models")
    sweep = [load_run(folder).label for folder in demo_sweep_runs()]  # the demo's training sweep follows
    assert picker.options == [run.label, TRAINED, "small CNN · untrained (same initial weights)", *sweep]
    assert run.label in picker.value
    assert "beside the 1 run you described it with" in at.info[0].value
    # Renamed, then given its own name back (longer than a name typed by hand usually is).
    rename(at, run.label, "shoes vs shirts")
    rename(at, "shoes vs shirts", run.label)
    assert not at.sidebar.error and run.label in at.sidebar.multiselect(key="models").options

    # A second list for the same run takes the cached activations: only the similarity step runs.
    at = open_run_page()
    at = describe_demo_with(at, "Trouser\nBag OR Coat\n")
    reused = [t.value for t in at.text if t.value.startswith("Reused from the cache")]
    assert reused and "activations conv1" in reused[0] and "activations fc" in reused[0]


def test_bad_lines_are_all_named_and_nothing_is_computed(results: Path):
    at = describe_demo_with(open_run_page(), "Sandal OR\nHat\n")
    assert not at.exception
    (error,) = at.main.error
    text = plain(error.value)
    assert "line 1 ('Sandal OR'): the line ends too soon" in text and "line 2 ('Hat'): no label 'Hat'" in text
    assert "Labels and formulas" in text and "`" not in error.value
    assert at.status[-1].state == "error"
    assert find_runs(results)[0] == []
    # The same from an uploaded list, named by its file.
    at.radio(key="formulas_source").set_value("upload a .txt list").run()
    at.file_uploader(key="formulas_file").set_value(("shoes.txt", b"Sandal OR Sneaker\nsandal\n", "text/plain")).run()
    at = at.button(key="redescribe_start").click().run()
    text = plain(at.main.error[0].value)
    assert "shoes.txt: 1 of 2 line(s)" in text and "line 2 ('sandal'): no label 'sandal' (did you mean 'Sandal'?)" in text
    assert find_runs(results)[0] == []


def test_an_imported_bundles_labelled_run_stays_read_only(results: Path, tmp_path: Path):
    """A bundle's manifest names paths of the machine that made it (here the demo's relative ones):
    only the real built-in demo folder is recomputed, from the package's own files."""
    from dissect_core.common.errors import InvalidInputError
    from dissect_core.engine.pipeline import config_from_run

    bundled = load_run(shutil.copytree(demo_runs()[0], results / "imported" / "demo_copy"))
    assert bundled.labelled and bundled.imported
    assert "results bundle" in dissect_app.redescribe_blocker(bundled)
    with pytest.raises(InvalidInputError, match="imported from a results bundle"):
        config_from_run(bundled)
    # Without its thumbnails and outside the imports folder, the manifest still says it was imported.
    loose = shutil.copytree(demo_runs()[0], tmp_path / "elsewhere" / "loose")
    shutil.rmtree(loose / "thumbnails")
    assert "results bundle" in dissect_app.redescribe_blocker(load_run(loose))

    at = open_run_page()  # the bundle's run is loaded (so the demo gives way), and not offered
    assert "redescribe_run" not in [box.key for box in at.selectbox]
    reasons = [line for info in at.info for line in plain(info.value).split("\n") if "read-only" in line]
    assert len(reasons) == 1 and "bundle" in reasons[0]

"""AppTest: the built-in demo's labelled-probe runs read in their own words on every page:
no CLIP, the label's presence on the scatter, no near-synonyms, the labels of a unit's top
images, close-margin notes by the stated rule, class categories, and why they take no new
concepts, in plain sight."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import dissect_app
from dissect_core.runs.demo_runs import demo_runs
from dissect_core.runs.formats import PROBE_LABELS
from dissect_core.runs.run_folders import load_run
from dissect_core.runs.unit_evidence import stored_image_names, top_label_counts, unit_close_margin
from tests.test_app_pages import open_app

UNIT_EXPLORER = dissect_app.UNIT_EXPLORER_PAGE


@pytest.fixture(autouse=True)
def nothing_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["streamlit_app.py"])
    monkeypatch.setenv(dissect_app.RESULTS_ENV, str(tmp_path / "no_runs_yet"))
    monkeypatch.setenv(dissect_app.CACHE_ENV, str(tmp_path / "cache"))  # the Run page lists the probe's labels
    st.cache_data.clear()


@pytest.fixture(scope="module")
def trained():
    return load_run(demo_runs()[0])


def plain(text: str) -> str:
    return text.replace("\\", "")  # markdown escapes


def page_texts(at: AppTest) -> list[str]:
    return [plain(element.value) for kind in ("caption", "markdown", "info", "subheader")
            for element in getattr(at, kind)]


def chart_specs(at: AppTest) -> list[dict]:
    found = []

    def walk(node) -> None:
        if getattr(node, "type", "") == "vega_lite_chart":
            found.append(json.loads(node.proto.spec))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return found


def open_unit(trained, layer: str, unit: int) -> AppTest:
    at = AppTest.from_file(dissect_app.ENTRY_SCRIPT, default_timeout=120).run()
    at.query_params.update({"model": trained.label, "layer": layer, "unit": str(unit)})
    at.switch_page(UNIT_EXPLORER).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_the_overview_names_the_method_labels_and_the_classes():
    at = open_app()
    cards = [plain(caption.value) for caption in at.caption][:2]
    assert all(card.startswith(PROBE_LABELS) and "CLIP" not in card for card in cards), cards
    counts = at.dataframe[0].value
    assert set(counts["method"]) == {PROBE_LABELS}
    mix = next(frame.value for frame in at.dataframe if "category" in frame.value.columns)
    assert set(mix["category"]) == {"class"}  # "T-shirt or top" is a class, not a material
    quality = next(frame.value for frame in at.dataframe if "stable_share" in frame.value.columns)
    # "10 [10–11]" with ten concepts: every interval's top is now at most the ten classes.
    assert all(int(text.split("–")[1].rstrip("]")) <= 10 for text in quality["distinct_concepts"])


def test_the_unit_explorer_speaks_of_labels_not_clip(trained):
    at = open_unit(trained, "conv1", 0)
    texts = page_texts(at)
    assert not [text for text in texts if "CLIP similarity" in text or "text cosine" in text or "labels by" in text]
    assert any(f"label score ({trained.similarity_fn})" in text for text in texts)
    scatter = next(spec for spec in chart_specs(at) if spec.get("mark", {}).get("type") == "circle")
    assert "CLIP" not in scatter["encoding"]["x"]["title"] and "carries" in scatter["encoding"]["x"]["title"]
    ranking = at.dataframe[-1].value
    assert "near_synonym" not in ranking.columns  # labels have no text, so no near-synonyms


def test_the_unit_explorer_counts_the_labels_of_the_top_k_images(trained):
    at = open_unit(trained, "conv1", 0)
    counts = top_label_counts(trained, "conv1", 0, stored_image_names(trained.path).get)
    # The demo's auprc ranks all probe images (no top_k): the note counts the listed top images.
    note = next(plain(m.value) for m in at.markdown if "over all probe images" in plain(m.value))
    assert f"top {counts.counted} images" in note
    assert f"{counts.label_images} of them carry {counts.label}" in note
    assert ("Most carry" in note) == (counts.majority != counts.label)
    bars = next(spec for spec in chart_specs(at) if "Labels of its top" in " ".join(spec.get("title", {}).get("text", [])))
    assert bars["layer"][0]["encoding"]["x"]["axis"]["format"] == "d"


def test_the_close_margin_note_follows_the_stated_rule(trained):
    verdicts = {(layer, unit): unit_close_margin(trained, layer, unit)
                for layer in trained.layers for unit in trained.units(layer)["unit"]}
    close = next(key for key, value in verdicts.items() if value is True)
    far = next(key for key, value in verdicts.items() if value is False)
    for (layer, unit), expected in ((close, True), (far, False)):
        at = open_unit(trained, layer, unit)
        notes = [text for text in page_texts(at) if text.startswith("Runner-up")]
        assert len(notes) == 1 and ("The margin is close" in notes[0]) == expected, (layer, unit, notes)
    margin = next(metric for metric in at.metric if metric.label == "Margin")
    assert "20%" in margin.help and "spread" in margin.help  # the rule, stated


def test_the_run_page_describes_the_demo_with_formulas_over_its_labels():
    at = open_app(dissect_app.RUN_PAGE)
    reasons = "\n".join(plain(info.value) for info in at.main.info)
    assert "described with new concepts here" not in reasons  # the demo is not refused any more
    texts = " ".join(plain(element.value) for element in (*at.markdown, *at.caption))
    assert "probe images' labels" in texts and "formulas over them" in texts and "Mu & Andreas" in texts
    assert at.text_area(key="formulas_text").value == "Sandal OR Sneaker OR Ankle boot\nShirt AND NOT T-shirt or top"
    assert not at.main.expander  # in plain sight


def test_model_differences_names_the_label_score():
    at = open_app(dissect_app.MODEL_DIFFERENCES_PAGE)
    links = [plain(link.proto.label) for link in at.get("page_link") if "best unit" in link.proto.label]
    # The demo's runs are scored with the labelled probes' default, auprc.
    assert links and all("label score (auprc)" in link and "similarity" not in link for link in links), links
    assert any(plain(c.value).startswith(f"Labels of A by {PROBE_LABELS}") for c in at.caption)

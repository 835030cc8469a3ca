"""AppTest of the Overview, Shared concepts and Model differences pages and of dissect_app.

Runs come from a temporary ``--results`` folder (``sys.argv`` is monkeypatched)
holding reference-format runs (``descriptions.csv`` + ``args.txt``) with known
answers; uploads go through the sidebar's file uploader.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import dissect_app
from dissect_core.runs.run import Run

APP = dissect_app.ENTRY_SCRIPT
SHARED = dissect_app.SHARED_CONCEPTS_PAGE
DIFFERENCES = dissect_app.MODEL_DIFFERENCES_PAGE

IMAGENET = "resnet18 · layer2, layer3 · broden · 20k"
PLACES = "resnet18_places · layer2–layer4 · broden · 20k"
ALEXNET = "alexnet · features.8 · broden · 20k"
HOSTILE = ("<img src=x onerror=alert(1)>", "**bold**", "[link](x)")

# (layer, concept, units). ImageNet: layer2 4 distinct, layer3 3, overall 6.
IMAGENET_ROWS = [
    ("layer2", "dotted", [0, 1, 2, 3]), ("layer2", "stripe", [4, 5]), ("layer2", "red", [6]),
    ("layer2", "zebra", [7]),
    ("layer3", "dotted", [0]), ("layer3", "grid", [1, 2, 3]), ("layer3", "kitchen", [4, 5]),
]
# Places: layer2 3 distinct, layer3 2, layer4 (not in ImageNet) 1, overall 6.
PLACES_ROWS = [
    ("layer2", "dotted", [0, 1, 2, 3, 4]), ("layer2", "green", [5, 6]), ("layer2", "stripe", [7]),
    ("layer3", "bathroom", [0, 1, 2, 3]), ("layer3", "grid", [4, 5]),
    ("layer4", "lobby", [0, 1, 2, 3]),
]
ALEXNET_ROWS = [("features.8", "a", [0]), ("features.8", "b", [1]), ("features.8", "c", [2])]


def descriptions_csv(rows: list[tuple[str, str, list[int]]]) -> str:
    """Reference-format CSV text: one line per unit, units in index order within a layer."""
    lines = ["layer,unit,description,similarity"]
    units = sorted(((layer, unit, concept) for layer, concept, us in rows for unit in us),
                   key=lambda row: ([r[0] for r in rows].index(row[0]), row[1]))
    for layer, unit, concept in units:
        quoted = '"' + concept.replace('"', '""') + '"' if any(c in concept for c in ',"') else concept
        lines.append(f"{layer},{unit},{quoted},{0.1 + unit / 100:.4f}")
    return "\n".join(lines) + "\n"


def write_run(folder: Path, target_model: str, rows: list[tuple[str, str, list[int]]]) -> None:
    """A run folder as the reference tool writes it."""
    folder.mkdir(parents=True)
    (folder / "descriptions.csv").write_text(descriptions_csv(rows), encoding="utf-8")
    args = {"clip_model": "ViT-B/16", "target_model": target_model, "d_probe": "broden",
            "concept_set": "data/20k.txt", "similarity_fn": "soft_wpmi"}
    (folder / "args.txt").write_text(json.dumps(args), encoding="utf-8")


@pytest.fixture(autouse=True)
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``--results`` folder with three runs; the alexnet one sorts first, so a naive default would pick it."""
    root = tmp_path / "cli_results"
    write_run(root / "a_alexnet_25_07_01_10_00", "alexnet", ALEXNET_ROWS)
    write_run(root / "resnet18_25_07_16_18_08", "resnet18", IMAGENET_ROWS)
    write_run(root / "nested" / "deeper" / "resnet18_places_25_07_16_17_57", "resnet18_places", PLACES_ROWS)
    monkeypatch.setattr(sys, "argv", ["streamlit_app.py", "--results", str(root)])
    monkeypatch.setenv(dissect_app.RESULTS_ENV, str(tmp_path / "no_runs_computed_yet"))
    st.cache_data.clear()
    return root


def open_app(page: str | None = None) -> AppTest:
    """A fresh session of the app, switched to ``page``; fails on an exception.

    Shared by the page, demo and hosted tests. The timeout is only a ceiling: the first
    script run of a session can take a minute on a loaded machine (imports, folder scans).
    """
    at = AppTest.from_file(APP, default_timeout=120).run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def rerun(target) -> AppTest:
    """Run the app again, after a widget change (``target`` is the widget) or not."""
    at = target.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def chart_rows(at: AppTest, index: int) -> list[dict]:
    """The data rows of the index-th Vega-Lite chart (Streamlit ships them as Arrow)."""
    proto = at.get("vega_lite_chart")[index].proto
    rows: list[dict] = []
    for dataset in proto.datasets:
        rows += pa.ipc.open_stream(dataset.data.data).read_all().to_pylist()
    return rows


def table(at: AppTest, index: int) -> list[tuple]:
    """The index-th dataframe's rows; list cells (unit indices) come back as lists."""
    return [tuple(cell.tolist() if isinstance(cell, np.ndarray) else cell for cell in row)
            for row in at.dataframe[index].value.itertuples(index=False)]


# --------------------------------------------------------------------------- Overview

def test_overview_defaults_to_the_resnet_pair_and_shows_counts() -> None:
    at = open_app()
    assert at.title[0].value == "Overview"
    picker = at.sidebar.multiselect(key="models")
    assert picker.options == [ALEXNET, PLACES, IMAGENET]  # folder order: "nested/" < "resnet18_"
    assert picker.value == [IMAGENET, PLACES]
    assert [(m.label, m.value) for m in at.metric] == [
        ("Units", "14"), ("Distinct concepts overall", "6"), ("Units", "18"), ("Distinct concepts overall", "6"),
    ]
    counts = table(at, 0)
    assert [row[:4] for row in counts] == [
        (IMAGENET, "layer2", 8, 4), (IMAGENET, "layer3", 6, 3),
        (PLACES, "layer2", 8, 3), (PLACES, "layer3", 6, 2), (PLACES, "layer4", 4, 1),
    ]
    # Largest number of units sharing one concept, and which concept.
    assert [row[4:6] for row in counts] == [(4, "dotted"), (3, "grid"), (5, "dotted"), (4, "bathroom"), (4, "lobby")]
    assert {row[6] for row in counts} == {"CLIP-Dissect"}  # which method made the labels
    distinct = {(r["model"], r["layer"]): r["distinct_concepts"] for r in chart_rows(at, 0)}
    assert distinct == {(IMAGENET, "layer2"): 4, (IMAGENET, "layer3"): 3,
                        (PLACES, "layer2"): 3, (PLACES, "layer3"): 2, (PLACES, "layer4"): 1}
    similarity = table(at, 1)
    assert similarity[0][:2] == (IMAGENET, "layer2")
    assert similarity[0][2] == pytest.approx(0.1 + 3.5 / 100)  # mean of 0.10 .. 0.17
    assert len(chart_rows(at, 1)) == 5
    assert [b.label for b in at.download_button] == ["CSV", "PNG", "SVG"] * 3  # counts, similarity, categories
    # Imported CSVs have no quality figures: the page says why instead of showing zeros.
    (absent,) = [c.value for c in at.caption if "no label-quality figures: imported from a result file" in c.value]
    assert absent.startswith(f"{dissect_app.md(IMAGENET)}; {dissect_app.md(PLACES)}: ")  # one line for both
    categories = table(at, 2)
    assert {row[2] for row in categories} <= {"colour", "texture", "material", "part", "object", "scene", "other"}


def test_overview_layer_picker_restricts_every_number() -> None:
    at = open_app()
    layers = at.sidebar.multiselect(key="layers")
    assert layers.value == ["layer2", "layer3", "layer4"]
    rerun(layers.set_value(["layer2"]))
    assert [(m.label, m.value) for m in at.metric] == [
        ("Units", "8"), ("Distinct concepts overall", "4"), ("Units", "8"), ("Distinct concepts overall", "3"),
    ]
    assert [row[:2] for row in table(at, 0)] == [(IMAGENET, "layer2"), (PLACES, "layer2")]


def test_model_and_layer_choice_persist_across_pages() -> None:
    at = open_app()
    rerun(at.sidebar.multiselect(key="models").set_value([PLACES, ALEXNET]))
    rerun(at.sidebar.multiselect(key="layers").set_value(["layer3"]))
    at.switch_page(SHARED)
    rerun(at)
    assert at.sidebar.multiselect(key="models").value == [PLACES, ALEXNET]
    assert at.sidebar.multiselect(key="layers").value == ["layer3"]
    at.switch_page(dissect_app.HOME_PAGE)
    rerun(at)
    assert at.sidebar.multiselect(key="models").value == [PLACES, ALEXNET]
    assert [row[:2] for row in table(at, 0)] == [(PLACES, "layer3")]


def test_how_to_get_results_without_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "argv", ["streamlit_app.py"])
    at = rerun(open_app().button(key="demo_hide").click())  # the built-in demo shows until put away
    assert at.info[0].value == "No CLIP-Dissect results are loaded yet."
    assert "--results DIR" in at.markdown[0].value
    assert not at.get("vega_lite_chart")


def test_missing_results_folder_is_reported_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                 results: Path) -> None:
    (results / "broken").mkdir()
    (results / "broken" / "descriptions.csv").write_text("layer,unit\nlayer2,0\n", encoding="utf-8")
    monkeypatch.setattr(sys, "argv", ["app", "--results", str(results), "--results", str(tmp_path / "nope")])
    at = open_app()
    (problems,) = [e for e in at.sidebar.expander if "could not be read" in e.label]
    assert problems.label.startswith("⚠️ 2 result file(s)")
    texts = [t.value for t in problems.text]
    assert any("lacks the column(s) 'description', 'similarity'" in t for t in texts)
    assert any("--results folder not found" in t for t in texts)
    assert at.sidebar.multiselect(key="models").value == [IMAGENET, PLACES]


# --------------------------------------------------------------------------- Shared concepts

def test_shared_concepts_slider_tables_and_charts() -> None:
    at = open_app(SHARED)
    assert at.slider(key="min_units").value == 4
    # layer2: both models; layer3: only Places has a concept with >= 4 units; layer4: only Places has it.
    assert table(at, 0) == [(IMAGENET, "dotted", 4, [0, 1, 2, 3]), (PLACES, "dotted", 5, [0, 1, 2, 3, 4])]
    assert table(at, 1) == [(PLACES, "bathroom", 4, [0, 1, 2, 3])]
    assert table(at, 2) == [(PLACES, "lobby", 4, [0, 1, 2, 3])]
    assert [i.value for i in at.info] == [
        f"{dissect_app.md(IMAGENET)}: no concept labels 4 or more units here.",
        f"{dissect_app.md(IMAGENET)} has no layer layer4.",
    ]
    assert len(at.get("vega_lite_chart")) == 4
    assert chart_rows(at, 1) == [{"concept": "dotted", "n_units": 5, "units": "0, 1, 2, 3, 4"}]
    assert json.loads(at.get("vega_lite_chart")[0].proto.spec)["encoding"]["x"]["scale"]["domain"] == [0, 5]

    rerun(at.slider(key="min_units").set_value(2))
    assert table(at, 0) == [
        (IMAGENET, "dotted", 4, [0, 1, 2, 3]), (IMAGENET, "stripe", 2, [4, 5]),
        (PLACES, "dotted", 5, [0, 1, 2, 3, 4]), (PLACES, "green", 2, [5, 6]),
    ]
    assert [r["concept"] for r in chart_rows(at, 2)] == ["grid", "kitchen"]

    at.switch_page(dissect_app.HOME_PAGE)
    rerun(at)
    at.switch_page(SHARED)
    rerun(at)
    assert at.slider(key="min_units").value == 2


# --------------------------------------------------------------------------- Model differences

def test_model_differences_sets_jaccard_and_layer_mismatch() -> None:
    at = open_app(DIFFERENCES)
    assert at.selectbox(key="model_a").value == IMAGENET
    assert at.selectbox(key="model_b").value == PLACES
    assert at.info[0].value == (
        r"Only resnet18\_places · layer2–layer4 · broden · 20k has layer(s) layer4; they are left out of the comparison."
    )
    assert table(at, 0) == [("layer2", 4, 3, 2, 0.4, 4), ("layer3", 3, 2, 1, 0.25, 0)]
    assert [(r["layer"], r["jaccard"]) for r in chart_rows(at, 0)] == [("layer2", 0.4), ("layer3", 0.25)]
    assert [t.label for t in at.tabs] == ["layer2", "layer3"]
    assert [m.value for m in at.metric] == ["2", "2", "1", "2", "1", "1"]  # only A, both, only B per layer
    assert table(at, 1) == [("red", 1), ("zebra", 1)]
    assert table(at, 2) == [("dotted", 4, 5), ("stripe", 2, 1)]
    assert table(at, 3) == [("green", 2)]
    diff = {(r["concept"], r["model"]): r["signed_units"] for r in chart_rows(at, 1)}
    assert diff[("dotted", IMAGENET)] == -4 and diff[("dotted", PLACES)] == 5


def test_model_differences_concept_lookup_links_to_unit_explorer() -> None:
    at = open_app(DIFFERENCES)
    concept = at.selectbox(key="concept")
    assert concept.value == "dotted"  # shared by both models, most units
    rerun(concept.select("grid"))
    units_a, units_b = table(at, -2), table(at, -1)
    assert [row[:2] for row in units_a] == [("layer3", 3), ("layer3", 2), ("layer3", 1)]  # similarity desc
    assert [row[:2] for row in units_b] == [("layer3", 5), ("layer3", 4)]
    assert units_a[0][3] == "Unit_explorer?model=resnet18+%C2%B7+layer2%2C+layer3+%C2%B7+broden+%C2%B7+20k&layer=layer3&unit=3"
    links = at.get("page_link")
    best = [link.proto for link in links if link.proto.label.startswith("Open the best unit")]
    assert [(p.page, p.query_string) for p in best] == [
        ("Unit_explorer", "model=resnet18+%C2%B7+layer2%2C+layer3+%C2%B7+broden+%C2%B7+20k&layer=layer3&unit=3"),
        ("Unit_explorer", "model=resnet18_places+%C2%B7+layer2%E2%80%93layer4+%C2%B7+broden+%C2%B7+20k&layer=layer3&unit=5"),
    ]


def test_model_differences_same_model_or_no_common_layer() -> None:
    at = open_app(DIFFERENCES)
    rerun(at.selectbox(key="model_b").select(IMAGENET))
    assert at.warning[0].value == "Pick two different models."
    rerun(at.sidebar.multiselect(key="models").set_value([IMAGENET, ALEXNET]))
    rerun(at.selectbox(key="model_b").select(ALEXNET))
    assert at.warning[0].value == "The two models have no layer in common."


def test_model_differences_needs_two_models() -> None:
    at = open_app()
    rerun(at.sidebar.multiselect(key="models").set_value([IMAGENET]))
    at.switch_page(DIFFERENCES)
    rerun(at)
    assert at.info[0].value == "Pick at least 2 models in the sidebar to compare them."
    assert not at.get("vega_lite_chart")


# --------------------------------------------------------------------------- uploads

def upload(at: AppTest, *files: tuple[str, bytes]) -> AppTest:
    at.sidebar.file_uploader(key=dissect_app.UPLOAD_KEY).set_value([(name, data, "text/csv") for name, data in files])
    return rerun(at)


MY_MODEL = "my_model.csv · layer2, fc · 7 units · uploaded"  # file name · layers · units


def test_upload_adds_a_run_and_keeps_it_across_pages() -> None:
    at = open_app()
    rerun(at.sidebar.multiselect(key="layers").set_value(["layer2", "layer4"]))
    upload(at, ("my_model.csv", descriptions_csv([*IMAGENET_ROWS[:2], ("fc", "dog", [0])]).encode()))
    assert not at.error
    picker = at.sidebar.multiselect(key="models")
    assert MY_MODEL in picker.options
    assert picker.value == [IMAGENET, PLACES, MY_MODEL]
    # The new model's new layer starts out selected; layer3, removed by the user, stays removed.
    assert at.sidebar.multiselect(key="layers").value == ["layer2", "layer4", "fc"]
    assert [row[:4] for row in table(at, 0)[-2:]] == [(MY_MODEL, "layer2", 6, 2),
                                                      (MY_MODEL, "fc", 1, 1)]
    at.switch_page(SHARED)
    rerun(at)
    assert at.sidebar.multiselect(key="models").value == [IMAGENET, PLACES, MY_MODEL]
    assert ((MY_MODEL, "dotted", 4, [0, 1, 2, 3])) in table(at, 0)


GOOD = descriptions_csv(IMAGENET_ROWS).encode()
BAD_FILES = {
    "wrong columns": (b"layer,neuron,label,score\nlayer2,0,dog,0.1\n", "lacks the column(s)"),
    "not a result file": (b"image,path\na.jpg,x\n", "not a result file"),
    "NetDissect without score": (b"unit,category,label\n1,scene,kitchen-s\n", "NetDissect file but lacks"),
    "non-numeric similarity": (b"layer,unit,description,similarity\nlayer2,0,dog,high\n", "is not a number"),
    "empty": (b"", "is empty"),
    "non-UTF-8": ("layer,unit,description,similarity\nlayer2,0,café,0.1\n".encode("latin-1"), "is not UTF-8"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_upload_shows_the_error_and_changes_nothing_else(case: str) -> None:
    data, message = BAD_FILES[case]
    at = open_app()
    before_models = at.sidebar.multiselect(key="models")
    before = (before_models.options, before_models.value, table(at, 0), [m.value for m in at.metric])
    upload(at, ("bad.csv", data))
    (error,) = at.sidebar.error
    assert error.value.startswith("bad\\.csv")
    assert message in error.value.replace("\\", "")  # md() escaped the punctuation
    after_models = at.sidebar.multiselect(key="models")
    assert (after_models.options, after_models.value, table(at, 0), [m.value for m in at.metric]) == before


def test_good_and_bad_upload_together() -> None:
    at = open_app()
    upload(at, ("ok.csv", GOOD), ("broken.csv", BAD_FILES["empty"][0]))
    assert len(at.sidebar.error) == 1 and at.sidebar.error[0].value.startswith("broken\\.csv is empty")
    assert at.sidebar.multiselect(key="models").value == [IMAGENET, PLACES, "ok.csv · layer2, layer3 · 14 units · uploaded"]


# --------------------------------------------------------------------------- no HTML or markdown from user data

MARKDOWN_TYPES = {"markdown", "caption", "title", "subheader", "header", "error", "warning", "info", "success"}


def rendered_markdown(at: AppTest) -> list[str]:
    """Every string Streamlit renders as markdown: markdown-like bodies and all labels."""
    texts = []
    for node in (*at.main, *at.sidebar):  # iterating a Block yields it and everything inside
        if getattr(node, "type", None) in MARKDOWN_TYPES:
            texts.append(node.value)
            assert not getattr(node.proto, "allow_html", False)
        label = getattr(node, "label", None) or getattr(getattr(node, "proto", None), "label", None)
        if isinstance(label, str):
            texts.append(label)
    return texts


def test_hostile_names_are_shown_as_literal_text() -> None:
    rows = [("layer2", HOSTILE[0], [0, 1]), ("layer2", HOSTILE[1], [2]), ("layer2", HOSTILE[2], [3]),
            ("<b>deep</b>", "dotted", [0])]
    at = open_app()
    upload(at, ("**evil**.csv", descriptions_csv(rows).encode()))
    assert not at.error
    label = "**evil**.csv · layer2, <b>deep</b> · 5 units · uploaded"
    rerun(at.sidebar.multiselect(key="models").set_value([label, IMAGENET]))

    concepts = [row[5] for row in table(at, 0)]
    assert HOSTILE[0] in concepts  # the most shared concept, shown literally in the table
    assert any(r["model"] == label for r in chart_rows(at, 0))
    rerun(at.switch_page(SHARED))
    rerun(at.slider(key="min_units").set_value(1))
    assert {row[1] for row in table(at, 0)} >= set(HOSTILE)
    shared_texts = rendered_markdown(at)
    at.switch_page(DIFFERENCES)
    rerun(at)
    rerun(at.selectbox(key="concept").select(HOSTILE[0]))
    assert table(at, -1)[0][:2] == ("layer2", 1)  # best of units 0 and 1
    for page_texts in (shared_texts, rendered_markdown(at)):
        joined = "\n".join(page_texts)
        for raw in (*HOSTILE, "<b>deep</b>", label):
            assert raw not in joined
    assert dissect_app.md(label) in "\n".join(shared_texts)
    assert r"\<b\>deep\<\/b\>" in "\n".join(shared_texts)


# --------------------------------------------------------------------------- dissect_app helpers

def test_md_escapes_markdown_and_html() -> None:
    assert dissect_app.md("**bold** [link](x) <img src=x> $x$ :red[a]") == (
        r"\*\*bold\*\* \[link\]\(x\) \<img src\=x\> \$x\$ \:red\[a\]"
    )
    assert dissect_app.md("plain text 42") == "plain text 42"


def test_default_selection_prefers_a_places_run_with_the_same_setup() -> None:
    def run(label: str, model: str, concepts: str) -> Run:
        return Run(label=label, descriptions=pd.DataFrame(), args={"target_model": model, "concept_set": concepts})

    runs = [run("x", "vgg16", "20k.txt"), run("p10", "resnet18_places", "10k.txt"),
            run("i20", "resnet18", "20k.txt"), run("p20", "resnet18_places365", "20k.txt")]
    assert dissect_app.default_selection(runs) == ["i20", "p20"]
    assert dissect_app.default_selection(runs[:2]) == ["x", "p10"]
    assert dissect_app.default_selection([]) == []


def test_cli_results_dirs() -> None:
    assert dissect_app.cli_results_dirs(["--results", "a", "--server.port", "1", "--results=b"]) == ["a", "b"]
    assert dissect_app.cli_results_dirs(["-k", "x"]) == []
    assert dissect_app.cli_results_dirs(["--results"]) == []


def test_unit_link_round_trip() -> None:
    params = dissect_app.unit_link_params("resnet18 · broden · 20k", "layer4", 7)
    assert dissect_app.parse_unit_link(params) == dissect_app.UnitLink("resnet18 · broden · 20k", "layer4", 7)
    assert dissect_app.parse_unit_link({"unit": "x"}).target == (None, None, None)
    assert dissect_app.unit_link_url("m&n", "layer4", 7) == "Unit_explorer?model=m%26n&layer=layer4&unit=7"


def test_select_after_rerun_adds_a_computed_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the Run page does after writing a run into the result folder."""
    computed = tmp_path / "computed"
    monkeypatch.setenv(dissect_app.RESULTS_ENV, str(computed))
    at = open_app()
    write_run(computed / "resnet50_26_01_01_00_00_abc123", "resnet50", IMAGENET_ROWS)
    at.session_state[dissect_app.PENDING_SELECT_KEY] = [str((computed / "resnet50_26_01_01_00_00_abc123").resolve())]
    rerun(at)
    assert at.sidebar.multiselect(key="models").value == [IMAGENET, PLACES, "resnet50 · layer2, layer3 · broden · 20k"]

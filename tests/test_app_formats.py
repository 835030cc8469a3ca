"""AppTest of other methods' result files in the app: NetDissect-Lite and MILAN labels
compared with CLIP-Dissect's, uploads of several layer files at once, files with notes."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import dissect_app

APP = dissect_app.ENTRY_SCRIPT
DIFFERENCES = dissect_app.MODEL_DIFFERENCES_PAGE
UNIT_EXPLORER = dissect_app.UNIT_EXPLORER_PAGE

CLIP = "resnet18_places_imagenet_broden · conv1–layer4 · 1,024 units"
NETDISSECT = "resnet18_places365 · fc–layer4 · NetDissect"
MILAN = "m_base_resnet18_places365 · conv1–layer4 · MILAN"


@pytest.fixture(autouse=True)
def no_result_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["streamlit_app.py"])
    monkeypatch.setenv(dissect_app.RESULTS_ENV, str(tmp_path / "no_runs_computed_yet"))
    st.cache_data.clear()


def run(target) -> AppTest:
    """Run the app (``target``: the AppTest, or a widget just changed) and check it raised nothing."""
    at = target.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def table(at: AppTest, index: int) -> list[tuple]:
    return [tuple(cell.tolist() if isinstance(cell, np.ndarray) else cell for cell in row)
            for row in at.dataframe[index].value.itertuples(index=False)]


@pytest.mark.reference
def test_shared_netdissect_and_milan_files_compare_with_clip_dissect(reference_dir: Path, monkeypatch) -> None:
    folder = reference_dir / "clip_dissect_results" / "Trustworthy-ML-Lab_CLIP-dissect"
    monkeypatch.setattr(sys, "argv", ["streamlit_app.py", "--results", str(folder)])
    at = run(AppTest.from_file(APP, default_timeout=60))
    picker = at.sidebar.multiselect(key="models")
    assert {CLIP, NETDISSECT, MILAN} <= set(picker.options)
    run(picker.set_value([CLIP, NETDISSECT, MILAN]))
    methods = {(row[0], row[6]) for row in table(at, 0)}  # the Overview says who made the labels
    assert methods == {(CLIP, "CLIP-Dissect"), (NETDISSECT, "NetDissect"), (MILAN, "MILAN")}

    at.switch_page(DIFFERENCES)
    run(at)
    run(at.selectbox(key="model_a").select(CLIP))
    run(at.selectbox(key="model_b").select(NETDISSECT))
    assert "Labels of A by CLIP-Dissect, of B by NetDissect." in at.caption[0].value.replace("\\", "")
    assert [t.label for t in at.tabs] == ["layer1", "layer4"]  # NetDissect's files: layer1, layer4, fc
    # layer, distinct in A, distinct in B, shared, Jaccard, same unit and concept
    assert [row[:4] for row in table(at, 0)] == [("layer1", 37, 24, 7), ("layer4", 317, 212, 30)]
    both_layer4 = dict((row[0], row[1:]) for row in table(at, 5))
    assert both_layer4["street"] == (6, 10)  # "street-s" in the file: the scene suffix is dropped

    run(at.selectbox(key="model_b").select(MILAN))
    assert "of B by MILAN" in at.caption[0].value.replace("\\", "")
    assert [t.label for t in at.tabs] == ["conv1", "layer1", "layer2", "layer3", "layer4"]
    assert [row[:3] for row in table(at, 0)][-1] == ("layer4", 317, 206)

    at.switch_page(UNIT_EXPLORER)
    run(at)
    run(at.sidebar.selectbox(key="unit_model").select(MILAN))
    assert "labels by MILAN, which gives no score" in at.caption[0].value.replace("\\", "")
    run(at.sidebar.selectbox(key="unit_model").select(NETDISSECT))
    assert "labels by NetDissect · IoU" in at.caption[0].value.replace("\\", "")


NETDISSECT_HEADER = "unit,category,label,score,scene-label,scene-truth,scene-activation,scene-intersect,scene-iou\n"


def test_upload_netdissect_layers_at_once_and_files_with_notes() -> None:
    at = run(AppTest.from_file(APP, default_timeout=60))
    files = [
        ("vgg_conv5.csv", (NETDISSECT_HEADER + "1,scene,kitchen-s,0.2,kitchen-s,1,2,3,0.2\n").encode()),
        ("vgg_conv4.csv", (NETDISSECT_HEADER + "1,object,car,0.1,,1,2,3,0.0\n2,scene,bar-s,0.3,,1,2,3,0.3\n").encode()),
        ("excel.csv", b"\xef\xbb\xbflayer,unit,description,similarity,top_images\nconv4,0,dog,0.5,a.jpg\n"),
    ]
    at.sidebar.file_uploader(key=dissect_app.UPLOAD_KEY).set_value([(n, d, "text/csv") for n, d in files])
    run(at)
    assert not at.sidebar.error
    picker = at.sidebar.multiselect(key="models")
    vgg, excel = "vgg · conv4, conv5 · NetDissect · uploaded", "excel.csv · conv4 · 1 unit · uploaded"
    assert picker.value == [vgg, excel]
    counts = {(row[0], row[1]): row[2] for row in table(at, 0)}
    assert counts == {(vgg, "conv4"): 2, (vgg, "conv5"): 1, (excel, "conv4"): 1}
    (notes,) = [e for e in at.sidebar.expander if "note(s)" in e.label]
    assert "excel.csv: ignored the column(s) 'top_images'." in notes.text[0].value

"""The Sweep page with many runs: every figure drawn, and two picked rows open Model differences."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import streamlit as st

import dissect_app
from test_app_pages import open_app, rerun

SWEEP = dissect_app.SWEEP_PAGE
CONCEPTS = ["red", "striped", "dog", "cat", "kitchen", "wheel", "wood", "sky"]
TEXTURES = ["banded", "dotted", "grid", "woven", "zigzagged", "marbled", "pleated"]
CHURNING_UNITS = 3  # the last layer's last units, whose labels churn


def write_checkpoint_run(folder: Path, step: int, churn: bool = False) -> None:
    """A run whose deeper layers name more concepts as training goes on; with ``churn``, the
    last units of the last layer also change label at every step, as real checkpoints' do
    (three textures appear and three vanish at each run)."""
    folder.mkdir(parents=True)
    rows = ["layer,unit,description,similarity"]
    for depth, layer in enumerate(["conv1", "conv2", "conv3"]):
        variety = 1 + min(len(CONCEPTS) - 1, (depth + 1) * step // 20)
        for unit in range(16):
            concept = CONCEPTS[unit % variety]
            if churn and depth == 2 and unit >= 16 - CHURNING_UNITS:
                concept = TEXTURES[(CHURNING_UNITS * step + unit) % len(TEXTURES)]
            rows.append(f"{layer},{unit},{concept},{0.1 * unit}")
    (folder / "descriptions.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    # One network's checkpoints, as a training sweep's runs are: same model, one checkpoint each.
    args = {"target_model": "small_cnn", "target_checkpoint": f"checkpoints/step_{step:03d}.pth"}
    (folder / "args.txt").write_text(json.dumps(args), encoding="utf-8")


def write_sweep_index(root: Path, steps: list[int], every: int = 10) -> None:
    """``sweep.json`` as ``dissect sweep`` writes it for checkpoints of a glob: the runs
    ``step_{n:03d}`` (written by :func:`write_checkpoint_run` with ``n``) in the order given,
    ``steps[position]`` being ``n``, trained for ``every * n`` steps."""
    entries = [{"position": position, "folder": f"step_{step:03d}", "name": None, "target_model": "small_cnn",
                "target_checkpoint": f"ckpt_{step}.pth", "step": step * every, "layer_rule": None,
                "layers": ["conv1", "conv2", "conv3"], "identity": str(step)}
               for position, step in enumerate(steps)]
    (root / "sweep.json").write_text(json.dumps({"format": "dissect_core-sweep/1", "runs": entries}))


@pytest.fixture
def hundred_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "sweep"
    for step in range(100):
        write_checkpoint_run(root / f"step_{step:03d}", step)
    monkeypatch.setattr(sys, "argv", ["streamlit_app.py", "--results", str(root)])
    monkeypatch.setenv(dissect_app.RESULTS_ENV, str(tmp_path / "nothing_computed"))
    st.cache_data.clear()
    return root


def test_a_hundred_runs_are_drawn_and_two_rows_open_model_differences(hundred_runs):
    at = open_app(SWEEP)
    assert "100 runs, in sweep order." in [c.value for c in at.caption]
    subheaders = [h.value for h in at.subheader]
    assert subheaders == ["Each unit's label along the sweep", "Distinct concepts by depth",
                          "Concept categories by depth", "Concepts that appear or vanish along the sweep", "Every run"]
    # One network's checkpoints: its units can be followed, a layer at a time (the last by default).
    follow = at.sidebar.selectbox(key="sweep_layer")
    assert follow.options == ["conv1", "conv2", "conv3"] and follow.value == "conv3"
    (table,) = [frame for frame in at.dataframe if "distinct_concepts" in frame.value.columns]
    assert len(table.value) == 100
    # the later the checkpoint, the more concepts: the table shows what the runs hold
    assert table.value["distinct_concepts"].iloc[-1] > table.value["distinct_concepts"].iloc[0]
    # Two rows picked in the table (as a click on their boxes sets the widget's state).
    at.session_state["sweep_table"] = {"selection": {"rows": [0, 99], "columns": [], "cells": []}}
    at = rerun(at)
    (button,) = [b for b in at.button if b.label == "Compare these two in Model differences"]
    at = rerun(button.click())
    assert [h.value for h in at.title] == ["Model differences"]
    first, last = table.value["model"].iloc[0], table.value["model"].iloc[-1]
    assert at.selectbox(key="model_a").value == first and at.selectbox(key="model_b").value == last


def test_a_sweep_folder_gives_its_order_and_training_steps(hundred_runs):
    # dissect sweep's index, listing the checkpoints from the last to the first (any order the spec gave)
    write_sweep_index(hundred_runs, list(range(99, -1, -1)))
    at = open_app(SWEEP)
    assert at.sidebar.selectbox(key="sweep_folder").value == str(hundred_runs)
    (table,) = [frame for frame in at.dataframe if "distinct_concepts" in frame.value.columns]
    assert list(table.value["step"]) == [step * 10 for step in range(99, -1, -1)]

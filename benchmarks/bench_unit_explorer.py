"""The Unit explorer per view on a computed run: stored maps against drawing live.

Computes a stand-in run with the CLI (a random ResNet-18 in the Places365 layout, a
tiny CLIP, 120 synthetic 320×256 JPEGs; layers layer2-4), which stores each unit's
top-10 maps, and a copy of it without ``maps/`` (as runs computed before maps were
stored), for which the app runs the model for every view, as every view did before.
For each, AppTest opens the Unit explorer on layer4 unit 0 (cold: imports, probe
set, first view), then presses *Next* repeatedly: every press is a view of a unit
not seen before, with 10 heatmaps and masks; the wall time of each script run is
printed (median and min over the presses), and the process's CPU time per press
(the app runs in this process), which says more on a machine shared with others.

Usage: ``.venv/bin/python benchmarks/bench_unit_explorer.py [--views 10]``
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def computed_run(root: Path) -> Path:
    """Compute a stand-in run with the CLI; returns its folder."""
    from bench_activations import make_folder  # photo-like synthetic JPEGs, shared with that benchmark
    from dissect_core.cli import main as cli
    from standins import make_tiny_clip_checkpoint, save_places_style_checkpoint

    (root / "data").mkdir(parents=True)
    save_places_style_checkpoint(root / "data" / "resnet18_places365.pth.tar")
    clip = make_tiny_clip_checkpoint(root / "clip.pt")
    make_folder(root / "probe", 120)
    (root / "concepts.txt").write_text("dog\ncat\nstripes\nsky\nwater\n")
    code = cli(["describe", "--clip_model", clip, "--target_model", "resnet18_places",
                "--target_layers", "layer2,layer3,layer4", "--d_probe", str(root / "probe"),
                "--concept_set", str(root / "concepts.txt"), "--device", "cpu", "--data_dir", str(root / "data"),
                "--activation_dir", str(root / "cache"), "--result_dir", str(root / "results"),
                "--similarity_fn", "cos_similarity", "--num_workers", "0", "--quiet"])
    assert code == 0
    return next((root / "results").iterdir())


def time_views(label: str, views: int) -> tuple[float, list[float], list[float]]:
    from streamlit.testing.v1 import AppTest

    from dissect_app.navigation import ENTRY_SCRIPT, UNIT_EXPLORER_PAGE

    at = AppTest.from_file(ENTRY_SCRIPT, default_timeout=600)
    start = time.perf_counter()
    at.run()
    at.query_params.update({"model": label, "layer": "layer4", "unit": "0"})
    at.switch_page(UNIT_EXPLORER_PAGE).run()
    cold = time.perf_counter() - start
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.tabs[0].get("image")) == 10, "the view should show 10 heatmaps"
    times, cpu = [], []
    for unit in range(1, views + 1):
        start, start_cpu = time.perf_counter(), time.process_time()
        at.button(key="unit_next").click().run()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        assert not at.exception and at.subheader[0].value.startswith(f"layer4 · unit {unit}:")
        assert len(at.tabs[0].get("image")) == 10
    return cold, times, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=10, help="Next presses (new units) per run")
    views = parser.parse_args().views
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "tests"))
    sys.argv = ["streamlit_app.py"]
    header = f"{'run':<36} {'first view s':>12} {'per view median s':>18} {'min s':>7} {'CPU median s':>13}"
    rows = []
    from dissect_core.runs.run_folders import load_run

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = computed_run(Path(tmp) / "computed")
        older = shutil.copytree(run_dir, Path(tmp) / "older" / run_dir.name)
        shutil.rmtree(older / "maps")
        for folder, name in ((run_dir, "stored maps (default)"), (older, "no stored maps: drawn live")):
            os.environ["DISSECT_RESULTS_DIR"] = str(folder.parent)
            cold, times, cpu = time_views(load_run(folder).label, views)
            rows.append(f"{name:<36} {cold:12.2f} {statistics.median(times):18.3f} {min(times):7.3f}"
                        f" {statistics.median(cpu):13.3f}")
    print(header, *rows, sep="\n")


if __name__ == "__main__":
    main()

"""Time every page of the app with AppTest.

Builds two reference-format runs of 896 units each (ResNet-18 layer2/3/4: 128, 256
and 512 units) in a temporary ``--results`` folder, opens each page once (cold:
imports, folder scan, first cache fill), then re-runs it several times with a warm
cache and prints the median wall time of one script run per page. The Unit
explorer is timed twice: on the imported CSVs (labels only), and on a run computed
by dissect_core on stand-ins (a random ResNet-18, a tiny CLIP, 120 synthetic
images; layers layer2-4), where it draws ten heatmaps and masks.

Usage: ``.venv/bin/python benchmarks/bench_app_pages.py [--repeats 7]``
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from dissect_app.navigation import ENTRY_SCRIPT, HOME_PAGE, PAGES, UNIT_EXPLORER_PAGE  # noqa: E402
LAYERS = {"layer2": (128, 68), "layer3": (256, 130), "layer4": (512, 290)}  # units, distinct concepts


def write_run(folder: Path, target_model: str, seed: int) -> None:
    """A run like the reference tool's: a few common concepts, a long tail of rare ones."""
    rng = random.Random(seed)
    vocabulary = [f"concept {i}" for i in range(2000)]
    lines = ["layer,unit,description,similarity"]
    for layer, (units, distinct) in LAYERS.items():
        pool = rng.sample(vocabulary, distinct)
        weights = [1 / (rank + 1) for rank in range(distinct)]  # Zipf-like, as real label counts are
        labels = pool + rng.choices(pool, weights, k=units - distinct)
        rng.shuffle(labels)
        lines += [f"{layer},{unit},{label},{rng.uniform(0.05, 0.8):.6f}" for unit, label in enumerate(labels)]
    folder.mkdir(parents=True)
    (folder / "descriptions.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "args.txt").write_text(json.dumps({"target_model": target_model, "d_probe": "broden",
                                                 "concept_set": "data/20k.txt"}), encoding="utf-8")


def computed_run(root: Path) -> str:
    """Compute a stand-in run with the CLI; returns its label."""
    sys.path.insert(0, str(REPO / "tests"))
    from dissect_core.cli import main as cli
    from dissect_core.runs.run_folders import load_run
    from standins import make_image_folder, make_tiny_clip_checkpoint, save_places_style_checkpoint

    (root / "data").mkdir(parents=True)
    save_places_style_checkpoint(root / "data" / "resnet18_places365.pth.tar")
    clip = make_tiny_clip_checkpoint(root / "clip.pt")
    make_image_folder(root / "probe", 120, size=(96, 96))
    (root / "concepts.txt").write_text("dog\ncat\nstripes\nsky\nwater\n")
    cli(["describe", "--clip_model", clip, "--target_model", "resnet18_places",
         "--target_layers", "layer2,layer3,layer4", "--d_probe", str(root / "probe"),
         "--concept_set", str(root / "concepts.txt"), "--device", "cpu", "--data_dir", str(root / "data"),
         "--activation_dir", str(root / "cache"), "--result_dir", str(root / "results"), "--quiet"])
    return load_run(next((root / "results").iterdir())).label


def time_page(page: str, repeats: int, query: dict | None = None) -> tuple[float, list[float]]:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(ENTRY_SCRIPT, default_timeout=300)
    start = time.perf_counter()
    at.run()
    if page != HOME_PAGE:
        at.query_params.update(query or {})
        at.switch_page(page).run()
    cold = time.perf_counter() - start
    assert not at.exception, [e.value for e in at.exception]
    warm = []
    for _ in range(repeats):
        start = time.perf_counter()
        at.run()
        warm.append(time.perf_counter() - start)
    assert not at.exception
    return cold, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="warm runs per page")
    repeats = parser.parse_args().repeats

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "results_cli"
        write_run(root / "resnet18_bench", "resnet18", seed=1)
        write_run(root / "resnet18_places_bench", "resnet18_places", seed=2)
        sys.argv = ["streamlit_app.py", "--results", str(root)]
        os.environ["DISSECT_RESULTS_DIR"] = str(Path(tmp) / "results_computed")

        print(f"{'page':<40} {'cold s':>8} {'warm median s':>14} {'warm min s':>11}")
        for page in PAGES:
            cold, warm = time_page(page.script, repeats, {"model": "resnet18 · layer2–layer4 · broden · 20k", "layer": "layer4", "unit": "7"})
            print(f"{page.title:<40} {cold:8.3f} {statistics.median(warm):14.3f} {min(warm):11.3f}")

        os.environ["DISSECT_RESULTS_DIR"] = str(Path(tmp) / "computed" / "results")
        label = computed_run(Path(tmp) / "computed")
        cold, warm = time_page(UNIT_EXPLORER_PAGE, repeats, {"model": label, "layer": "layer4", "unit": "7"})
        name = "Unit explorer, 10 heatmaps"
        print(f"{name:<40} {cold:8.3f} {statistics.median(warm):14.3f} {min(warm):11.3f}")


if __name__ == "__main__":
    main()

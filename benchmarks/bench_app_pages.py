"""Time the Overview, Shared concepts and Model differences pages with AppTest.

Builds two reference-format runs of 896 units each (ResNet-18 layer2/3/4: 128, 256
and 512 units) in a temporary ``--results`` folder, opens each page once (cold:
imports, folder scan, first cache fill), then re-runs it several times with a warm
cache and prints the median wall time of one script run per page.

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
PAGES = ("streamlit_app.py", "pages/2_Shared_concepts.py", "pages/3_Model_differences.py")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="warm runs per page")
    repeats = parser.parse_args().repeats

    sys.path.insert(0, str(REPO))
    from streamlit.testing.v1 import AppTest

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "results_cli"
        write_run(root / "resnet18_bench", "resnet18", seed=1)
        write_run(root / "resnet18_places_bench", "resnet18_places", seed=2)
        sys.argv = ["streamlit_app.py", "--results", str(root)]
        os.environ["DISSECT_RESULTS_DIR"] = str(Path(tmp) / "results_computed")

        print(f"{'page':<32} {'cold s':>8} {'warm median s':>14} {'warm min s':>11}")
        for page in PAGES:
            at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120)
            start = time.perf_counter()
            at.run()
            if page != "streamlit_app.py":
                at.switch_page(page).run()
            cold = time.perf_counter() - start
            assert not at.exception, [e.value for e in at.exception]
            assert len(at.sidebar.multiselect(key="models").value) == 2
            warm = []
            for _ in range(repeats):
                start = time.perf_counter()
                at.run()
                warm.append(time.perf_counter() - start)
            assert not at.exception
            print(f"{page:<32} {cold:8.3f} {statistics.median(warm):14.3f} {min(warm):11.3f}")


if __name__ == "__main__":
    main()

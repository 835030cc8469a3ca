"""Peak memory (RSS) of the app in hosted mode while a browser visits every page.

Serves, with ``dissect app --hosted --results DIR`` (started by ``dissect_app.local_server``):

* the two real ResNet-18 runs of the reference results (ImageNet and Places365, 896
  units each) from the reference outputs (labels only; ``python scripts/fetch_references.py``
  fetches them, and this looks where the tests do);
* a results bundle of a run computed on stand-ins (a random ResNet-18 in the Places
  layout, layers layer1-layer4 = 960 units, 120 synthetic images), imported the way a
  hosted demo ships it, so the Unit explorer draws heatmaps and masks from stored maps;
* any further folders given with ``--extra DIR`` (e.g. the built-in demo's runs).

Headless Chromium opens every page, steps through ten units of the bundled run in
the Unit explorer, and the server's peak RSS (``VmHWM`` in /proc) is printed, with
whether torch was ever loaded into the server process. Target: at most 500 MB.

Usage: ``.venv/bin/python benchmarks/bench_hosted_memory.py`` (alone on the machine: it measures memory)
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parents[1]
REFERENCE_RUNS = Path("clip_dissect_results") / "ashishsubedi_TML25_A4_27"
PAGES = [("", "Overview"), ("Shared_concepts", "Shared concepts"), ("Model_differences", "Model differences"),
         ("Unit_explorer", "Unit explorer")]


def bundled_run(scratch: Path) -> Path:
    """Compute a stand-in run with the CLI, export it as a bundle, import it into a fresh folder."""
    sys.path.insert(0, str(REPO / "tests"))
    sys.path.insert(0, str(REPO))
    from dissect_core.engine.bundle_export import export_bundle
    from dissect_core.runs.bundle_format import import_bundle
    from dissect_core.cli import main as cli
    from dissect_core.runs.run_folders import load_run
    from standins import make_image_folder, make_tiny_clip_checkpoint, save_places_style_checkpoint

    (scratch / "data").mkdir(parents=True)
    save_places_style_checkpoint(scratch / "data" / "resnet18_places365.pth.tar")
    clip = make_tiny_clip_checkpoint(scratch / "clip.pt")
    make_image_folder(scratch / "probe", 120, size=(96, 96))
    (scratch / "concepts.txt").write_text("dog\ncat\nstripes\nsky\nwater\ngrass\nroad\n")
    code = cli(["describe", "--clip_model", clip, "--target_model", "resnet18_places",
                "--target_layers", "layer1,layer2,layer3,layer4", "--d_probe", str(scratch / "probe"),
                "--concept_set", str(scratch / "concepts.txt"), "--device", "cpu", "--batch_size", "60",
                "--activation_dir", str(scratch / "cache"), "--result_dir", str(scratch / "computed"),
                "--data_dir", str(scratch / "data"), "--num_workers", "0", "--quiet"])
    assert code == 0, "the stand-in run failed"
    run_dir = next((scratch / "computed").iterdir())
    data = export_bundle([load_run(run_dir)])
    (folder,) = import_bundle(data, scratch / "served" / "bundled")
    return folder


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


def torch_loaded(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extra", action="append", default=[], help="another folder of runs to serve")
    parser.add_argument("--units", type=int, default=10, help="units to step through in the Unit explorer")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "scripts"))
    from fetch_references import find_reference_dir, not_found_message

    reference = find_reference_dir()
    if reference is None:
        raise SystemExit(f"This benchmark serves two reference runs, but {not_found_message()}.")

    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(REPO))
    from dissect_app.local_server import local_server
    from dissect_core.runs.run_folders import load_run

    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        bundled = bundled_run(scratch)
        served = scratch / "served"
        for name in ("resnet18_25_07_16_18_08", "resnet18_places_25_07_16_17_57"):
            (served / name).mkdir(parents=True)
            for file in (reference / REFERENCE_RUNS / name).iterdir():
                (served / name / file.name).write_bytes(file.read_bytes())
        env = {**os.environ, "DISSECT_HOSTED": "1", "DISSECT_RESULTS_DIR": str(scratch / "none")}
        with local_server(results=[served, *args.extra], hosted=True, cwd=REPO, env=env) as running:
            server, url = running.process, running.url
            idle = peak_rss_mb(server.pid)
            label = load_run(bundled).label
            started = time.perf_counter()
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                                     args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                for path, title in PAGES:
                    page.goto(f"{url}/{path}")
                    page.get_by_role("heading", name=title, exact=True).wait_for(timeout=120_000)
                    page.wait_for_timeout(1500)
                for unit in range(args.units):
                    page.goto(f"{url}/Unit_explorer?{urlencode({'model': label, 'layer': 'layer4', 'unit': unit})}")
                    page.get_by_role("heading", name="Unit explorer", exact=True).wait_for(timeout=120_000)
                    page.wait_for_timeout(1000)
                browser.close()
            peak = peak_rss_mb(server.pid)
            print(f"runs served: 2 reference ResNet-18 runs (896 units each), 1 bundled stand-in ResNet-18 "
                  f"(960 units, stored maps){' + ' + ', '.join(args.extra) if args.extra else ''}")
            print(f"server RSS after start: {idle:.0f} MB")
            print(f"peak server RSS after every page and {args.units} units with heatmaps: {peak:.0f} MB "
                  f"(target <= 500 MB: {'met' if peak <= 500 else 'NOT met'})")
            print(f"torch loaded in the server process: {torch_loaded(server.pid)}")
            print(f"browsing took {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()

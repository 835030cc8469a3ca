"""Memory (RSS) of the app in hosted mode before and after serving many visitors.

Serves, with ``dissect app --hosted --results DIR`` (``dissect_app.local_server``):

* two reference-format runs (``layer,unit,description,similarity``; layers layer2-layer4,
  896 units each, labels drawn from 300 made-up concepts), written in a scratch folder;
* a results bundle of a run computed on stand-ins (a random ResNet-18 in the Places
  layout, layers layer1-layer4 = 960 units, 120 synthetic images), imported the way a
  hosted demo ships it, so the Unit explorer draws heatmaps and masks from stored maps;
* any further folders given with ``--extra DIR`` (e.g. the built-in demo's runs).

Then ``--visits`` visitors (100 by default), ``--parallel`` at a time, each in a fresh
headless-Chromium page (a new Streamlit session): open every page, upload a CSV of its
own, every ``--bundle-every``-th visitor also imports the bundle (a per-session folder),
step through ``--units`` units in the Unit explorer, then leave. The server's RSS
(``VmRSS`` in /proc) is printed after start, after the first ten visits, after all of
them, and once the left sessions' time to reconnect (``server.disconnectedSessionTTL``,
set to ``--session-ttl`` s) has passed; with the peak (``VmHWM``) and whether torch was
ever loaded into the server process. Any visit that met an error fails the benchmark.

Usage: ``.venv/bin/python benchmarks/bench_hosted_memory.py [--visits 100] [--parallel 4]``
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parents[1]
PAGES = [("", "Overview"), ("Shared_concepts", "Shared concepts"), ("Model_differences", "Model differences"),
         ("Unit_explorer", "Unit explorer")]
LAYERS = {"layer2": 128, "layer3": 256, "layer4": 512}


def bundled_run(scratch: Path) -> tuple[Path, bytes]:
    """Compute a stand-in run with the CLI, export it as a bundle, import it into the served folder."""
    sys.path.insert(0, str(REPO / "tests"))
    sys.path.insert(0, str(REPO))
    from dissect_core.cli import main as cli
    from dissect_core.engine.bundle_export import export_bundle
    from dissect_core.runs.bundle_format import import_bundle
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
    data = export_bundle([load_run(next((scratch / "computed").iterdir()))])
    (folder,) = import_bundle(data, scratch / "served" / "bundled")
    return folder, data


def reference_format_run(folder: Path, seed: int) -> None:
    """A descriptions.csv as the reference tool writes it, with made-up labels."""
    rng = random.Random(seed)
    concepts = [f"concept{index}" for index in range(300)]
    lines = ["layer,unit,description,similarity"]
    for layer, units in LAYERS.items():
        lines += [f"{layer},{unit},{rng.choice(concepts)},{rng.uniform(1, 12):.4f}" for unit in range(units)]
    folder.mkdir(parents=True)
    (folder / "descriptions.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc status")


def torch_loaded(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


WAIT_MS = 300_000  # a script run on a loaded machine
RESENT: list[int] = []  # visits whose CSV upload had to be sent twice


async def settled(page) -> None:
    """Wait until the session's script run has finished (connected, script not running)."""
    await page.wait_for_timeout(300)  # a widget's rerun may not have started yet
    await page.locator("[data-testid='stApp'][data-test-connection-state='CONNECTED']"
                       "[data-test-script-state='notRunning']").wait_for(state="attached", timeout=WAIT_MS)


async def visit(browser, url: str, number: int, args, label: str, bundle: Path, upload: Path) -> None:
    """One visitor in a fresh page (a new session): every page, an upload, units, maybe a bundle."""
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        for path, title in PAGES:
            await page.goto(f"{url}/{path}")
            await page.get_by_role("heading", name=title, exact=True).wait_for(timeout=WAIT_MS)
            await settled(page)
        sidebar = page.get_by_test_id("stSidebar")
        for attempt in range(2):
            await sidebar.get_by_test_id("stFileUploader").filter(has_text="Result files").locator(
                "input[type='file']").set_input_files(str(upload))
            try:
                await page.get_by_text(f"{upload.name} ·", exact=False).first.wait_for(state="attached",
                                                                                       timeout=60_000)
                break
            except PlaywrightTimeout:
                if attempt:
                    raise
                RESENT.append(number)  # the upload did not reach the app: send it again, and say so
        await settled(page)
        if number % args.bundle_every == 0:
            await sidebar.get_by_test_id("stFileUploader").filter(has_text="results bundle").locator(
                "input[type='file']").set_input_files(str(bundle))
            await settled(page)
        for unit in range(args.units):
            await page.goto(f"{url}/Unit_explorer?{urlencode({'model': label, 'layer': 'layer4', 'unit': unit})}")
            await page.get_by_role("heading", name="Unit explorer", exact=True).wait_for(timeout=WAIT_MS)
            await settled(page)
        errors = await page.get_by_test_id("stException").count()
        if errors:
            raise RuntimeError(f"visit {number} met an exception on the page")
    except Exception:
        if args.failed_screenshots:
            await page.screenshot(path=f"{args.failed_screenshots}/visit_{number}.png", full_page=True)
        raise
    finally:
        await page.close()


async def serve_visits(url: str, pid: int, args, label: str, bundle: Path, upload: Path) -> dict[str, float]:
    from playwright.async_api import async_playwright

    readings = {}
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        limit = asyncio.Semaphore(args.parallel)
        done = 0

        async def one(number: int) -> None:
            nonlocal done
            async with limit:
                await visit(browser, url, number, args, label, bundle, upload)
            done += 1
            if done == 10 and args.visits > 10:
                readings["after 10 visits"] = rss_mb(pid)

        await asyncio.gather(*(one(number) for number in range(1, args.visits + 1)))
        await browser.close()
    return readings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extra", action="append", default=[], help="another folder of runs to serve")
    parser.add_argument("--visits", type=int, default=100, help="visitors to serve")
    parser.add_argument("--parallel", type=int, default=4, help="visitors at a time")
    parser.add_argument("--units", type=int, default=2, help="units each visitor opens in the Unit explorer")
    parser.add_argument("--bundle-every", type=int, default=5, help="every n-th visitor imports the bundle")
    parser.add_argument("--session-ttl", type=int, default=30,
                        help="seconds a left session is kept for a reconnect (server.disconnectedSessionTTL)")
    parser.add_argument("--failed-screenshots", help="a folder for a screenshot of each failed visit")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))
    from dissect_core.runs.run_folders import load_run
    from dissect_app.local_server import local_server

    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        bundled, data = bundled_run(scratch)
        bundle = scratch / "shared_runs.zip"
        bundle.write_bytes(data)
        served = scratch / "served"
        reference_format_run(served / "resnet18_25_07_16_18_08", seed=0)
        reference_format_run(served / "resnet18_places_25_07_16_17_57", seed=1)
        upload = scratch / "visitor_run.csv"
        reference_format_run(scratch / "visitor", seed=2)
        (scratch / "visitor" / "descriptions.csv").rename(upload)
        # Streamlit reads its options from STREAMLIT_* variables too: the TTL of left sessions.
        env = {**os.environ, "DISSECT_HOSTED": "1", "DISSECT_RESULTS_DIR": str(scratch / "none"),
               "STREAMLIT_SERVER_DISCONNECTED_SESSION_TTL": str(args.session_ttl)}
        with local_server(results=[served, *args.extra], hosted=True, cwd=REPO, env=env) as running:
            server, url = running.process, running.url
            time.sleep(10)  # the server's warm-up thread (dissect_app.warm_up)
            before = rss_mb(server.pid)
            started = time.perf_counter()
            readings = asyncio.run(serve_visits(url, server.pid, args, load_run(bundled).label, bundle, upload))
            took = time.perf_counter() - started
            after = rss_mb(server.pid)
            time.sleep(args.session_ttl + 15)
            # Streamlit drops expired sessions lazily, when its session storage is next used: one more visitor.
            asyncio.run(serve_visits(url, server.pid, argparse.Namespace(**{**vars(args), "visits": 1, "units": 0}),
                                     load_run(bundled).label, bundle, upload))
            settled = rss_mb(server.pid)
            print(f"runs served: 2 reference-format ResNet-18 runs (896 units each), 1 bundled stand-in "
                  f"ResNet-18 (960 units, stored maps){' + ' + ', '.join(args.extra) if args.extra else ''}")
            print(f"visits: {args.visits}, {args.parallel} at a time, each: {len(PAGES)} pages, a CSV upload, "
                  f"{args.units} units; every {args.bundle_every}th also imports the bundle; all without an error "
                  f"({took:.0f} s)")
            print(f"CSV uploads sent twice (the first did not show within 60 s): {len(RESENT)} {RESENT}")
            print(f"server RSS after start and warm-up: {before:.0f} MB")
            for what, value in readings.items():
                print(f"server RSS {what}: {value:.0f} MB")
            print(f"server RSS after {args.visits} visits: {after:.0f} MB")
            print(f"server RSS {args.session_ttl + 15} s later, after one more visit (left sessions expired): "
                  f"{settled:.0f} MB")
            print(f"peak server RSS: {rss_mb(server.pid, 'VmHWM'):.0f} MB")
            print(f"torch loaded in the server process: {torch_loaded(server.pid)}")


if __name__ == "__main__":
    main()

"""Build the built-in demo (dissect_core/demo_data/) from Fashion-MNIST.

    apt-get install dataset-fashion-mnist      # Debian's copy of the data set (MIT)
    python scripts/build_demo.py               # alone on the machine: it times itself

Seeded, on the CPU, in a few minutes: trains ``small_cnn`` on the Fashion-MNIST
training images on one thread (so that a rebuild on the same CPU gives the same
weights), saving ten checkpoints from the initial weights to the end, spaced
geometrically in training steps (concepts form early); picks a probe subset of the
test images (never trained on); dissects the first checkpoint ("untrained") and the
last ("trained") through the project's own pipeline with the labelled-probe concept
source (concepts = the ten class names), and every checkpoint as a sweep
(``dissect sweep``, the training sweep); and writes the committed artefacts: the
checkpoints, the probe images, the data set's licence, the two runs with each unit's
thumbnails and activation maps (bundle layout, so the app shows heatmaps and masks
without torch), the sweep's runs (one shared folder of thumbnails, no maps) and
``demo.json`` with the measured figures. Users never run this: ``python -m
dissect_core demo OUT`` re-runs the pipeline on the committed files. ``--redissect``
rewrites only the runs, from the committed checkpoints and probe images (seconds): the
way to bring the committed runs up to a pipeline that writes more.
"""
from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout, without installing the package

from dissect_core.runs import demo_runs as demo  # noqa: E402
from dissect_core.engine import demo_build  # noqa: E402
from dissect_core.engine import small_cnn  # noqa: E402
from dissect_core.engine.bundle_export import export_bundle  # noqa: E402
from dissect_core.runs.bundle_format import import_bundle  # noqa: E402
from dissect_core.runs.run_folders import LABELS_FILE, MAPS_DIR, THUMBNAILS_DIR, VIEWS_FILE  # noqa: E402
from dissect_core.runs.sweep_index import SWEEP_FILE  # noqa: E402

DEBIAN_DATA = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
LICENCE_NOTICE = """\
The probe images in fashion-mnist/ are a subset of the Fashion-MNIST test set, and
the weights in weights/ were trained on its training set.

Fashion-MNIST: https://github.com/zalandoresearch/fashion-mnist
Copyright (c) 2017 Zalando SE, https://tech.zalando.com
Taken from the Debian package dataset-fashion-mnist (Debian packaging (c) 2019-2020 Mo Zhou).

The MIT License (MIT)

Permission is hereby granted, free of charge, to any person obtaining a copy of this
software and associated documentation files (the "Software"), to deal in the Software
without restriction, including without limitation the rights to use, copy, modify,
merge, publish, distribute, sublicense, and/or sell copies of the Software, and to
permit persons to whom the Software is furnished to do so, subject to the following
conditions:

The above copyright notice and this permission notice shall be included in all copies
or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED,
INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A
PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT
HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF
CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE
OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file (the MNIST format): big-endian magic, dimension sizes, then uint8 data."""
    data = gzip.decompress(path.read_bytes())
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise ValueError(f"{path} is not an IDX file of the expected kind (magic {found}, expected {magic})")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(magic & 0xFF)]
    offset = 4 + 4 * len(dims)
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def load_split(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = FILES[split]
    return read_idx(data_dir / images, 2051), read_idx(data_dir / labels, 2049)


def as_inputs(images: np.ndarray) -> torch.Tensor:
    """uint8 N×28×28 → the normalised N×1×28×28 tensors ``small_cnn.preprocess`` makes of the PNGs."""
    return ((torch.from_numpy(images.astype(np.float32)) / 255 - small_cnn.MEAN) / small_cnn.STD)[:, None]


BATCH_SIZE = 128
CHECKPOINTS = 10  # saved during training, the initial weights and the last included


def training_steps(n_images: int, epochs: int) -> int:
    return epochs * ((n_images + BATCH_SIZE - 1) // BATCH_SIZE)


def checkpoint_steps(total: int, count: int = CHECKPOINTS) -> list[int]:
    """Step 0, then steps spaced geometrically up to ``total`` (0, 1, 2, 5, 10, 22, 47, 101,
    218, 470 for 470): a network's units change most in its first steps."""
    return sorted({0, total, *(round(total ** (i / (count - 2))) for i in range(count - 1))})


def train(model: nn.Module, images: np.ndarray, labels: np.ndarray, epochs: int, seed: int,
          save: Callable[[int, nn.Module], None]) -> list[float]:
    """Plain Adam training; ``save(step, model)`` at each of :func:`checkpoint_steps` (step 0
    before any). Returns the mean training loss per epoch."""
    generator = torch.Generator().manual_seed(seed)
    inputs, targets = as_inputs(images), torch.from_numpy(labels.astype(np.int64))
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    steps = training_steps(len(inputs), epochs)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=4e-3, total_steps=steps)
    saved_at = set(checkpoint_steps(steps))
    save(0, model)
    step, losses = 0, []
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        total = 0.0
        for start in range(0, len(order), BATCH_SIZE):
            batch = order[start:start + BATCH_SIZE]
            loss = nn.functional.cross_entropy(model(inputs[batch]), targets[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            step += 1
            total += float(loss.detach()) * len(batch)
            if step in saved_at:
                save(step, model)
        losses.append(total / len(order))
    model.eval()
    return losses


@torch.inference_mode()
def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    model.eval()
    inputs = as_inputs(images)
    predicted = torch.cat([model(inputs[i:i + 1000]).argmax(1) for i in range(0, len(inputs), 1000)])
    return float((predicted.numpy() == labels).mean())


def pick_probe(labels: np.ndarray, per_class: int, seed: int) -> list[int]:
    """``per_class`` test images of every class, seeded, in index order."""
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False)
              for c in range(len(demo.CLASSES))]
    return sorted(int(i) for i in np.concatenate(picked))


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def build(data_dir: Path, out: Path, *, epochs: int, train_images: int, per_class: int, width: int,
          seed: int, log=print) -> dict:
    started = time.perf_counter()
    torch.manual_seed(seed)
    train_x, train_y = load_split(data_dir, "train")
    test_x, test_y = load_split(data_dir, "test")
    if train_images < len(train_x):
        keep = np.sort(np.random.default_rng(seed).choice(len(train_x), size=train_images, replace=False))
        train_x, train_y = train_x[keep], train_y[keep]

    if out.exists():
        shutil.rmtree(out)
    (out / demo.WEIGHTS_DIR).mkdir(parents=True)
    model = small_cnn.SmallCNN(num_classes=len(demo.CLASSES), width=width)
    checkpoint_accuracy = {}

    def save(step: int, network: nn.Module) -> None:
        torch.save(network.state_dict(), out / demo.WEIGHTS_DIR / demo.checkpoint_name(step))
        checkpoint_accuracy[step] = accuracy(network, test_x, test_y)
        network.train()

    log(f"training small_cnn (width {width}) on {len(train_x)} images for {epochs} epoch(s)")
    # One thread: several sum the gradients in an order that varies from run to run.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        losses = train(model, train_x, train_y, epochs, seed, save)
    finally:
        torch.set_num_threads(threads)
    steps = sorted(checkpoint_accuracy)
    figures = {
        "train_accuracy": accuracy(model, train_x, train_y),
        "test_accuracy": {"trained": checkpoint_accuracy[steps[-1]], "untrained": checkpoint_accuracy[0]},
        "test_accuracy_by_step": {str(step): checkpoint_accuracy[step] for step in steps},
        "train_loss_per_epoch": losses,
        "train_seconds": round(time.perf_counter() - started, 1),
    }
    log(f"test accuracy: trained {figures['test_accuracy']['trained']:.4f}, "
        f"untrained {figures['test_accuracy']['untrained']:.4f}")

    probe_indices = pick_probe(test_y, per_class, seed)
    for index in probe_indices:
        folder = out / demo.PROBE_DIR / demo.CLASSES[int(test_y[index])]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(test_x[index], mode="L").save(folder / f"{index:05d}.png", optimize=True)
    (out / demo.LICENCE_FILE).write_text(LICENCE_NOTICE, encoding="utf-8")
    (out / demo.CLASSES_FILE).write_text("\n".join(demo.CLASSES) + "\n", encoding="utf-8")

    figures["dissect_seconds"] = write_runs(out)
    figures["build_seconds"] = round(time.perf_counter() - started, 1)
    log(f"built in {figures['build_seconds']:.0f} s")
    info = {
        "title": demo.TITLE,
        "dataset": "Fashion-MNIST (Zalando SE, MIT licence; Debian package dataset-fashion-mnist)",
        "seed": seed, "epochs": epochs, "train_images": int(len(train_x)), "width": width,
        "batch_size": BATCH_SIZE, "checkpoint_steps": steps,
        "probe_images": len(probe_indices), "probe_per_class": per_class,
        "layers": list(demo.LAYERS), "figures": figures,
    }
    return write_info(out, info, log)


def write_runs(out: Path) -> float:
    """Dissect the first and last checkpoints in ``out`` over its probe images and write
    the runs (bundle layout, with the label-quality files) to ``out/runs``, then every
    checkpoint as the training sweep into ``out/training``; returns the dissection's seconds."""
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        dissect_started = time.perf_counter()
        results = demo_build.dissect(out, scratch)
        sweep = demo_build.dissect_sweep(out, scratch)
        seconds = round(time.perf_counter() - dissect_started, 1)
        prefixes = (str(out.resolve()), str(scratch.resolve()))
        shutil.rmtree(out / demo.RUNS_DIR, ignore_errors=True)
        for key, folder in zip(demo.MODELS, _bundled([result.run for result in results], scratch / "runs")):
            _move_into(folder, out / demo.RUNS_DIR / key, prefixes)

        shutil.rmtree(out / demo.SWEEP_DIR, ignore_errors=True)
        runs = [item.run for item in sweep.runs]
        for item, folder in zip(sweep.runs, _bundled(runs, scratch / "sweep")):
            _move_into(folder, out / demo.SWEEP_DIR / item.entry.folder, prefixes)
        _share_thumbnails(out / demo.SWEEP_DIR, [out / demo.SWEEP_DIR / item.entry.folder for item in sweep.runs])
        # The index only: its spec names this machine's folders (python -m dissect_core demo OUT
        # writes one for OUT).
        index = (scratch / demo.SWEEP_DIR / SWEEP_FILE).read_text(encoding="utf-8")
        (out / demo.SWEEP_DIR / SWEEP_FILE).write_text(_relative(index, prefixes), encoding="utf-8")
    return seconds


def _bundled(runs: list, scratch: Path) -> list[Path]:
    """The runs as a results bundle holds them (thumbnails and maps of each unit's top images),
    unpacked under ``scratch``."""
    bundle = export_bundle(runs, images_per_unit=demo.IMAGES_PER_UNIT, thumbnail_px=small_cnn.IMAGE_SIZE)
    return import_bundle(bundle, scratch)


def _move_into(folder: Path, final: Path, prefixes: tuple[str, ...]) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(folder), final)
    for name in ("manifest.json", "args.txt"):
        path = final / name
        if path.is_file():
            path.write_text(_relative(path.read_text(encoding="utf-8"), prefixes), encoding="utf-8")


def _relative(text: str, prefixes: tuple[str, ...]) -> str:
    """Drop the build machine's folders from a file's text: paths become relative to demo_data."""
    for prefix in prefixes:
        text = text.replace(prefix.rstrip("/") + "/", "").replace(prefix.rstrip("/"), ".")
    return text


def _share_thumbnails(sweep_dir: Path, run_dirs: list[Path]) -> None:
    """One folder of thumbnails for the whole sweep (its runs show the same probe images) and
    no activation maps: no page of a sweep shows them, and ten runs' maps would not fit the
    demo's size."""
    shared = sweep_dir / THUMBNAILS_DIR
    shared.mkdir()
    names: dict[str, str] = {}
    views = None
    for run_dir in run_dirs:
        own = run_dir / THUMBNAILS_DIR
        names.update(json.loads((own / LABELS_FILE).read_text(encoding="utf-8")))
        views = views or (own / VIEWS_FILE).read_text(encoding="utf-8")
        for thumbnail in own.glob("*.jpg"):
            if not (shared / thumbnail.name).exists():
                shutil.move(str(thumbnail), shared / thumbnail.name)
        shutil.rmtree(own)
        shutil.rmtree(run_dir / MAPS_DIR, ignore_errors=True)
    (shared / LABELS_FILE).write_text(json.dumps(names, sort_keys=True), encoding="utf-8")
    (shared / VIEWS_FILE).write_text(views, encoding="utf-8")


def write_info(out: Path, info: dict, log=print) -> dict:
    """``demo.json`` with ``info`` and the folder's final size."""
    info = {key: value for key, value in info.items() if key != "size_bytes"}
    (out / demo.INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    info["size_bytes"] = folder_size(out)
    (out / demo.INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    log(f"wrote {out} ({info['size_bytes'] / 1e6:.2f} MB)")
    return info


def redissect(out: Path, log=print) -> dict:
    """Rewrite only the runs of an existing demo folder, from its committed checkpoints and
    probe images: for a pipeline that now writes more (label-quality files, say). Training
    on a multi-threaded CPU is not bit-for-bit repeatable, so this keeps the shipped
    weights, and with them the labels; ``demo.json`` keeps its training figures."""
    started = time.perf_counter()
    info = demo.demo_info(out)
    info["figures"]["dissect_seconds"] = write_runs(out)
    info["figures"]["redissect_seconds"] = round(time.perf_counter() - started, 1)
    log(f"re-dissected the runs in {out} in {info['figures']['redissect_seconds']:.0f} s")
    return write_info(out, info, log)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEBIAN_DATA, help="folder of the four Fashion-MNIST .gz files")
    parser.add_argument("--out", type=Path, default=demo.DEMO_DIR)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train_images", type=int, default=30_000,
                        help="a seeded subset of the 60,000 training images (keeps the build to minutes)")
    parser.add_argument("--probe_per_class", type=int, default=100)
    parser.add_argument("--width", type=int, default=16, help="channels of conv1 (conv2 and conv3 have 2× and 4×)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (1 is fastest on a busy 2-core machine)")
    parser.add_argument("--redissect", action="store_true",
                        help="keep the checkpoints and probe images in --out; only rewrite its runs")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.redissect:
        redissect(args.out)
        return 0
    build(args.data, args.out, epochs=args.epochs, train_images=args.train_images,
          per_class=args.probe_per_class, width=args.width, seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Build the built-in demo (dissect_core/demo_data/) from Fashion-MNIST.

    apt-get install dataset-fashion-mnist      # Debian's copy of the data set (MIT)
    python scripts/build_demo.py               # alone on the machine: it times itself

Seeded, on the CPU, in a few minutes: trains ``small_cnn`` on the Fashion-MNIST
training images, keeps the same network at its initial (untrained) weights as the
honest counterpart, picks a probe subset of the test images (never trained on),
dissects both networks through the project's own pipeline with the labelled-probe
concept source (concepts = the ten class names), and writes the committed artefacts:
the two checkpoints, the probe images, the data set's licence, the runs with each
unit's thumbnails and activation maps (bundle layout, so the app shows heatmaps and
masks without torch) and ``demo.json`` with the measured figures. Users never run
this: ``python -m dissect_core demo OUT`` re-runs the pipeline on the committed files.
``--redissect`` rewrites only the runs, from the committed checkpoints and probe images
(seconds): the way to bring the committed runs up to a pipeline that writes more.
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


def train(model: nn.Module, images: np.ndarray, labels: np.ndarray, epochs: int, seed: int,
          batch_size: int = 128) -> list[float]:
    """Plain Adam training; returns the mean training loss per epoch."""
    generator = torch.Generator().manual_seed(seed)
    inputs, targets = as_inputs(images), torch.from_numpy(labels.astype(np.int64))
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    steps = epochs * ((len(inputs) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=4e-3, total_steps=steps)
    losses = []
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        total = 0.0
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            loss = nn.functional.cross_entropy(model(inputs[batch]), targets[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(batch)
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

    model = small_cnn.SmallCNN(num_classes=len(demo.CLASSES), width=width)
    untrained = {key: value.clone() for key, value in model.state_dict().items()}
    log(f"training small_cnn (width {width}) on {len(train_x)} images for {epochs} epoch(s)")
    losses = train(model, train_x, train_y, epochs, seed)
    fresh = small_cnn.SmallCNN(num_classes=len(demo.CLASSES), width=width)
    fresh.load_state_dict(untrained)
    figures = {
        "train_accuracy": accuracy(model, train_x, train_y),
        "test_accuracy": {"trained": accuracy(model, test_x, test_y), "untrained": accuracy(fresh, test_x, test_y)},
        "train_loss_per_epoch": losses,
        "train_seconds": round(time.perf_counter() - started, 1),
    }
    log(f"test accuracy: trained {figures['test_accuracy']['trained']:.4f}, "
        f"untrained {figures['test_accuracy']['untrained']:.4f}")

    if out.exists():
        shutil.rmtree(out)
    (out / demo.WEIGHTS_DIR).mkdir(parents=True)
    torch.save(model.state_dict(), out / demo.WEIGHTS_DIR / demo.MODELS["trained"].checkpoint)
    torch.save(untrained, out / demo.WEIGHTS_DIR / demo.MODELS["untrained"].checkpoint)
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
        "probe_images": len(probe_indices), "probe_per_class": per_class,
        "layers": list(demo.LAYERS), "figures": figures,
    }
    return write_info(out, info, log)


def write_runs(out: Path) -> float:
    """Dissect both checkpoints in ``out`` over its probe images and write the runs (bundle
    layout, with the label-quality files) to ``out/runs``; returns the dissection's seconds."""
    with tempfile.TemporaryDirectory() as scratch:
        dissect_started = time.perf_counter()
        results = demo_build.dissect(out, Path(scratch))
        seconds = round(time.perf_counter() - dissect_started, 1)
        bundle = export_bundle([result.run for result in results], images_per_unit=demo.IMAGES_PER_UNIT,
                               thumbnail_px=small_cnn.IMAGE_SIZE)
        shutil.rmtree(out / demo.RUNS_DIR, ignore_errors=True)
        for key, folder in zip(demo.MODELS, import_bundle(bundle, Path(scratch) / "imported")):
            final = out / demo.RUNS_DIR / key
            final.parent.mkdir(exist_ok=True)
            shutil.move(str(folder), final)
            _relative_paths(final, (str(out.resolve()), str(Path(scratch).resolve())))
    return seconds


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


def _relative_paths(run_dir: Path, prefixes: tuple[str, ...]) -> None:
    """Drop the build machine's folders from a run's files: paths become relative to demo_data."""
    for name in ("manifest.json", "args.txt"):
        path = run_dir / name
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            for prefix in prefixes:
                text = text.replace(prefix.rstrip("/") + "/", "").replace(prefix.rstrip("/"), ".")
            path.write_text(text, encoding="utf-8")


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

"""Stand-ins for weights and data sets that cannot be downloaded in tests.

Each builder writes files in the real on-disk layout, so the code under test takes
its real loading path (the same one it takes with the genuine files), just with
small random weights or synthetic images:

* ``save_places_style_checkpoint``: a CSAIL Places365-style ``.pth.tar`` (legacy
  serialisation, ``module.``-prefixed ``state_dict`` entry).
* ``place_torchvision_weights``: random ImageNet weights where torchvision's hub
  cache keeps them (point ``TORCH_HOME`` at a temporary folder first).
* ``make_tiny_clip_checkpoint``: random weights for the tiny open_clip config
  ``tiny-test-clip`` (tests/clip_configs/tiny-test-clip.json), registered on use.
* ``place_in_hf_cache``: a file in a Hugging Face hub cache layout.
* ``make_image_folder`` / ``add_corrupt_files``: synthetic JPEG/PNG images in class
  subfolders, and broken files next to them.
* ``make_cifar100_standin``: tiny CIFAR-100 pickles in torchvision's layout.
"""
from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Sequence

import numpy as np
import open_clip
import torch
import torchvision
from PIL import Image

TINY_CLIP_ARCH = "tiny-test-clip"
CLIP_CONFIG_DIR = Path(__file__).resolve().parent / "clip_configs"


def save_places_style_checkpoint(path: Path | str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Write a random ``resnet18(num_classes=365)`` the way CSAIL's Places365 zoo stores it.

    Returns the state_dict (without the prefix) for comparison.
    """
    torch.manual_seed(seed)
    state = torchvision.models.resnet18(weights=None, num_classes=365).state_dict()
    checkpoint = {
        "epoch": 90,
        "arch": "resnet18",
        "best_prec1": 54.74,
        "state_dict": {f"module.{key}": value for key, value in state.items()},
    }
    # The real file predates the zip format (PyTorch 0.2), so use the legacy format too.
    torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    return state


def place_torchvision_weights(name: str = "resnet18", seed: int = 0) -> tuple[Path, dict[str, torch.Tensor]]:
    """Write random ``IMAGENET1K_V1``-shaped weights to torchvision's cache file for ``name``.

    The file goes to ``torch.hub.get_dir()/checkpoints/<basename of the weights URL>``,
    exactly where torchvision would download it; set ``TORCH_HOME`` to a temporary
    folder before calling.
    """
    weights = torchvision.models.get_model_weights(name).IMAGENET1K_V1
    torch.manual_seed(seed)
    state = torchvision.models.get_model(name, weights=None, num_classes=len(weights.meta["categories"])).state_dict()
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path, state


def register_tiny_clip() -> str:
    """Make open_clip know the ``tiny-test-clip`` architecture; returns its name."""
    if TINY_CLIP_ARCH not in open_clip.list_models():
        open_clip.add_model_config(CLIP_CONFIG_DIR)
    return TINY_CLIP_ARCH


def make_tiny_clip_checkpoint(path: Path | str, seed: int = 0) -> str:
    """Save random weights of the tiny CLIP (ViT width 64, 2 layers, 64 px; embed_dim 32).

    Returns the CLIP name ``"tiny-test-clip:/abs/path"`` for ``load_clip``.
    """
    register_tiny_clip()
    torch.manual_seed(seed)
    model = open_clip.create_model(TINY_CLIP_ARCH)
    path = Path(path).resolve()
    torch.save(model.state_dict(), path)
    return f"{TINY_CLIP_ARCH}:{path}"


def place_in_hf_cache(cache_dir: Path | str, repo_id: str, filename: str, source: Path | str) -> Path:
    """Copy ``source`` into a Hugging Face hub cache as ``repo_id``'s ``filename`` at ``main``."""
    commit = "0" * 40
    repo_dir = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    target = repo_dir / "snapshots" / commit / filename
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(Path(source).read_bytes())
    return target


def make_image_folder(
    root: Path | str,
    n: int,
    size: tuple[int, int] = (64, 64),
    seed: int = 0,
    classes: Sequence[str] = ("cat", "dog"),
) -> list[Path]:
    """Write ``n`` random-noise images into class subfolders, alternating JPEG and PNG."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    paths = []
    for i in range(n):
        folder = root / classes[i % len(classes)]
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        path = folder / f"img_{i:03d}.{'jpg' if i % 2 == 0 else 'png'}"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def add_corrupt_files(folder: Path | str, seed: int = 1) -> list[Path]:
    """Add a truncated JPEG and a text file named ``.jpg`` to ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    full = folder / "_whole.jpg"
    pixels = np.random.default_rng(seed).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(full, quality=95)
    data = full.read_bytes()
    full.unlink()
    truncated = folder / "zz_truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    text = folder / "zz_not_an_image.jpg"
    text.write_text("this is not a JPEG\n")
    return [truncated, text]


def make_cifar100_standin(data_dir: Path | str, n_train: int = 12, n_test: int = 6, seed: int = 0) -> Path:
    """Write tiny ``cifar-100-python/{train,test,meta}`` pickles as torchvision reads them.

    torchvision checks the real files' MD5 sums, so tests also call
    ``accept_cifar100_standin(monkeypatch, folder)``.
    """
    rng = np.random.default_rng(seed)
    folder = Path(data_dir) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, count in (("train", n_train), ("test", n_test)):
        entry = {
            "data": rng.integers(0, 256, size=(count, 3 * 32 * 32), dtype=np.uint8),
            "fine_labels": [int(x) for x in rng.integers(0, 100, size=count)],
        }
        with open(folder / name, "wb") as handle:
            pickle.dump(entry, handle)
    with open(folder / "meta", "wb") as handle:
        pickle.dump({"fine_label_names": [f"class{i}" for i in range(100)]}, handle)
    return folder


def accept_cifar100_standin(monkeypatch, folder: Path) -> None:
    """Give torchvision's CIFAR100 the stand-in's MD5 sums in place of the real files'
    (its public ``train_list``, ``test_list`` and ``meta``), so torchvision's own
    integrity check runs, and passes, on the stand-in."""
    from torchvision.datasets import CIFAR100

    def md5(name: str) -> str:
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    monkeypatch.setattr(CIFAR100, "train_list", [["train", md5("train")]])
    monkeypatch.setattr(CIFAR100, "test_list", [["test", md5("test")]])
    monkeypatch.setattr(CIFAR100, "meta", {**CIFAR100.meta, "md5": md5(CIFAR100.meta["filename"])})

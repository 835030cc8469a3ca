"""Probe sets: order, fingerprints, corrupt files, Broden/CIFAR/ImageNet layouts, offline failures."""
from __future__ import annotations

import json
import os
import time
import zipfile
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import torchvision
from PIL import Image
from torchvision import transforms as T
from torchvision.datasets import CIFAR100

from dissect_core.engine import downloads
from dissect_core.engine import datasets
from dissect_core.engine import gpu_decoding
from dissect_core.engine import probe_loading
from dissect_core.engine import probe_sets
from dissect_core.engine import small_cnn
from dissect_core.choices.catalog import DECODERS
from dissect_core.common.errors import InvalidInputError, MissingResourceError
from dissect_core.engine.models import places_preprocess
from dissect_core.engine.gpu_decoding import device_probe_loader, tensor_preprocess
from dissect_core.engine.probe_loading import ProbeDataset, collate_probe_batch, probe_loader
from dissect_core.engine.probe_sets import (
    broden,
    cifar100,
    download_dataset,
    image_folder,
    imagenet_val,
    open_probe,
    open_probe_spec,
)
from standins import accept_cifar100_standin, add_corrupt_files, make_cifar100_standin, make_image_folder

TO_TENSOR = {"a": T.Compose([T.Resize((32, 32)), T.ToTensor()]), "b": T.Compose([T.Resize((16, 16)), T.ToTensor()])}


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr(downloads, "is_reachable", lambda *a, **k: False)


def _make_broden(data_dir: Path, n: int = 4) -> Path:
    images = data_dir / "broden1_224" / "images"
    make_image_folder(images, n, classes=("ade20k", "dtd"))
    for jpg in list(images.rglob("*.png")):  # Broden images are JPEGs; PNGs there are masks
        jpg.rename(jpg.with_suffix(".jpg"))
    Image.new("RGB", (8, 8)).save(images / "ade20k" / "img_000_object.png")  # a segmentation mask
    (data_dir / "broden1_224" / "index.csv").write_text("image,split\n")
    return images


def test_folder_order_matches_torchvision_imagefolder(tmp_path):
    make_image_folder(tmp_path, 6, classes=("a", "a-b", "B"))
    make_image_folder(tmp_path / "a" / "sub", 2, seed=3, classes=("x",))
    (tmp_path / "a" / "UPPER.JPG").write_bytes((tmp_path / "a" / "img_000.jpg").read_bytes())
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    probe = image_folder(tmp_path)
    reference = torchvision.datasets.ImageFolder(str(tmp_path))
    assert [probe.item_label(i) for i in range(len(probe))] == [
        Path(path).relative_to(tmp_path).as_posix() for path, _ in reference.samples
    ]
    assert "a/UPPER.JPG" in [probe.item_label(i) for i in range(len(probe))]
    assert len(probe) == 9 and probe.root == tmp_path.resolve()


def test_fingerprint_stable_and_content_sensitive(tmp_path):
    paths = make_image_folder(tmp_path, 4)
    first = image_folder(tmp_path).fingerprint
    os.utime(paths[0], (1, 1))  # a new timestamp alone is not a change
    assert image_folder(tmp_path).fingerprint == first
    Image.new("RGB", (200, 100), "red").save(paths[1])  # same name, different size
    resized = image_folder(tmp_path).fingerprint
    assert resized != first
    make_image_folder(tmp_path / "new", 1)
    assert image_folder(tmp_path).fingerprint not in (first, resized)


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(MissingResourceError, match="nowhere"):
        image_folder(tmp_path / "nowhere")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "readme.txt").write_text("x")
    with pytest.raises(InvalidInputError) as info:
        image_folder(tmp_path / "empty")
    assert ".jpg" in str(info.value) and ".png" in str(info.value)


def test_load_image_rgb_and_corrupt_files_raise(tmp_path):
    make_image_folder(tmp_path, 2, size=(40, 30))
    Image.new("L", (10, 10)).save(tmp_path / "cat" / "gray.png")
    add_corrupt_files(tmp_path / "cat")
    probe = image_folder(tmp_path)
    labels = [probe.item_label(i) for i in range(len(probe))]
    image = probe.load_image(labels.index("cat/img_000.jpg"))
    assert image.mode == "RGB" and image.size == (40, 30)
    assert probe.load_image(labels.index("cat/gray.png")).mode == "RGB"
    for name in ("cat/zz_truncated.jpg", "cat/zz_not_an_image.jpg"):
        with pytest.raises(InvalidInputError, match=name):
            probe.load_image(labels.index(name))


def test_dataset_decodes_once_and_yields_none_for_corrupt(tmp_path, monkeypatch):
    make_image_folder(tmp_path, 3)
    add_corrupt_files(tmp_path / "dog")
    probe = image_folder(tmp_path)
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    dataset = ProbeDataset(probe, TO_TENSOR)
    items = [dataset[i] for i in range(len(dataset))]
    assert len(opened) == len(probe)  # one decode per image for both transforms
    bad = {probe.item_label(i) for i, tensors in items if tensors is None}
    assert bad == {"dog/zz_truncated.jpg", "dog/zz_not_an_image.jpg"}
    good = next(t for _, t in items if t is not None)
    assert good["a"].shape == (3, 32, 32) and good["b"].shape == (3, 16, 16)


def test_collate_and_loader_report_skipped(tmp_path):
    make_image_folder(tmp_path, 4)
    add_corrupt_files(tmp_path / "dog")
    probe = image_folder(tmp_path)
    batches = list(probe_loader(probe, TO_TENSOR, batch_size=4, num_workers=0))
    indices = torch.cat([b.indices for b in batches]).tolist()
    skipped = [i for b in batches for i in b.skipped]
    assert sorted(indices + skipped) == list(range(len(probe)))
    assert indices == sorted(indices)
    assert {probe.item_label(i) for i in skipped} == {"dog/zz_truncated.jpg", "dog/zz_not_an_image.jpg"}
    for batch in batches:
        if len(batch.indices):
            assert batch.tensors["a"].shape == (len(batch.indices), 3, 32, 32)
    empty = collate_probe_batch([(0, None), (1, None)])
    assert empty.indices.tolist() == [] and empty.tensors == {} and empty.skipped == [0, 1]


def test_loader_with_a_worker_process(tmp_path):
    make_image_folder(tmp_path, 3)
    batches = list(probe_loader(image_folder(tmp_path), TO_TENSOR, batch_size=2, num_workers=1))
    assert [b.indices.tolist() for b in batches] == [[0, 1], [2]]


@pytest.mark.parametrize("cores, workers", [(1, 1), (2, 1), (16, 15), (64, 16)])
def test_decode_workers_follow_the_cores_this_process_may_use(monkeypatch, cores, workers):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert probe_loading.default_num_workers() == workers


def test_batches_are_pinned_for_a_gpu_only(tmp_path):
    make_image_folder(tmp_path, 2)
    probe = image_folder(tmp_path)
    assert not probe_loader(probe, TO_TENSOR, batch_size=2, num_workers=0, device=torch.device("cpu")).pin_memory
    assert probe_loader(probe, TO_TENSOR, batch_size=2, num_workers=0, device=torch.device("cuda")).pin_memory


def test_broden_lists_jpgs_only_and_reopens_from_spec(tmp_path):
    images = _make_broden(tmp_path / "data")
    probe = broden(tmp_path / "data")
    labels = [probe.item_label(i) for i in range(len(probe))]
    assert labels == ["ade20k/img_000.jpg", "ade20k/img_002.jpg", "dtd/img_001.jpg", "dtd/img_003.jpg"]
    assert probe.name == "broden" and probe.root == images.resolve()
    again = open_probe_spec(json.loads(json.dumps(probe.spec)), expected_fingerprint=probe.fingerprint)
    assert again.fingerprint == probe.fingerprint and len(again) == 4


def test_broden_missing_says_how_to_get_it(tmp_path, offline):
    with pytest.raises(MissingResourceError) as info:
        open_probe("broden", data_dir=tmp_path / "data")
    message = str(info.value)
    assert "python -m dissect_core download broden" in message and datasets.BRODEN_URL in message
    assert str(tmp_path / "data" / "broden1_224" / "images") in message
    start = time.perf_counter()
    with pytest.raises(MissingResourceError) as info:
        broden(tmp_path / "data", download=True)
    assert time.perf_counter() - start < 5
    assert "broden1_224.zip" in str(info.value) and datasets.BRODEN_URL in str(info.value)


def test_broden_unpacks_jpgs_and_csvs_from_the_zip(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with zipfile.ZipFile(data_dir / "broden1_224.zip", "w") as archive:
        for name in ("ade20k/a.jpg", "ade20k/b.jpg", "dtd/c.jpg"):
            Image.new("RGB", (8, 8)).save(tmp_path / "x.jpg")
            archive.write(tmp_path / "x.jpg", f"broden1_224/images/{name}")
        archive.writestr("broden1_224/images/ade20k/a_object.png", b"mask")
        archive.writestr("broden1_224/index.csv", "image\n")
        archive.writestr("broden1_224/readme.txt", "text")
    monkeypatch.setattr(downloads, "is_reachable", lambda *a, **k: pytest.fail("network was checked"))
    calls = []
    root = download_dataset("broden", data_dir, progress=lambda *a: calls.append(a))
    assert root == (data_dir / "broden1_224" / "images").resolve()
    files = sorted(p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*") if p.is_file())
    assert files == [
        "broden1_224/images/ade20k/a.jpg",
        "broden1_224/images/ade20k/b.jpg",
        "broden1_224/images/dtd/c.jpg",
        "broden1_224/index.csv",
    ]
    assert ("unpack broden1_224.zip", 4, 4) in calls


def test_cifar100_through_torchvision(tmp_path, monkeypatch):
    accept_cifar100_standin(monkeypatch, make_cifar100_standin(tmp_path, n_train=12, n_test=6))
    train = open_probe("cifar100_train", data_dir=tmp_path)
    val = cifar100(tmp_path, train=False, download=False)
    assert (len(train), len(val)) == (12, 6)
    assert train.name == "cifar100_train" and train.item_label(3) == "cifar100 train #3"
    image = train.load_image(3)
    assert image.mode == "RGB" and image.size == (32, 32)
    assert train.fingerprint != val.fingerprint
    assert open_probe_spec(train.spec).fingerprint == train.fingerprint


def test_cifar100_offline_fails_fast(tmp_path, offline):
    with pytest.raises(MissingResourceError, match="cifar-100-python"):
        cifar100(tmp_path, train=True, download=False)
    start = time.perf_counter()
    with pytest.raises(MissingResourceError) as info:
        cifar100(tmp_path, train=True, download=True)
    assert time.perf_counter() - start < 5
    assert CIFAR100.url in str(info.value) and str(tmp_path / CIFAR100.filename) in str(info.value)


def test_imagenet_val_needs_a_class_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(probe_sets.IMAGENET_VAL_ENV, raising=False)
    with pytest.raises(MissingResourceError) as info:
        open_probe("imagenet_val")
    assert "`imagenet_val_dir`" in str(info.value) and "DISSECT_IMAGENET_VAL" in str(info.value)
    flat = tmp_path / "flat"
    make_image_folder(flat, 2, classes=(".",))
    with pytest.raises(InvalidInputError, match="one subfolder per class"):
        imagenet_val(flat)
    make_image_folder(tmp_path / "val", 4, classes=("n01440764", "n01443537"))
    monkeypatch.setenv(probe_sets.IMAGENET_VAL_ENV, str(tmp_path / "val"))
    probe = open_probe("imagenet_val")
    assert len(probe) == 4 and probe.item_label(0) == "n01440764/img_000.jpg"


def test_imagenet_broden_puts_imagenet_first(tmp_path):
    make_image_folder(tmp_path / "val", 3, classes=("n01440764",))
    _make_broden(tmp_path / "data", n=2)
    probe = open_probe("imagenet_broden", data_dir=tmp_path / "data", imagenet_val_dir=tmp_path / "val")
    assert [probe.item_label(i) for i in range(len(probe))] == [
        "imagenet_val/n01440764/img_000.jpg",
        "imagenet_val/n01440764/img_001.png",
        "imagenet_val/n01440764/img_002.jpg",
        "broden/ade20k/img_000.jpg",
        "broden/dtd/img_001.jpg",
    ]
    assert probe.load_image(4).mode == "RGB"
    assert [part["kind"] for part in probe.spec["parts"]] == ["imagenet_val", "broden"]
    assert open_probe_spec(json.loads(json.dumps(probe.spec))).fingerprint == probe.fingerprint


def test_open_probe_names_paths_and_changed_sets(tmp_path):
    make_image_folder(tmp_path / "mine", 2)
    probe = open_probe(str(tmp_path / "mine"))
    assert probe.name == "mine" and probe.spec == {"kind": "folder", "root": str((tmp_path / "mine").resolve())}
    with pytest.raises(InvalidInputError) as info:
        open_probe("brodn")
    assert "broden" in str(info.value) and "cifar100_val" in str(info.value)
    with pytest.raises(MissingResourceError):
        open_probe(str(tmp_path / "missing"))
    make_image_folder(tmp_path / "mine" / "more", 1)
    with pytest.raises(InvalidInputError, match="changed"):
        open_probe_spec(probe.spec, expected_fingerprint=probe.fingerprint)
    with pytest.raises(InvalidInputError):
        download_dataset("imagenet_val", tmp_path)


# ----------------------------------------------------------------------------- decoding on the device


def _smooth_jpegs(folder: Path, n: int, seed: int = 0) -> None:
    """Photo-like JPEGs (smooth waves plus grain) of different sizes: what resizing meets in practice."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        width, height = int(rng.integers(120, 300)), int(rng.integers(120, 300))
        yy, xx = np.mgrid[0:height, 0:width]
        waves = np.stack([np.sin(xx / rng.uniform(5, 40) + c) * np.cos(yy / rng.uniform(5, 40)) for c in range(3)], -1)
        pixels = (127 + 100 * waves + rng.normal(0, 10, waves.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"photo_{i:02d}.jpg", quality=90)


def _model_transforms() -> dict:
    """Every kind of preprocessing the project's models use."""
    return {
        "places": places_preprocess(),  # Resize 256, CenterCrop 224, ToTensor, Normalize
        "preset": torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms(),  # ImageClassification
        "small_cnn": small_cnn.preprocess(),  # Grayscale first
        "clip": open_clip.image_transform(64, is_train=False),  # bicubic, open_clip's RGB conversion
    }


def test_device_decoder_agrees_with_pillow(tmp_path):
    """decode_jpeg on the CPU takes the device path's code; other files take Pillow's path unchanged."""
    _smooth_jpegs(tmp_path / "photos", 6)
    make_image_folder(tmp_path, 4, size=(96, 80))  # noise JPEGs and PNGs
    add_corrupt_files(tmp_path / "dog")
    Image.fromarray(np.full((70, 90, 3), 200, np.uint8)).convert("CMYK").save(tmp_path / "cat" / "cmyk.jpg")
    probe = image_folder(tmp_path)
    transforms = _model_transforms()
    pillow = list(probe_loader(probe, transforms, batch_size=5, num_workers=0))
    device = list(device_probe_loader(probe, transforms, batch_size=5, num_workers=0, device="cpu"))

    assert [b.indices.tolist() for b in device] == [b.indices.tolist() for b in pillow]
    assert [b.skipped for b in device] == [b.skipped for b in pillow]
    assert {probe.item_label(i) for b in device for i in b.skipped} == {"dog/zz_truncated.jpg",
                                                                        "dog/zz_not_an_image.jpg"}
    order = torch.cat([b.indices for b in pillow]).tolist()
    jpeg = torch.tensor([probe.read_jpeg(i) is not None for i in order])
    assert jpeg.sum() == 8 and not jpeg.all()  # the PNGs and the CMYK JPEG take Pillow's path
    for key, transform in transforms.items():
        expected = torch.cat([b.tensors[key] for b in pillow])
        actual = torch.cat([b.tensors[key] for b in device])
        assert actual.shape == expected.shape and actual.dtype == expected.dtype
        assert torch.equal(actual[~jpeg], expected[~jpeg])
        std = torch.tensor(transform.std if hasattr(transform, "std") else transform.transforms[-1].std)
        steps = ((actual[jpeg] - expected[jpeg]) * std.view(1, -1, 1, 1) * 255).abs()  # in 1/255 of a pixel
        # torchvision's and Pillow's JPEG decoders differ by one step on about a fifth of the values,
        # grayscale conversion rounds differently (one more step), and bicubic resizing of tensors
        # and Pillow's fixed-point filter differ by a few steps near sharp edges.
        assert steps.mean() < 0.6
        assert steps.max() <= (12 if key == "clip" else 2.01)


def test_device_decoder_decodes_each_batch_in_one_call(tmp_path, monkeypatch):
    _smooth_jpegs(tmp_path / "a", 5)
    add_corrupt_files(tmp_path / "a")
    calls = []
    real = gpu_decoding.decode_jpeg
    monkeypatch.setattr(gpu_decoding, "decode_jpeg", lambda data, **kw: calls.append(kw["device"]) or real(data, **kw))
    probe = image_folder(tmp_path)
    batches = list(device_probe_loader(probe, TO_TENSOR, batch_size=7, num_workers=1))
    assert [b.indices.tolist() for b in batches] == [[0, 1, 2, 3, 4]]
    assert batches[0].skipped == [5, 6]
    # One batched call; the truncated JPEG fails it, so its 6 JPEGs are then decoded one by one.
    assert calls == [torch.device("cpu")] * 7
    assert batches[0].tensors["a"].shape == (5, 3, 32, 32)


def test_device_decoder_refuses_a_step_it_cannot_convert(tmp_path):
    make_image_folder(tmp_path, 2)
    jitter = {"x": T.Compose([T.Resize(32), T.ColorJitter(0.5), T.ToTensor()])}
    with pytest.raises(InvalidInputError, match="ColorJitter.*'pil' decoder"):
        device_probe_loader(image_folder(tmp_path), jitter, batch_size=2, num_workers=0)
    with pytest.raises(InvalidInputError, match="has no tensor version"):
        tensor_preprocess(lambda image: torch.zeros(3))


def test_decoders_are_registered():
    assert DECODERS.names() == ["pil", "torchvision"]
    assert DECODERS.get("pil").value.resolve() is probe_loader

"""Probe image sets: the images every neuron's activations are recorded on.

A :class:`ProbeSet` is a fixed, ordered list of images with

* a JSON-serialisable ``spec`` that :func:`open_probe_spec` turns back into the same
  set later (the app uses it to show a unit's top images),
* a content ``fingerprint`` (relative file names and sizes, or the CIFAR files and
  split) that cache keys use instead of a name, so a changed folder never reuses
  stale activations.

The order of folder-based sets is exactly torchvision ``ImageFolder``'s (classes
sorted, then ``sorted(os.walk(...))``, then file names), so image indices agree with
the reference. :class:`ProbeDataset` decodes each image once for all models, and
unreadable files come back as ``None`` and are reported as skipped, never a crash.
"""
from __future__ import annotations

import bisect
import hashlib
import os
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Optional, Protocol, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import CIFAR100
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.datasets.utils import check_integrity, extract_archive

from .downloads import download_file, manual_fix
from .errors import InvalidInputError, MissingResourceError
from .progress import ProgressFn, report

PROBE_NAMES = ("broden", "cifar100_train", "cifar100_val", "imagenet_val", "imagenet_broden")
IMAGENET_VAL_ENV = "DISSECT_IMAGENET_VAL"
BRODEN_URL = "http://netdissect.csail.mit.edu/data/broden1_224.zip"
BRODEN_DIR = "broden1_224"
CIFAR_DIR = "cifar-100-python"

# What reading an image can raise for a damaged, truncated or non-image file.
_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


class _Source(Protocol):
    def __len__(self) -> int: ...

    def load(self, index: int) -> Image.Image: ...

    def label(self, index: int) -> str: ...


class _FileList:
    """Image files under ``root``, by relative POSIX path."""

    def __init__(self, root: Path, relpaths: list[str]):
        self.root = root
        self.relpaths = relpaths

    def __len__(self) -> int:
        return len(self.relpaths)

    def load(self, index: int) -> Image.Image:
        with Image.open(self.root / self.relpaths[index]) as image:
            return image.convert("RGB")  # forces the full decode inside the with-block

    def label(self, index: int) -> str:
        return self.relpaths[index]


class _CifarImages:
    """The in-memory uint8 images of one CIFAR-100 split."""

    def __init__(self, dataset: CIFAR100, split: str):
        self.data = dataset.data
        self.split = split

    def __len__(self) -> int:
        return len(self.data)

    def load(self, index: int) -> Image.Image:
        return Image.fromarray(self.data[index]).convert("RGB")

    def label(self, index: int) -> str:
        return f"cifar100 {self.split} #{index}"


class _Concat:
    """Several sources one after another, labelled with their set's name."""

    def __init__(self, parts: Sequence[tuple[str, _Source]]):
        self.parts = list(parts)
        self.ends: list[int] = []
        total = 0
        for _, source in self.parts:
            total += len(source)
            self.ends.append(total)

    def __len__(self) -> int:
        return self.ends[-1] if self.ends else 0

    def _locate(self, index: int) -> tuple[str, _Source, int]:
        part = bisect.bisect_right(self.ends, index)
        start = self.ends[part - 1] if part else 0
        name, source = self.parts[part]
        return name, source, index - start

    def load(self, index: int) -> Image.Image:
        _, source, local = self._locate(index)
        return source.load(local)

    def label(self, index: int) -> str:
        name, source, local = self._locate(index)
        return f"{name}/{source.label(local)}"


@dataclass
class ProbeSet:
    """An ordered probe image set."""

    name: str
    spec: dict  # JSON-serialisable; open_probe_spec(spec) reopens the set
    fingerprint: str  # sha256 hex over the content listing
    root: Path
    _source: _Source = field(repr=False, compare=False)

    def __len__(self) -> int:
        return len(self._source)

    def load_image(self, index: int) -> Image.Image:
        """Image ``index`` as RGB; InvalidInputError naming the file if it cannot be read."""
        if not 0 <= index < len(self):
            raise IndexError(f"probe image index {index} is outside 0..{len(self) - 1}")
        try:
            return self._source.load(index)
        except _IMAGE_ERRORS as exc:
            raise InvalidInputError(f"Cannot read probe image {self.item_label(index)}: {exc}") from exc

    def item_label(self, index: int) -> str:
        """A short, stable label of image ``index``: its relative path or 'cifar100 train #123'."""
        return self._source.label(index)


# ----------------------------------------------------------------------------- folders


def _imagefolder_key(relpath: str) -> tuple[str, str, str]:
    """Sort key reproducing ImageFolder's order: class, then walk directory, then file name."""
    parts = relpath.split("/")
    return (parts[0] if len(parts) > 1 else "", "/".join(parts[:-1]), parts[-1])


def _list_images(root: Path, extensions: tuple[str, ...], class_subfolders_only: bool) -> list[str]:
    """Relative POSIX paths of the files under ``root`` with one of ``extensions`` (any case)."""
    found = []
    for dirpath, _, filenames in os.walk(root, followlinks=True):
        rel_dir = Path(dirpath).relative_to(root)
        if class_subfolders_only and rel_dir == Path("."):
            continue  # ImageFolder ignores files directly in the root
        found.extend((rel_dir / f).as_posix() for f in filenames if f.lower().endswith(extensions))
    return sorted(found, key=_imagefolder_key)


def _listing_fingerprint(root: Path, relpaths: list[str]) -> str:
    digest = hashlib.sha256()
    for rel in relpaths:
        digest.update(f"{rel}\t{(root / rel).stat().st_size}\n".encode("utf-8"))
    return digest.hexdigest()


def _file_probe(name: str, spec: dict, root: Path, relpaths: list[str]) -> ProbeSet:
    return ProbeSet(name, spec, _listing_fingerprint(root, relpaths), root, _FileList(root, relpaths))


def image_folder(root: str | Path) -> ProbeSet:
    """All images under ``root`` (searched recursively), in ImageFolder order."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise MissingResourceError(
            f"The image folder {root.name}",
            looked_in=str(root),
            how_to_fix="Give an existing folder of images (subfolders are searched too).",
        )
    relpaths = _list_images(root, IMG_EXTENSIONS, class_subfolders_only=False)
    if not relpaths:
        raise InvalidInputError(
            f"No images found in {root} or its subfolders (looked for the extensions "
            f"{', '.join(IMG_EXTENSIONS)}, in any letter case)."
        )
    return _file_probe(root.name, {"kind": "folder", "root": str(root)}, root, relpaths)


def imagenet_val(root: str | Path | None = None) -> ProbeSet:
    """The ImageNet validation images in one subfolder per class (ImageFolder layout).

    ``root`` defaults to the ``DISSECT_IMAGENET_VAL`` environment variable. ImageNet
    needs a licence, so it is never downloaded.
    """
    fix = (
        "ImageNet cannot be downloaded automatically (it needs a licence from image-net.org). "
        "Pass the folder holding the 50,000 validation images, one subfolder per class "
        f"(n01440764/, …), with --imagenet_val_dir or the environment variable {IMAGENET_VAL_ENV}."
    )
    root = root or os.environ.get(IMAGENET_VAL_ENV)
    if not root:
        raise MissingResourceError(
            "The ImageNet validation images",
            looked_in=f"--imagenet_val_dir and ${IMAGENET_VAL_ENV} (neither is set)",
            how_to_fix=fix,
        )
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise MissingResourceError("The ImageNet validation images", looked_in=str(root), how_to_fix=fix)
    relpaths = _list_images(root, IMG_EXTENSIONS, class_subfolders_only=True)
    if not relpaths:
        raise InvalidInputError(
            f"No images in class subfolders of {root}. The ImageNet validation set must be laid "
            "out one subfolder per class (n01440764/ILSVRC2012_val_00000293.JPEG, …), as "
            "torchvision ImageFolder expects; a flat folder must be sorted into classes first."
        )
    return _file_probe("imagenet_val", {"kind": "imagenet_val", "root": str(root)}, root, relpaths)


# ----------------------------------------------------------------------------- Broden


def _broden_fix(data_dir: Path) -> str:
    return (
        f"Get it with `python -m dissect_core download broden --data_dir {data_dir}` (about 1 GB), or download "
        f"{BRODEN_URL} and unzip it into {data_dir} so that {data_dir / BRODEN_DIR / 'images'} exists."
    )


def broden(
    data_dir: str | Path = "data", download: bool = False, progress: Optional[ProgressFn] = None
) -> ProbeSet:
    """The Broden1_224 images (``{data_dir}/broden1_224/images/*/*.jpg``; 63,305 in the full set).

    Only ``.jpg`` files are listed: the ``.png`` segmentation masks next to them (which
    the reference deletes after unzipping) never enter the probe set.
    """
    data_dir = Path(data_dir).expanduser().resolve()
    images = data_dir / BRODEN_DIR / "images"
    if not images.is_dir():
        if not download:
            raise MissingResourceError(
                f"The Broden probe set ({BRODEN_DIR})", looked_in=str(images), how_to_fix=_broden_fix(data_dir)
            )
        _download_broden(data_dir, progress)
    relpaths = _list_images(images, (".jpg",), class_subfolders_only=True)
    if not relpaths:
        raise InvalidInputError(
            f"{images} holds no .jpg images in its subfolders (ade20k/, dtd/, …). Delete "
            f"{data_dir / BRODEN_DIR} and fetch it again. {_broden_fix(data_dir)}"
        )
    return _file_probe("broden", {"kind": "broden", "data_dir": str(data_dir)}, images, relpaths)


def _download_broden(data_dir: Path, progress: Optional[ProgressFn]) -> None:
    """Download broden1_224.zip and unpack its .jpg and .csv files into ``data_dir``."""
    archive = download_file(
        BRODEN_URL,
        data_dir / f"{BRODEN_DIR}.zip",
        what=f"The Broden probe set archive ({BRODEN_DIR}.zip, about 1 GB)",
        how_to_fix="The next download run unpacks it; or unzip it into that folder yourself.",
        progress=progress,
    )
    target = data_dir / BRODEN_DIR
    # Unpack into a staging folder and move it into place at the end, so an
    # interrupted unpack never looks like a complete (but smaller) probe set.
    staging = data_dir / f".{BRODEN_DIR}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    stage = f"unpack {archive.name}"
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = [
                m for m in zipped.infolist() if not m.is_dir() and m.filename.lower().endswith((".jpg", ".csv"))
            ]
            for done, member in enumerate(members, 1):
                parts = PurePosixPath(member.filename).parts
                if parts and parts[0] == BRODEN_DIR:
                    parts = parts[1:]
                if not parts or ".." in parts or member.filename.startswith("/"):
                    raise InvalidInputError(f"{archive} contains an unsafe path {member.filename!r}.")
                out = staging.joinpath(*parts)
                out.parent.mkdir(parents=True, exist_ok=True)
                with zipped.open(member) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                report(progress, stage, done, len(members))
    except zipfile.BadZipFile as exc:
        shutil.rmtree(staging, ignore_errors=True)
        archive.unlink()
        raise MissingResourceError(
            f"The Broden probe set archive ({archive.name})",
            looked_in=str(archive),
            how_to_fix=f"The archive was damaged ({exc}) and has been deleted; download it again. "
            + _broden_fix(data_dir),
        ) from exc
    target.mkdir(parents=True, exist_ok=True)
    for child in staging.iterdir():
        dest = target / child.name
        if dest.is_dir():
            shutil.rmtree(dest)
        os.replace(child, dest)
    staging.rmdir()
    archive.unlink()  # 1 GB that is no longer needed


# ----------------------------------------------------------------------------- CIFAR-100


def _cifar_fix(data_dir: Path) -> str:
    return manual_fix(
        CIFAR100.url,
        data_dir / CIFAR100.filename,
        f"Then unpack it there (tar xzf {CIFAR100.filename}) so that {data_dir / CIFAR_DIR} exists, "
        "or pass --download to fetch it automatically.",
    )


def _download_cifar100(data_dir: Path, progress: Optional[ProgressFn]) -> None:
    archive = download_file(
        CIFAR100.url,
        data_dir / CIFAR100.filename,
        what=f"The CIFAR-100 archive ({CIFAR100.filename}, 161 MB)",
        how_to_fix=f"It is unpacked into {data_dir / CIFAR_DIR} on the next run.",
        progress=progress,
    )
    if not check_integrity(str(archive), CIFAR100.tgz_md5):
        archive.unlink()
        raise MissingResourceError(
            f"The CIFAR-100 archive ({CIFAR100.filename})",
            looked_in=str(archive),
            how_to_fix="It failed its MD5 check and has been deleted; download it again. " + _cifar_fix(data_dir),
        )
    extract_archive(str(archive), str(data_dir))


def cifar100(
    data_dir: str | Path = "data",
    train: bool = False,
    download: bool = True,
    progress: Optional[ProgressFn] = None,
) -> ProbeSet:
    """The CIFAR-100 train (50,000) or test (10,000, ``cifar100_val``) images, via torchvision."""
    data_dir = Path(data_dir).expanduser().resolve()
    folder = data_dir / CIFAR_DIR
    what = f"The CIFAR-100 data set ({CIFAR_DIR})"
    if not folder.is_dir():
        if not download:
            raise MissingResourceError(what, looked_in=str(folder), how_to_fix=_cifar_fix(data_dir))
        _download_cifar100(data_dir, progress)
    try:
        dataset = CIFAR100(str(data_dir), train=train, download=False)
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted."
        raise MissingResourceError(
            what,
            looked_in=str(folder),
            how_to_fix=f"Its files are incomplete or damaged ({exc}); delete {folder} and fetch it again. "
            + _cifar_fix(data_dir),
        ) from exc
    split = "train" if train else "val"
    digest = hashlib.sha256(f"cifar100 {split}\n".encode())
    files = [entry[0] for entry in CIFAR100.train_list + CIFAR100.test_list] + [CIFAR100.meta["filename"]]
    for name in sorted(files):
        digest.update(f"{name}\t{(folder / name).stat().st_size}\n".encode())
    spec = {"kind": "cifar100", "data_dir": str(data_dir), "train": train}
    return ProbeSet(f"cifar100_{split}", spec, digest.hexdigest(), folder, _CifarImages(dataset, split))


# ----------------------------------------------------------------------------- by name


def imagenet_broden(
    imagenet_val_dir: str | Path | None = None,
    data_dir: str | Path = "data",
    download: bool = False,
    progress: Optional[ProgressFn] = None,
) -> ProbeSet:
    """ImageNet validation images followed by Broden, in the reference's order."""
    parts = [imagenet_val(imagenet_val_dir), broden(data_dir, download, progress)]
    digest = hashlib.sha256("".join(f"{p.name}:{p.fingerprint}\n" for p in parts).encode())
    return ProbeSet(
        "imagenet_broden",
        {"kind": "imagenet_broden", "parts": [p.spec for p in parts]},
        digest.hexdigest(),
        parts[0].root,
        _Concat([(p.name, p._source) for p in parts]),
    )


def open_probe(
    name_or_path: str,
    *,
    data_dir: str | Path = "data",
    imagenet_val_dir: str | Path | None = None,
    download: bool = False,
    progress: Optional[ProgressFn] = None,
) -> ProbeSet:
    """A probe set by CLI name (``broden``, ``cifar100_train``, …) or an image folder path."""
    key = name_or_path.strip()
    if key == "broden":
        return broden(data_dir, download, progress)
    if key in ("cifar100_train", "cifar100_val"):
        return cifar100(data_dir, train=key == "cifar100_train", download=download, progress=progress)
    if key == "imagenet_val":
        return imagenet_val(imagenet_val_dir)
    if key == "imagenet_broden":
        return imagenet_broden(imagenet_val_dir, data_dir, download, progress)
    path = Path(key).expanduser()
    if path.is_dir() or os.sep in key or "/" in key or key.startswith((".", "~")):
        return image_folder(path)  # a missing folder raises MissingResourceError naming it
    raise InvalidInputError(
        f"Unknown probe set {key!r}: use one of {', '.join(PROBE_NAMES)}, or the path of a folder of images."
    )


def open_probe_spec(spec: dict, expected_fingerprint: Optional[str] = None) -> ProbeSet:
    """Reopen the set described by ``ProbeSet.spec`` (never downloads).

    With ``expected_fingerprint`` (e.g. stored with a run), a set whose files changed
    since is refused, because its image indices would no longer match.
    """
    kind = spec.get("kind")
    if kind == "folder":
        probe = image_folder(spec["root"])
    elif kind == "broden":
        probe = broden(spec["data_dir"])
    elif kind == "cifar100":
        probe = cifar100(spec["data_dir"], train=bool(spec["train"]), download=False)
    elif kind == "imagenet_val":
        probe = imagenet_val(spec["root"])
    elif kind == "imagenet_broden":
        imagenet_spec, broden_spec = spec["parts"]
        probe = imagenet_broden(imagenet_spec["root"], broden_spec["data_dir"])
    else:
        raise InvalidInputError(f"Unknown probe spec kind {kind!r} in {spec}.")
    if expected_fingerprint and probe.fingerprint != expected_fingerprint:
        raise InvalidInputError(
            f"The probe images of {probe.name} ({probe.root}) changed since the run was made "
            "(files added, removed or resized), so its image indices no longer match."
        )
    return probe


def download_dataset(name: str, data_dir: str | Path = "data", progress: Optional[ProgressFn] = None) -> Path:
    """Download a probe set for later offline use; returns its folder (for the CLI)."""
    if name == "broden":
        return broden(data_dir, download=True, progress=progress).root
    if name in ("cifar100", "cifar100_train", "cifar100_val"):
        return cifar100(data_dir, train=True, download=True, progress=progress).root
    raise InvalidInputError(
        f"Cannot download {name!r}: only broden and cifar100 can be downloaded "
        "(ImageNet needs a licence; pass its folder instead)."
    )


# ----------------------------------------------------------------------------- loading


class ProbeDataset(Dataset):
    """Probe images, each decoded once and passed through every transform.

    Item ``i`` is ``(i, {key: tensor})``, or ``(i, None)`` when the file cannot be read.
    """

    def __init__(self, probe: ProbeSet, transforms: dict[str, Callable[[Image.Image], torch.Tensor]]):
        self.probe = probe
        self.transforms = dict(transforms)

    def __len__(self) -> int:
        return len(self.probe)

    def __getitem__(self, index: int) -> tuple[int, Optional[dict[str, torch.Tensor]]]:
        try:
            image = self.probe.load_image(index)
        except InvalidInputError:
            return index, None
        return index, {key: transform(image) for key, transform in self.transforms.items()}


@dataclass
class ProbeBatch:
    """A collated batch: the readable images' indices and tensors, and the skipped indices."""

    indices: torch.Tensor  # LongTensor of the images in ``tensors``, in order
    tensors: dict[str, torch.Tensor]  # one (B, …) tensor per transform key; {} if all were skipped
    skipped: list[int]

    def pin_memory(self) -> "ProbeBatch":
        # DataLoader(pin_memory=True) calls this on custom batch types.
        return ProbeBatch(self.indices.pin_memory(), {k: v.pin_memory() for k, v in self.tensors.items()}, self.skipped)


def collate_probe_batch(items: Sequence[tuple[int, Optional[dict[str, torch.Tensor]]]]) -> ProbeBatch:
    good = [(index, tensors) for index, tensors in items if tensors is not None]
    skipped = [index for index, tensors in items if tensors is None]
    indices = torch.tensor([index for index, _ in good], dtype=torch.long)
    stacked = {key: torch.stack([tensors[key] for _, tensors in good]) for key in good[0][1]} if good else {}
    return ProbeBatch(indices, stacked, skipped)


def default_num_workers() -> int:
    """Decode workers: all cores but one (the main process runs the models), at most 8."""
    return min(8, max(1, (os.cpu_count() or 2) - 1))


def probe_loader(
    probe: ProbeSet,
    transforms: dict[str, Callable[[Image.Image], torch.Tensor]],
    batch_size: int,
    num_workers: Optional[int] = None,
) -> DataLoader:
    """Batches of :class:`ProbeBatch` over the probe set, in order."""
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be at least 1, not {batch_size}.")
    return DataLoader(
        ProbeDataset(probe, transforms),
        batch_size=batch_size,
        shuffle=False,
        num_workers=default_num_workers() if num_workers is None else num_workers,
        collate_fn=collate_probe_batch,
        pin_memory=torch.cuda.is_available(),
    )

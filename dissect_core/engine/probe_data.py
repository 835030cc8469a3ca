"""Probe image sets: the images every neuron's activations are recorded on.

A :class:`ProbeSet` is a fixed, ordered list of images with

* a JSON-serialisable ``spec`` that :func:`open_probe_spec` turns back into the same
  set later (the app uses it to show a unit's top images),
* a content ``fingerprint`` (a hash over every file's relative path and content
  hash, or the CIFAR files' hashes and split) that cache keys use instead of a
  name, so a changed folder never reuses stale activations, even when images are
  rewritten in place with the same size. Content hashes are kept in an index in
  the cache folder (``index_dir``) and reused while files are unchanged.

The order of folder-based sets is exactly torchvision ``ImageFolder``'s (classes
sorted, then ``sorted(os.walk(...))``, then file names), so image indices agree with
the reference. :class:`ProbeDataset` decodes each image once for all models, and
unreadable files come back as ``None`` and are reported as skipped, never a crash.
"""
from __future__ import annotations

import bisect
import hashlib
import io
import os
import shutil
import stat
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator, Optional, Protocol, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T
from torchvision.datasets import CIFAR100
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.datasets.utils import check_integrity, extract_archive
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import functional as F

from dissect_core.choices.catalog import IMAGENET_VAL_ENV, PROBE_SETS
from dissect_core.engine.downloads import download_file, manual_fix
from dissect_core.common.errors import InvalidInputError, MissingResourceError
from dissect_core.common.files import file_hash_index, open_regular_file
from dissect_core.common.progress import ProgressFn, report

BRODEN_URL = "http://netdissect.csail.mit.edu/data/broden1_224.zip"
BRODEN_DIR = "broden1_224"
CIFAR_DIR = "cifar-100-python"
FINGERPRINT_DIR = "fingerprints"  # in the cache folder: probe files' content hashes

# What reading an image can raise for a damaged, truncated or non-image file.
_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


class _Source(Protocol):
    def __len__(self) -> int: ...

    def load(self, index: int) -> Image.Image: ...

    def read_bytes(self, index: int) -> Optional[bytes]: ...  # the image file's bytes; None: not a file

    def label(self, index: int) -> str: ...


class _FileList:
    """Image files under ``root``, by relative POSIX path."""

    def __init__(self, root: Path, relpaths: list[str]):
        self.root = root
        self.relpaths = relpaths

    def __len__(self) -> int:
        return len(self.relpaths)

    def load(self, index: int) -> Image.Image:
        with os.fdopen(open_regular_file(self.root / self.relpaths[index]), "rb") as handle:
            with Image.open(handle) as image:
                return to_rgb(image)  # forces the full decode inside the with-block

    def read_bytes(self, index: int) -> Optional[bytes]:
        with os.fdopen(open_regular_file(self.root / self.relpaths[index]), "rb") as handle:
            return handle.read()

    def label(self, index: int) -> str:
        # A file name that is not UTF-8 is shown with replacement characters.
        return os.fsencode(self.relpaths[index]).decode("utf-8", "replace")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow image as 8-bit RGB, with the value range its mode implies.

    Pillow's own ``convert("RGB")`` clips 16-bit and 32-bit values to 255 (a 16-bit
    PNG comes out almost white), so those are scaled first: ``I;16`` by 1/257,
    ``I`` likewise when its values fit 16 bits (else min–max), ``F`` from [0, 1]
    (else min–max). Images with transparency (RGBA, LA, PA, P with a transparent
    colour) are composited over white, as image viewers show them, instead of
    exposing whatever colour the transparent pixels happen to store.
    """
    mode = image.mode
    if mode == "RGB":
        return image.convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if mode.startswith("I;16") or (mode == "I" and low >= 0 and 255 < high <= 65535):
            values = values / 257.0
        elif mode == "F" and low >= 0 and high <= 1:
            values = values * 255.0
        elif low < 0 or high > 255:
            values = (values - low) * (255.0 / (high - low))
        return Image.fromarray(np.rint(values).clip(0, 255).astype(np.uint8), "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


class _CifarImages:
    """The in-memory uint8 images of one CIFAR-100 split."""

    def __init__(self, dataset: CIFAR100, split: str):
        self.data = dataset.data
        self.split = split

    def __len__(self) -> int:
        return len(self.data)

    def load(self, index: int) -> Image.Image:
        return Image.fromarray(self.data[index]).convert("RGB")

    def read_bytes(self, index: int) -> Optional[bytes]:
        return None  # decoded arrays in memory, not files

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

    def read_bytes(self, index: int) -> Optional[bytes]:
        _, source, local = self._locate(index)
        return source.read_bytes(local)

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
    # What listing the folder skipped, by reason ("broken links": 2, …); empty for CIFAR.
    listing_skipped: dict[str, int] = field(default_factory=dict)

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

    def read_jpeg(self, index: int) -> Optional[bytes]:
        """The bytes of image ``index`` if it is a JPEG file in RGB or grayscale (what
        torchvision's ``decode_jpeg`` reads as Pillow does), else None: not a file, another
        format or colour model (CMYK), or a file that cannot be read. Only the header is
        parsed; the image is not decoded."""
        try:
            data = self._source.read_bytes(index)
            if data is None:
                return None
            with Image.open(io.BytesIO(data)) as image:
                return data if image.format == "JPEG" and image.mode in ("RGB", "L") else None
        except (InvalidInputError, *_IMAGE_ERRORS):  # not a regular file, unreadable: Pillow's path says
            return None


# ----------------------------------------------------------------------------- folders


def _imagefolder_key(relpath: str) -> tuple[str, str, str]:
    """Sort key reproducing ImageFolder's order: class, then walk directory, then file name."""
    parts = relpath.split("/")
    return (parts[0] if len(parts) > 1 else "", "/".join(parts[:-1]), parts[-1])


# Deeper folders than this are skipped and counted: no real image set nests so far,
# and very deep trees approach the operating system's path length limit.
MAX_FOLDER_DEPTH = 64


def _list_images(root: Path, extensions: tuple[str, ...], class_subfolders_only: bool
                 ) -> tuple[list[str], dict[str, int]]:
    """Relative POSIX paths of the files under ``root`` with one of ``extensions`` (any
    case), and counts of what was skipped while listing.

    Links are followed, but a folder reached a second time (a symlink loop, or two
    links to one folder) is skipped, so images are never listed twice and a loop
    never runs forever. FIFOs, sockets and devices named like images, broken links
    and unreadable entries are skipped and counted instead of hanging or failing.
    The walk keeps its own stack, so a very deep tree cannot exhaust recursion.
    """
    found: list[str] = []
    skipped: dict[str, int] = {}

    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    root_stat = os.stat(root)
    visited = {(root_stat.st_dev, root_stat.st_ino)}
    stack: list[tuple[str, str, int]] = [(str(root), "", 0)]
    while stack:
        folder, rel_dir, depth = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = list(listing)
        except OSError:
            skip("unreadable folders")
            continue
        for entry in entries:
            relpath = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                info = entry.stat()  # follows links
            except OSError:
                skip("broken links" if entry.is_symlink() else "unreadable files")
                continue
            if stat.S_ISDIR(info.st_mode):
                if (info.st_dev, info.st_ino) in visited:
                    skip("folders reached twice through links")
                elif depth + 1 > MAX_FOLDER_DEPTH:
                    skip(f"folders deeper than {MAX_FOLDER_DEPTH} levels")
                else:
                    visited.add((info.st_dev, info.st_ino))
                    stack.append((entry.path, relpath, depth + 1))
            elif entry.name.lower().endswith(extensions):
                if class_subfolders_only and not rel_dir:
                    continue  # ImageFolder ignores files directly in the root
                if not stat.S_ISREG(info.st_mode):
                    skip("not regular files (FIFOs, sockets, devices)")
                    continue
                found.append(relpath)
    return sorted(found, key=_imagefolder_key), skipped


def _content_fingerprint(root: Path, relpaths: list[str], index_dir: Optional[Path],
                         progress: Optional[ProgressFn], header: str = "") -> str:
    """SHA-256 over every file's relative path and content hash.

    Content hashes are computed once and then reused while a file's size and times
    are unchanged (``files.FileHashIndex``, kept in ``index_dir``), so a second run
    rereads nothing. A file that vanished or became unreadable since listing is
    fingerprinted as such, and the loader skips it later.
    """
    index_path = None if index_dir is None else (
        Path(index_dir) / FINGERPRINT_DIR / f"{hashlib.sha256(os.fsencode(root)).hexdigest()[:32]}.json")
    index = file_hash_index(root, index_path)
    digest = hashlib.sha256(header.encode())
    stage = f"fingerprint {root.name}"
    for done, rel in enumerate(relpaths, 1):
        try:
            content = index.sha256(rel)
        except OSError:
            content = "unreadable"
        digest.update(os.fsencode(rel) + f"\t{content}\n".encode())
        if done % 500 == 0 or done == len(relpaths):
            report(progress, stage, done, len(relpaths))
    index.save()
    return digest.hexdigest()


def _file_probe(name: str, spec: dict, root: Path, listing: tuple[list[str], dict[str, int]],
                index_dir: Optional[Path], progress: Optional[ProgressFn]) -> ProbeSet:
    relpaths, skipped = listing
    fingerprint = _content_fingerprint(root, relpaths, index_dir, progress)
    return ProbeSet(name, spec, fingerprint, root, _FileList(root, relpaths), skipped)


def image_folder(root: str | Path, index_dir: Optional[Path] = None,
                 progress: Optional[ProgressFn] = None) -> ProbeSet:
    """All images under ``root`` (searched recursively), in ImageFolder order."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise MissingResourceError(
            f"The image folder {root.name}",
            looked_in=str(root),
            how_to_fix="Give an existing folder of images (subfolders are searched too).",
        )
    listing = _list_images(root, IMG_EXTENSIONS, class_subfolders_only=False)
    if not listing[0]:
        raise InvalidInputError(
            f"No images found in {root} or its subfolders (looked for the extensions "
            f"{', '.join(IMG_EXTENSIONS)}, in any letter case)."
        )
    return _file_probe(root.name, {"kind": "folder", "root": str(root)}, root, listing, index_dir, progress)


def imagenet_val(root: str | Path | None = None, index_dir: Optional[Path] = None,
                 progress: Optional[ProgressFn] = None) -> ProbeSet:
    """The ImageNet validation images in one subfolder per class (ImageFolder layout).

    ``root`` defaults to the ``DISSECT_IMAGENET_VAL`` environment variable. ImageNet
    needs a licence, so it is never downloaded.
    """
    fix = (
        "ImageNet cannot be downloaded automatically (it needs a licence from image-net.org). "
        "Pass the folder holding the 50,000 validation images, one subfolder per class "
        f"(n01440764/, …), as `imagenet_val_dir` or in the environment variable {IMAGENET_VAL_ENV}."
    )
    root = root or os.environ.get(IMAGENET_VAL_ENV)
    if not root:
        raise MissingResourceError(
            "The ImageNet validation images",
            looked_in=f"`imagenet_val_dir` and ${IMAGENET_VAL_ENV} (neither is set)",
            how_to_fix=fix,
        )
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise MissingResourceError("The ImageNet validation images", looked_in=str(root), how_to_fix=fix)
    listing = _list_images(root, IMG_EXTENSIONS, class_subfolders_only=True)
    if not listing[0]:
        raise InvalidInputError(
            f"No images in class subfolders of {root}. The ImageNet validation set must be laid "
            "out one subfolder per class (n01440764/ILSVRC2012_val_00000293.JPEG, …), as "
            "torchvision ImageFolder expects; a flat folder must be sorted into classes first."
        )
    return _file_probe("imagenet_val", {"kind": "imagenet_val", "root": str(root)}, root, listing, index_dir,
                       progress)


# ----------------------------------------------------------------------------- Broden


def _broden_fix(data_dir: Path) -> str:
    return (
        f"Get it with `python -m dissect_core download broden --data_dir {data_dir}` (about 1 GB), or download "
        f"{BRODEN_URL} and unzip it into {data_dir} so that {data_dir / BRODEN_DIR / 'images'} exists."
    )


def broden(
    data_dir: str | Path = "data", download: bool = False, progress: Optional[ProgressFn] = None,
    index_dir: Optional[Path] = None,
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
    listing = _list_images(images, (".jpg",), class_subfolders_only=True)
    if not listing[0]:
        raise InvalidInputError(
            f"{images} holds no .jpg images in its subfolders (ade20k/, dtd/, …). Delete "
            f"{data_dir / BRODEN_DIR} and fetch it again. {_broden_fix(data_dir)}"
        )
    return _file_probe("broden", {"kind": "broden", "data_dir": str(data_dir)}, images, listing, index_dir,
                       progress)


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
        "or set `download` to fetch it automatically.",
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
    index_dir: Optional[Path] = None,
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
    files = sorted([entry[0] for entry in CIFAR100.train_list + CIFAR100.test_list] + [CIFAR100.meta["filename"]])
    fingerprint = _content_fingerprint(folder, files, index_dir, progress, header=f"cifar100 {split}\n")
    spec = {"kind": "cifar100", "data_dir": str(data_dir), "train": train}
    return ProbeSet(f"cifar100_{split}", spec, fingerprint, folder, _CifarImages(dataset, split))


# ----------------------------------------------------------------------------- by name


def imagenet_broden(
    imagenet_val_dir: str | Path | None = None,
    data_dir: str | Path = "data",
    download: bool = False,
    progress: Optional[ProgressFn] = None,
    index_dir: Optional[Path] = None,
) -> ProbeSet:
    """ImageNet validation images followed by Broden, in the reference's order."""
    parts = [imagenet_val(imagenet_val_dir, index_dir, progress), broden(data_dir, download, progress, index_dir)]
    digest = hashlib.sha256("".join(f"{p.name}:{p.fingerprint}\n" for p in parts).encode())
    return ProbeSet(
        "imagenet_broden",
        {"kind": "imagenet_broden", "parts": [p.spec for p in parts]},
        digest.hexdigest(),
        parts[0].root,
        _Concat([(p.name, p._source) for p in parts]),
        {reason: sum(p.listing_skipped.get(reason, 0) for p in parts)
         for reason in {r for p in parts for r in p.listing_skipped}},
    )


@dataclass(frozen=True)
class ProbeOptions:
    """Where named probe sets are looked for, and whether a missing one is downloaded."""

    data_dir: str | Path = "data"
    imagenet_val_dir: str | Path | None = None
    download: bool = False
    progress: Optional[ProgressFn] = None
    index_dir: Optional[Path] = None  # where content hashes are kept between runs (the cache)


# The openers that ``catalog.PROBE_SETS`` registers, one per named probe set.

def open_broden(o: ProbeOptions) -> ProbeSet:
    return broden(o.data_dir, o.download, o.progress, o.index_dir)


def open_cifar100_train(o: ProbeOptions) -> ProbeSet:
    return cifar100(o.data_dir, True, o.download, o.progress, o.index_dir)


def open_cifar100_val(o: ProbeOptions) -> ProbeSet:
    return cifar100(o.data_dir, False, o.download, o.progress, o.index_dir)


def open_imagenet_val(o: ProbeOptions) -> ProbeSet:
    return imagenet_val(o.imagenet_val_dir, o.index_dir, o.progress)


def open_imagenet_broden(o: ProbeOptions) -> ProbeSet:
    return imagenet_broden(o.imagenet_val_dir, o.data_dir, o.download, o.progress, o.index_dir)


def open_probe(
    name_or_path: str,
    *,
    data_dir: str | Path = "data",
    imagenet_val_dir: str | Path | None = None,
    download: bool = False,
    progress: Optional[ProgressFn] = None,
    index_dir: Optional[Path] = None,
) -> ProbeSet:
    """A probe set by registered name (``catalog.PROBE_SETS``) or an image folder path.

    ``index_dir`` (the cache folder) keeps the files' content hashes between runs.
    """
    key = name_or_path.strip()
    if key in PROBE_SETS:
        options = ProbeOptions(data_dir, imagenet_val_dir, download, progress, index_dir)
        return PROBE_SETS.get(key).value.open(options)
    path = Path(key).expanduser()
    if path.is_dir() or os.sep in key or "/" in key or key.startswith((".", "~")):
        return image_folder(path, index_dir, progress)  # a missing folder raises MissingResourceError naming it
    raise InvalidInputError(
        f"Unknown probe set {key!r}: use one of {', '.join(PROBE_SETS.names())}, "
        "or the path of a folder of images."
    )


def open_probe_spec(spec: dict, expected_fingerprint: Optional[str] = None,
                    index_dir: Optional[Path] = None) -> ProbeSet:
    """Reopen the set described by ``ProbeSet.spec`` (never downloads).

    With ``expected_fingerprint`` (e.g. stored with a run), a set whose files changed
    since is refused, because its image indices would no longer match.
    """
    kind = spec.get("kind")
    if kind == "folder":
        probe = image_folder(spec["root"], index_dir)
    elif kind == "broden":
        probe = broden(spec["data_dir"], index_dir=index_dir)
    elif kind == "cifar100":
        probe = cifar100(spec["data_dir"], train=bool(spec["train"]), download=False, index_dir=index_dir)
    elif kind == "imagenet_val":
        probe = imagenet_val(spec["root"], index_dir)
    elif kind == "imagenet_broden":
        imagenet_spec, broden_spec = spec["parts"]
        probe = imagenet_broden(imagenet_spec["root"], broden_spec["data_dir"], index_dir=index_dir)
    else:
        raise InvalidInputError(f"Unknown probe spec kind {kind!r} in {spec}.")
    if expected_fingerprint and probe.fingerprint != expected_fingerprint:
        raise InvalidInputError(
            f"The probe images of {probe.name} ({probe.root}) changed since the run was made "
            "(files added, removed or changed), so its image indices no longer match."
        )
    return probe


def download_dataset(name: str, data_dir: str | Path = "data", progress: Optional[ProgressFn] = None) -> Path:
    """Download a registered probe set for later offline use; returns its folder (for the CLI)."""
    source = PROBE_SETS.get(name).value
    if not source.downloadable:
        can = ", ".join(entry.name for entry in PROBE_SETS if entry.value.downloadable)
        raise InvalidInputError(
            f"Cannot download {name!r}: only {can} can be downloaded "
            "(ImageNet needs a licence; pass its folder instead)."
        )
    return source.open(ProbeOptions(data_dir, download=True, progress=progress)).root


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
    """Decode workers: the cores this process may use but one (the main process runs the
    models), at most 16. Decoding JPEGs is the bound of a pass once the models run on a GPU."""
    try:
        cores = len(os.sched_getaffinity(0))  # respects taskset and container CPU sets
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 2
    return min(16, max(1, cores - 1))


def check_num_workers(num_workers: Optional[int]) -> None:
    """Refuse a negative worker count (None means the default)."""
    if num_workers is not None and (isinstance(num_workers, bool) or not isinstance(num_workers, int)
                                    or num_workers < 0):
        raise InvalidInputError(
            f"`num_workers` must be 0 (decode images in the main process) or a positive number of "
            f"loader processes, not {num_workers!r}. Leave it out for the default ({default_num_workers()})."
        )


def probe_loader(
    probe: ProbeSet,
    transforms: dict[str, Callable[[Image.Image], torch.Tensor]],
    batch_size: int,
    num_workers: Optional[int] = None,
    device: Optional[torch.device] = None,
) -> DataLoader:
    """Batches of :class:`ProbeBatch` over the probe set, in order.

    For a CUDA ``device`` batches come in pinned memory, so their copies to the GPU
    overlap with the models' work; each worker keeps 4 batches decoded ahead.
    """
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be at least 1, not {batch_size}.")
    check_num_workers(num_workers)
    workers = default_num_workers() if num_workers is None else num_workers
    return DataLoader(
        ProbeDataset(probe, transforms),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_probe_batch,
        pin_memory=device is not None and torch.device(device).type == "cuda",
        prefetch_factor=4 if workers > 0 else None,
    )


# ----------------------------------------------------------------------------- decoding on the device


def _convert_step(step: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """One step of a PIL-based transform as the same operation on a uint8 (C, H, W) tensor."""
    if isinstance(step, T.Resize):
        return lambda x: F.resize(x, step.size, step.interpolation, step.max_size, step.antialias)
    if isinstance(step, T.CenterCrop):
        return lambda x: F.center_crop(x, step.size)
    if isinstance(step, T.Grayscale):
        return lambda x: F.rgb_to_grayscale(x, step.num_output_channels)
    if isinstance(step, T.ToTensor):  # open_clip's MaybeToTensor too: uint8 [0, 255] → float [0, 1]
        return lambda x: x.float().div_(255)
    if isinstance(step, T.PILToTensor):
        return lambda x: x
    if isinstance(step, T.Normalize):
        return lambda x: F.normalize(x, step.mean, step.std)
    # open_clip's RGB conversions (MaybeConvertMode("RGB"), or _convert_to_rgb in older
    # releases): the decoded image is RGB already.
    if getattr(step, "__name__", None) == "_convert_to_rgb" or (
            type(step).__name__ == "MaybeConvertMode" and getattr(step, "mode", None) == "RGB"):
        return lambda x: x
    raise InvalidInputError(
        f"The preprocessing step {step!r} has no tensor version here, so images cannot be decoded on the "
        "device for this model; use the 'pil' decoder."
    )


def tensor_preprocess(preprocess: Callable[[Image.Image], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The steps of a model's PIL preprocessing as tensor operations on an RGB uint8
    (3, H, W) image, on whatever device the image is.

    Understood: a ``transforms.Compose`` of Resize, CenterCrop, Grayscale, ToTensor,
    PILToTensor, Normalize and open_clip's RGB conversions (the preprocessing of the
    named models, torchvision checkpoints' fallback, the small CNN and open_clip's
    evaluation transforms), and torchvision's weight presets (``ImageClassification``:
    resize, centre crop, scale to [0, 1], normalise — which already run on tensors).
    Anything else raises InvalidInputError naming the step. Between steps the image
    stays uint8, as a PIL image does; resizing a tensor rounds like Pillow but its
    filters are not bit-identical (see :func:`device_probe_loader`).
    """
    steps = getattr(preprocess, "transforms", None)
    if steps is None and all(hasattr(preprocess, name) for name in ("resize_size", "crop_size", "mean", "std")):
        steps = [T.Resize(preprocess.resize_size, preprocess.interpolation, antialias=preprocess.antialias),
                 T.CenterCrop(preprocess.crop_size), T.ToTensor(), T.Normalize(preprocess.mean, preprocess.std)]
    if steps is None:  # a single step (e.g. a bare ToTensor); refused below if it has no tensor version
        steps = [preprocess]
    converted = [_convert_step(step) for step in steps]

    def run(image: torch.Tensor) -> torch.Tensor:
        for step in converted:
            image = step(image)
        return image

    return run


class _EncodedProbeDataset(Dataset):
    """Item ``i``: ``(i, uint8 tensor of the file's bytes)`` for a JPEG that the main
    process decodes, else what :class:`ProbeDataset` gives (Pillow in the worker)."""

    def __init__(self, probe: ProbeSet, transforms: dict[str, Callable[[Image.Image], torch.Tensor]]):
        self.pil = ProbeDataset(probe, transforms)

    def __len__(self) -> int:
        return len(self.pil)

    def __getitem__(self, index: int) -> tuple[int, Any]:
        data = self.pil.probe.read_jpeg(index)
        if data is None:
            return self.pil[index]
        return index, torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _decode_jpegs(encoded: list[torch.Tensor], device: torch.device) -> list[Optional[torch.Tensor]]:
    """RGB uint8 images on ``device``, one call for the batch; None where a file fails."""
    if not encoded:  # a batch without JPEGs (all PNGs, say): decode_jpeg refuses an empty list
        return []
    with warnings.catch_warnings():
        # torchvision 0.29 marks its image codecs deprecated in favour of TorchCodec; they still work.
        warnings.filterwarnings("ignore", message="The image decoding", category=DeprecationWarning)
        try:
            return list(decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:  # one damaged file fails the whole call: find which, one by one
            decoded: list[Optional[torch.Tensor]] = []
            for data in encoded:
                try:
                    decoded.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
                except RuntimeError:
                    decoded.append(None)
            return decoded


def device_probe_loader(
    probe: ProbeSet,
    transforms: dict[str, Callable[[Image.Image], torch.Tensor]],
    batch_size: int,
    num_workers: Optional[int] = None,
    device: Optional[torch.device] = None,
) -> Iterator[ProbeBatch]:
    """Like :func:`probe_loader`, but JPEG files are decoded on ``device``.

    Loader workers only read the files; the main process decodes each batch's JPEGs in
    one ``torchvision.io.decode_jpeg`` call on ``device`` (nvJPEG on a GPU,
    libjpeg-turbo on the CPU) and applies :func:`tensor_preprocess` of each transform
    there. Other images (PNG, CMYK JPEGs, CIFAR's arrays) take the Pillow path of
    :func:`probe_loader` in the workers, and so does a JPEG ``decode_jpeg`` rejects;
    files Pillow cannot read either are skipped, as there. Batches hold their tensors
    on ``device``. Preprocessing steps without a tensor version are refused up front.

    The pixels are not bit-identical to the Pillow path's: tensor resizing and Pillow
    round differently. Measured on the CPU on synthetic JPEGs (tests/test_probe_data.py)
    the preprocessed values differ by at most a few 1/255 steps (README, Performance), so
    runs with either decoder are kept apart in the cache. On the CPU this path is slower
    than Pillow's (tensor resizing there is); it is meant for a GPU
    (``benchmarks/check_cuda.py`` times both).
    """
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be at least 1, not {batch_size}.")
    check_num_workers(num_workers)
    device = torch.device(device) if device is not None else torch.device("cpu")
    on_device = {key: tensor_preprocess(transform) for key, transform in transforms.items()}
    workers = default_num_workers() if num_workers is None else num_workers
    loader = DataLoader(
        _EncodedProbeDataset(probe, transforms),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=list,
        prefetch_factor=4 if workers > 0 else None,
    )
    pil = ProbeDataset(probe, transforms)

    def batches() -> Iterator[ProbeBatch]:
        for items in loader:
            encoded = [(at, data) for at, (_, data) in enumerate(items) if isinstance(data, torch.Tensor)]
            decoded = dict(zip((at for at, _ in encoded), _decode_jpegs([data for _, data in encoded], device)))
            good: list[tuple[int, dict[str, torch.Tensor]]] = []
            skipped: list[int] = []
            for at, (index, item) in enumerate(items):
                if at in decoded:
                    image = decoded[at]
                    item = ({key: convert(image) for key, convert in on_device.items()} if image is not None
                            else pil[index][1])  # rejected by decode_jpeg: Pillow decides
                if item is None:
                    skipped.append(index)
                else:
                    good.append((index, {key: tensor.to(device) for key, tensor in item.items()}))
            tensors = {key: torch.stack([item[key] for _, item in good]) for key in transforms} if good else {}
            yield ProbeBatch(torch.tensor([index for index, _ in good], dtype=torch.long), tensors, skipped)

    return batches()

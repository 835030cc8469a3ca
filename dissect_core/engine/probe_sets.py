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
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Protocol, Sequence

import numpy as np
from PIL import Image
from torchvision.datasets import CIFAR100
from torchvision.datasets.folder import IMG_EXTENSIONS

from dissect_core.choices.catalog import IMAGENET_VAL_ENV, PROBE_SETS
from dissect_core.common.errors import InvalidInputError, MissingResourceError
from dissect_core.common.files import file_hash_index, open_regular_file
from dissect_core.common.progress import ProgressFn, report
from dissect_core.engine.datasets import (
    BRODEN_DIR,
    CIFAR_DIR,
    broden_fix,
    cifar_fix,
    download_broden,
    download_cifar100,
)

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
                f"The Broden probe set ({BRODEN_DIR})", looked_in=str(images), how_to_fix=broden_fix(data_dir)
            )
        download_broden(data_dir, progress)
    listing = _list_images(images, (".jpg",), class_subfolders_only=True)
    if not listing[0]:
        raise InvalidInputError(
            f"{images} holds no .jpg images in its subfolders (ade20k/, dtd/, …). Delete "
            f"{data_dir / BRODEN_DIR} and fetch it again. {broden_fix(data_dir)}"
        )
    return _file_probe("broden", {"kind": "broden", "data_dir": str(data_dir)}, images, listing, index_dir,
                       progress)


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
            raise MissingResourceError(what, looked_in=str(folder), how_to_fix=cifar_fix(data_dir))
        download_cifar100(data_dir, progress)
    try:
        dataset = CIFAR100(str(data_dir), train=train, download=False)
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted."
        raise MissingResourceError(
            what,
            looked_in=str(folder),
            how_to_fix=f"Its files are incomplete or damaged ({exc}); delete {folder} and fetch it again. "
            + cifar_fix(data_dir),
        ) from exc
    split = "train" if train else "val"
    files = sorted([entry[0] for entry in CIFAR100.train_list + CIFAR100.test_list] + [CIFAR100.meta["filename"]])
    fingerprint = _content_fingerprint(folder, files, index_dir, progress, header=f"cifar100 {split}\n")
    spec = {"kind": "cifar100", "data_dir": str(data_dir), "train": train}
    return ProbeSet(f"cifar100_{split}", spec, fingerprint, folder, _CifarImages(dataset, split))


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

"""Downloading the standard probe data sets (Broden, CIFAR-100) for offline use, and what to
do by hand when a download is impossible (no network, a proxy, a full disk).
"""
from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path, PurePosixPath
from typing import Optional

from torchvision.datasets import CIFAR100
from torchvision.datasets.utils import check_integrity, extract_archive

from dissect_core.common.errors import InvalidInputError, MissingResourceError
from dissect_core.common.progress import ProgressFn, report
from dissect_core.engine.downloads import download_file, manual_fix

BRODEN_URL = "http://netdissect.csail.mit.edu/data/broden1_224.zip"
# CSAIL publishes no checksum; this MD5 is the one a public NetDissect setup script checks.
BRODEN_HASH = "md5:be13c292eaef3300da03f8d0e48eab1c"


BRODEN_DIR = "broden1_224"


CIFAR_DIR = "cifar-100-python"


def broden_fix(data_dir: Path) -> str:
    return (
        f"Get it with `python -m dissect_core download broden --data_dir {data_dir}` (about 1 GB), or download "
        f"{BRODEN_URL} and unzip it into {data_dir} so that {data_dir / BRODEN_DIR / 'images'} exists."
    )


def download_broden(data_dir: Path, progress: Optional[ProgressFn]) -> None:
    """Download broden1_224.zip and unpack its .jpg and .csv files into ``data_dir``."""
    archive = download_file(
        BRODEN_URL,
        data_dir / f"{BRODEN_DIR}.zip",
        what=f"The Broden probe set archive ({BRODEN_DIR}.zip, about 1 GB)",
        how_to_fix="The next download run unpacks it; or unzip it into that folder yourself.",
        progress=progress,
        known_hash=BRODEN_HASH,
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
            + broden_fix(data_dir),
        ) from exc
    target.mkdir(parents=True, exist_ok=True)
    for child in staging.iterdir():
        dest = target / child.name
        if dest.is_dir():
            shutil.rmtree(dest)
        os.replace(child, dest)
    staging.rmdir()
    archive.unlink()  # 1 GB that is no longer needed


def cifar_fix(data_dir: Path) -> str:
    return manual_fix(
        CIFAR100.url,
        data_dir / CIFAR100.filename,
        f"Then unpack it there (tar xzf {CIFAR100.filename}) so that {data_dir / CIFAR_DIR} exists, "
        "or set `download` to fetch it automatically.",
    )


def download_cifar100(data_dir: Path, progress: Optional[ProgressFn]) -> None:
    archive = download_file(
        CIFAR100.url,
        data_dir / CIFAR100.filename,
        what=f"The CIFAR-100 archive ({CIFAR100.filename}, 161 MB)",
        how_to_fix=f"It is unpacked into {data_dir / CIFAR_DIR} on the next run.",
        progress=progress,
        known_hash=f"md5:{CIFAR100.tgz_md5}",
    )
    # A download was checked on arrival; this catches an archive put there by hand.
    if not check_integrity(str(archive), CIFAR100.tgz_md5):
        archive.unlink()
        raise MissingResourceError(
            f"The CIFAR-100 archive ({CIFAR100.filename})",
            looked_in=str(archive),
            how_to_fix="It failed its MD5 check and has been deleted; download it again. " + cifar_fix(data_dir),
        )
    extract_archive(str(archive), str(data_dir))

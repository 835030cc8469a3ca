"""File helpers shared by the cache, the loaders and the run writer (no torch import)."""
from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path

# Whole-file hashes of big weight files take seconds; remember them per
# (path, size, mtime) so that reloading a model in the same process is instant.
_HASH_MEMO: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename.

    A reader never sees a half-written file, and an interrupted write leaves the
    previous content (or nothing) in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def file_sha256(path: Path | str) -> str:
    """SHA-256 hex digest of a file, read in 1 MB chunks (memoised while the file is unchanged)."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _HASH_LOCK:
        if key in _HASH_MEMO:
            return _HASH_MEMO[key]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    with _HASH_LOCK:
        _HASH_MEMO[key] = digest.hexdigest()
    return _HASH_MEMO[key]

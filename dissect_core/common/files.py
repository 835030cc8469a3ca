"""File helpers shared by the cache, the loaders and the run writer (no torch import)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
import threading
from pathlib import Path
from typing import Optional

from dissect_core.common.errors import InvalidInputError

# Whole-file hashes of big weight files take seconds; remember them per
# (path, size, mtime) so that reloading a model in the same process is instant.
_HASH_MEMO: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()
TEMP_SUFFIX = ".tmp"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename.

    A reader never sees a half-written file, and an interrupted write leaves the
    previous content (or nothing) in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The writer's PID in the name lets a cleanup tell a killed writer's leftover
    # from a file another process is writing right now.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX)
    try:
        _chmod_as_made(fd, tmp, 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def staging_dir(parent: Path, prefix: str) -> Path:
    """A new folder in ``parent`` to build a result in before renaming it into place, with
    the permissions a plain ``mkdir`` would give it (``mkdtemp`` makes it private)."""
    folder = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    _chmod_as_made(None, folder, 0o777)
    return folder


def umask() -> int:
    """The process's umask. Linux says it in /proc; elsewhere it is read by setting it
    and back, which is not atomic between threads, so only as a fallback."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _chmod_as_made(fd: Optional[int], path: str | Path, mode: int) -> None:
    """Give a file or folder from ``tempfile`` (0600 / 0700) the mode ``open``/``mkdir``
    would: ``mode`` less the user's umask, so files meant to be shared (bundles, host
    folders, run folders) are readable by whom the user's other files are."""
    if os.name != "posix":
        return
    if fd is not None:
        os.fchmod(fd, mode & ~umask())
    else:
        os.chmod(path, mode & ~umask())


def temp_file_writer_pid(path: Path) -> Optional[int]:
    """The PID of the process that made an ``atomic_write_bytes`` temporary file, if named so."""
    parts = Path(path).name[: -len(TEMP_SUFFIX)].rsplit(".", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


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


class FileHashIndex:
    """SHA-256 of the files under one folder, remembered while each file is unchanged.

    A file counts as unchanged while its size, modification time, change time and
    inode are the same (the change time cannot be set back by hand, unlike the
    modification time). The index lives in ``index_path`` (a JSON file in the
    cache folder) so that a second run does not reread a data set; without one,
    it lasts for the process. A damaged index file is ignored and rebuilt.
    """

    def __init__(self, root: Path, index_path: Optional[Path] = None):
        self.root = root
        self.index_path = index_path
        self._entries: dict[str, list] = {}
        self._changed = False
        if index_path is not None and index_path.is_file():
            try:
                stored = json.loads(index_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                stored = None
            if isinstance(stored, dict) and stored.get("root") == os.fsencode(root).hex():
                entries = stored.get("files")
                if isinstance(entries, dict):
                    self._entries = {k: v for k, v in entries.items()
                                     if isinstance(v, list) and len(v) == 5 and isinstance(v[4], str)}

    def sha256(self, relpath: str) -> str:
        """The hash of ``root/relpath`` (a regular file; anything else raises OSError)."""
        path = self.root / relpath
        key = os.fsencode(relpath).hex()
        known = self._entries.get(key)
        if known is not None and known[:4] == _signature(os.stat(path)):
            return known[4]
        with os.fdopen(open_regular_file(path), "rb") as handle:
            signature = _signature(os.fstat(handle.fileno()))
            digest = hashlib.sha256()
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        self._entries[key] = signature + [digest.hexdigest()]
        self._changed = True
        return digest.hexdigest()

    def save(self) -> None:
        """Write the index back if it learned anything (never fails a run: it is only a speed-up)."""
        if self.index_path is None or not self._changed:
            return
        record = {"root": os.fsencode(self.root).hex(), "files": self._entries}
        try:
            atomic_write_text(self.index_path, json.dumps(record, separators=(",", ":")))
        except OSError:
            return
        self._changed = False


def _signature(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def open_regular_file(path: Path) -> int:
    """A read-only descriptor of ``path``, refusing FIFOs, sockets and devices.

    Opening without blocking first means a FIFO named like an image can never hang
    a reader waiting for a writer.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{Path(path).name} is not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


_INDEXES: dict[tuple[str, Optional[str]], FileHashIndex] = {}


def file_hash_index(root: Path, index_path: Optional[Path] = None) -> FileHashIndex:
    """The process's ``FileHashIndex`` for ``root`` (one per index file), so reopening
    a probe set in the same process rehashes nothing."""
    key = (str(root), None if index_path is None else str(index_path))
    with _HASH_LOCK:
        if key not in _INDEXES:
            _INDEXES[key] = FileHashIndex(root, index_path)
        return _INDEXES[key]


def weight_file_problem(path: Path, error: BaseException) -> str:
    """Why a weight file could not be read, in words: a text file, an unfinished
    download, a damaged archive, or the reader's own first line."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
        size = path.stat().st_size
    except OSError as exc:
        return f"{path} cannot be read ({exc.strerror or exc})"
    if size == 0:
        return f"{path} is empty (an interrupted download or copy?)"
    if all(byte >= 0x20 or byte in b"\t\n\r" for byte in head):
        try:
            head.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return (f"{path} is a text file, not a weight file (it starts with {head[:40].decode('utf-8')!r}; "
                    "an HTML error page saved instead of the download?)")
    detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    return f"{path} is damaged or not a weight file of the expected kind ({type(error).__name__}: {detail})"


def check_room(folder: Path, needed_bytes: int, what: str, fix: str) -> None:
    """Refuse to start work whose output cannot be written to ``folder``.

    The folder is made if missing and a small file is written and removed in it;
    then its disk must have ``needed_bytes`` free. ``InvalidInputError`` says
    what is wrong and ``fix`` (e.g. "pass another --result_dir").
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        raise InvalidInputError(
            f"Cannot write {what} in {folder}: {exc.strerror or exc}. Fix its permissions, or {fix}."
        ) from None
    if free < needed_bytes:
        raise InvalidInputError(
            f"Not enough free disk space for {what} in {folder}: about {needed_bytes / 1024**2:,.0f} MB "
            f"are needed and {free / 1024**2:,.0f} MB are free. Free some space, or {fix}."
        )

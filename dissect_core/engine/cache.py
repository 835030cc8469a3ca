"""Content-addressed on-disk cache for every stage of a dissection.

A cache key is the SHA-256 of a canonical JSON record of everything that
determines an entry's content: model name and a hash of its weights, layer,
pooling, probe-set fingerprint (a hash of every image file's content), CLIP model
and precision, concept-list hash, similarity function and parameters. A changed
input therefore gets a new key (the reference tool keyed files by names only).

Every entry file starts with a header line holding the SHA-256 of the payload
that follows; ``load`` verifies it, and then checks that the payload has the
shape its stage expects. A damaged entry (a flipped bit, a truncated file, a file
of another kind) is reported through ``on_problem``, deleted and treated as a
miss, so the stage is recomputed: a damaged entry is never used. Writes go to a
temporary file that is renamed into place; temporary files left by a killed
writer are removed the next time the cache is opened.

Entries are typed (``CacheEntry``): each stage's result class names its folder
(``KIND``), turns itself into a payload of plain tensors and rebuilds itself,
checking that structure, in ``from_payload``.

Layout: ``{root}/{kind}/{key}.pt`` with a readable ``{key}.json`` beside it that
records the key's parts.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Optional, Protocol, TypeVar

import torch

from dissect_core.common.errors import InvalidInputError
from dissect_core.common.files import atomic_write_bytes, atomic_write_text, temp_file_writer_pid

# Bump when the layout of a cached payload changes, so old entries are ignored.
# 2: entries carry a checksum header; probe fingerprints cover file contents.
CACHE_FORMAT = 2
_MAGIC = b"dissect_core-cache/2 sha256="
_HEADER_BYTES = len(_MAGIC) + 64 + 1  # magic, hex digest, newline
# A temporary file older than this is left over even if its writer's PID was reused.
_STALE_TEMP_SECONDS = 24 * 3600

ProblemFn = Callable[[str], None]


class CacheEntry(Protocol):
    """A stage's result as the cache stores it: plain tensors, text and numbers (entries
    are read with ``weights_only``), rebuilt and checked by ``from_payload``."""

    KIND: ClassVar[str]  # the entry's folder in the cache

    def to_payload(self) -> dict: ...

    @classmethod
    def from_payload(cls, payload: Mapping, **expected: Any) -> "CacheEntry": ...


E = TypeVar("E", bound=CacheEntry)


def stable_hash(record: Any) -> str:
    """SHA-256 hex digest of a JSON-serialisable record, independent of key order."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class DamagedEntry(Exception):
    """A cache entry whose bytes or content do not match what its stage stores."""


class FeatureCache:
    """Tensors and small records stored under content-addressed keys.

    ``on_problem`` receives a sentence for each damaged entry found (and then
    recomputed); the pipeline passes it on as a warning.
    """

    def __init__(self, root: Path | str, on_problem: Optional[ProblemFn] = None):
        self.root = Path(root)
        self.on_problem = on_problem
        if self.root.exists() and not self.root.is_dir():
            raise InvalidInputError(
                f"The cache folder {self.root} is a file, not a folder. Pass another `activation_dir`."
            )
        self.removed_temp_files = remove_leftover_temp_files(self.root)

    def key(self, kind: str, **parts: Any) -> str:
        return stable_hash({"kind": kind, "format": CACHE_FORMAT, **parts})

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.pt"

    def load(self, entry_type: type[E], key: str, **expected: Any) -> Optional[E]:
        """The stored entry, or ``None`` when it is absent or damaged.

        ``entry_type.from_payload(payload, **expected)`` rebuilds the entry and raises
        ``DamagedEntry`` when the payload lacks the stage's structure (wrong type, shapes
        that disagree with each other or with ``expected``). A damaged entry is reported,
        deleted and counts as a miss. Something other than a file where an entry belongs
        is not the cache's to delete: ``InvalidInputError`` says so.
        """
        path = self.path(entry_type.KIND, key)
        if not path.is_file():
            if path.exists() or path.is_symlink():
                raise InvalidInputError(
                    f"The cache entry {path} is not a regular file (a folder or a link?). It is not "
                    "this cache's: move it away or delete it, or pass another `activation_dir`."
                )
            return None
        try:
            payload = _decode(path.read_bytes())
            if not isinstance(payload, dict):
                raise DamagedEntry(f"it holds a {type(payload).__name__}, not a record of tensors")
            return entry_type.from_payload(payload, **expected)
        except DamagedEntry as exc:
            self._report(path, entry_type.KIND, str(exc))
            path.unlink(missing_ok=True)
            return None
        except OSError as exc:
            self._report(path, entry_type.KIND, f"it cannot be read ({exc.strerror or exc})")
            return None

    def save(self, entry: CacheEntry, key: str, parts: Optional[dict] = None) -> Path:
        """Store ``entry`` under ``key``; ``parts`` (the key's inputs) go beside it, readable."""
        buffer = io.BytesIO()
        torch.save(entry.to_payload(), buffer)
        body = buffer.getvalue()
        path = self.path(entry.KIND, key)
        atomic_write_bytes(path, _MAGIC + hashlib.sha256(body).hexdigest().encode("ascii") + b"\n" + body)
        if parts is not None:
            atomic_write_text(path.with_suffix(".json"), json.dumps(parts, indent=2, default=str))
        return path

    def _report(self, path: Path, kind: str, why: str) -> None:
        if self.on_problem is not None:
            self.on_problem(f"The cached {kind} entry {path.name} was damaged ({why}); it is recomputed.")


def _decode(data: bytes) -> Any:
    header, body = data[:_HEADER_BYTES], data[_HEADER_BYTES:]
    if not header.startswith(_MAGIC) or not header.endswith(b"\n"):
        raise DamagedEntry("its header is missing: not an entry of this cache format")
    if hashlib.sha256(body).hexdigest().encode("ascii") != header[len(_MAGIC):-1]:
        raise DamagedEntry("its checksum does not match its content")
    try:
        return torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as exc:  # the checksum matched: a payload torch cannot read was written by another version
        raise DamagedEntry(f"its content cannot be read by this version of torch: {exc}") from None


def remove_leftover_temp_files(root: Path) -> int:
    """Delete temporary files that killed writers left in the cache; returns how many.

    A temporary file whose writer is still running (another process writing the
    same cache now) is left alone.
    """
    if not root.is_dir():
        return 0
    removed = 0
    now = time.time()
    for folder in [root, *(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())]:
        for path in folder.glob(".*.tmp"):
            pid = temp_file_writer_pid(path)
            try:
                age = now - path.lstat().st_mtime
            except OSError:
                continue
            if pid is not None and process_alive(pid) and age < _STALE_TEMP_SECONDS:
                continue
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` is running (this one is)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


# --------------------------------------------------------------------------- entry checks

def tensor_field(payload: Mapping, name: str, dims: int, floating: bool) -> torch.Tensor:
    """``payload[name]`` when it is a tensor of ``dims`` dimensions of the right kind,
    else ``DamagedEntry``. For the entry types' ``from_payload``."""
    # Values are not range-checked: the checksum already guards against damage, and
    # a model may legitimately produce NaN (rank_reorder's dead units do).
    value = payload.get(name)
    if not isinstance(value, torch.Tensor):
        raise DamagedEntry(f"its {name!r} is a {type(value).__name__}, not a tensor")
    if value.dim() != dims or value.is_floating_point() != floating:
        raise DamagedEntry(f"its {name!r} has shape {tuple(value.shape)} and type {value.dtype}")
    return value


def rows_with_indices(payload: Mapping, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``payload[name]``, a float matrix of one row per image, and its ``image_indices``
    (one per row), else ``DamagedEntry``."""
    rows = tensor_field(payload, name, 2, floating=True)
    indices = tensor_field(payload, "image_indices", 1, floating=False)
    if indices.shape[0] != rows.shape[0]:
        raise DamagedEntry(f"it has {rows.shape[0]} rows but {indices.shape[0]} image indices")
    return rows, indices


def index_list(payload: Mapping, name: str) -> list[int]:
    """``payload[name]`` when it is a list of image indices, else ``DamagedEntry``."""
    value = payload.get(name, [])
    if not isinstance(value, list) or not all(isinstance(i, int) for i in value):
        raise DamagedEntry(f"its {name!r} is not a list of image indices")
    return value

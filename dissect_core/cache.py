"""Content-addressed on-disk cache for every stage of a dissection.

A cache key is the SHA-256 of a canonical JSON record of everything that
determines an entry's content: model name and a hash of its weights, layer,
pooling, probe-set fingerprint (file list and sizes), CLIP model and precision,
concept-list hash, similarity function and parameters. A changed input therefore
gets a new key and a stale entry can never be served (the reference tool keyed
files by names only). Writes go to a temporary file that is renamed into place,
so an interrupted run never leaves a half-written entry behind.

Layout: ``{root}/{kind}/{key}.pt`` with a readable ``{key}.json`` beside it that
records the key's parts.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Optional

import torch

from .files import atomic_write_bytes, atomic_write_text

# Bump when the layout of a cached payload changes, so old entries are ignored.
CACHE_FORMAT = 1


def stable_hash(record: Any) -> str:
    """SHA-256 hex digest of a JSON-serialisable record, independent of key order."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class FeatureCache:
    """Tensors and small records stored under content-addressed keys."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def key(self, kind: str, **parts: Any) -> str:
        return stable_hash({"kind": kind, "format": CACHE_FORMAT, **parts})

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.pt"

    def load(self, kind: str, key: str) -> Optional[dict]:
        """The stored payload, or ``None`` when the entry is absent or unreadable.

        An unreadable entry (for example from a disk that filled up before the
        atomic rename existed) counts as a miss; the stage is recomputed and the
        entry rewritten.
        """
        path = self.path(kind, key)
        if not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            return None

    def save(self, kind: str, key: str, payload: dict, parts: Optional[dict] = None) -> Path:
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        path = self.path(kind, key)
        atomic_write_bytes(path, buffer.getvalue())
        if parts is not None:
            atomic_write_text(path.with_suffix(".json"), json.dumps(parts, indent=2, default=str))
        return path

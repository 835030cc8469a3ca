"""Downloading weight files and data sets, failing fast and helpfully when offline.

Every download first tries one short TCP connection to the server (or to the
configured proxy). Without a network this fails in seconds, and the error names
the file, where it was looked for, the URL to fetch it from by hand and the exact
path to save it at, instead of hanging in a library's retry loop for a minute.
"""
from __future__ import annotations

import hashlib
import os
import socket
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

from dissect_core.common.errors import MissingResourceError
from dissect_core.common.progress import ProgressFn, report

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
CHUNK_BYTES = 1 << 20

def _connect_target(url: str) -> tuple[str, int]:
    """The host and port a download of ``url`` connects to first: the proxy if one applies."""
    parts = urlsplit(url)
    scheme = parts.scheme or "https"
    host = parts.hostname or ""
    port = parts.port or (443 if scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return proxy_parts.hostname or host, proxy_parts.port or 80
    return host, port


def is_reachable(url: str, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """Whether one TCP connection to the server of ``url`` succeeds within ``timeout`` seconds.

    One try, no retries. Name resolution runs in a daemon thread, because a broken
    resolver can block ``getaddrinfo`` far longer than any socket timeout.
    """
    host, port = _connect_target(url)
    if not host:
        return False
    outcome: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(True)
        except OSError:
            outcome.append(False)

    worker = threading.Thread(target=attempt, daemon=True, name=f"reach-{host}")
    worker.start()
    worker.join(timeout + 0.5)
    return bool(outcome and outcome[0])


def manual_fix(url: str, dest: Path | str, how_to_fix: str = "") -> str:
    """The text telling a user how to provide a file by hand."""
    text = f"To provide it by hand, download {url} and save it as {Path(dest).resolve()}."
    return f"{text} {how_to_fix}".strip()


def download_file(
    url: str,
    dest: Path | str,
    *,
    what: str,
    how_to_fix: str,
    progress: Optional[ProgressFn] = None,
    sha256: Optional[str] = None,
) -> Path:
    """Return ``dest``, downloading it from ``url`` first if it does not exist yet.

    ``sha256`` is the expected hex digest, or a prefix of it (torchvision file names
    carry the first hex digits). The file is written to a temporary name in the same
    folder and renamed into place only when complete and verified, so an interrupted
    download never leaves a truncated file that would later be taken as valid.
    ``what`` and ``how_to_fix`` go into the error raised when the download is
    impossible; the URL and destination path are always added to the fix.
    """
    dest = Path(dest)
    if dest.exists():
        return dest
    looked_in = str(dest.resolve())
    host = urlsplit(url).hostname or url
    if not is_reachable(url):
        raise MissingResourceError(
            what,
            looked_in=looked_in,
            how_to_fix=f"It cannot be downloaded now: {host} is not reachable (offline?). "
            + manual_fix(url, dest, how_to_fix),
        )

    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = f"download {dest.name}"
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=READ_TIMEOUT_S) as response:
                total = int(response.headers.get("Content-Length") or 0)
                done = 0
                report(progress, stage, 0, total)
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if total:
                        report(progress, stage, min(done, total), total)
                report(progress, stage, done, max(done, total))
        except (urllib.error.URLError, OSError) as exc:
            raise MissingResourceError(
                what,
                looked_in=looked_in,
                how_to_fix=f"Downloading {url} failed ({exc}). " + manual_fix(url, dest, how_to_fix),
            ) from exc
        if sha256 and not digest.hexdigest().startswith(sha256.lower()):
            raise MissingResourceError(
                what,
                looked_in=looked_in,
                how_to_fix=f"The download from {url} was corrupt (SHA-256 {digest.hexdigest()}, "
                f"expected {sha256}). Try again. " + manual_fix(url, dest, how_to_fix),
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest

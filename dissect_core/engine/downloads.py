"""Downloading weight files and data sets, failing fast and helpfully when offline.

Every download first tries one short TCP connection to the server (or to the
configured proxy). Without a network this fails in seconds, and the error names
the file, where it was looked for, the URL to fetch it from by hand and the exact
path to save it at, instead of hanging in a library's retry loop for a minute.
The download itself is pooch's: into a temporary file beside the destination, checked
against the known hash, and moved into place only when complete and verified.
"""
from __future__ import annotations

import logging
import socket
import threading
import urllib.request
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

import pooch

from dissect_core.common.errors import MissingResourceError
from dissect_core.common.progress import ProgressFn, report

# Progress goes through the caller's callback; pooch's own lines on stderr would repeat it.
pooch.get_logger().setLevel(logging.WARNING)

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
CHUNK_BYTES = 1 << 20  # pooch's default of 1 kB costs a Python loop per kB of a 1 GB archive

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


class _ProgressBar:
    """The part of tqdm's interface pooch's HTTP downloader drives, reported through a ProgressFn."""

    def __init__(self, progress: ProgressFn, stage: str) -> None:
        self._progress, self._stage = progress, stage
        self._total = self._done = 0

    @property
    def total(self) -> int:
        return self._total

    @total.setter
    def total(self, total: int) -> None:  # set once the response's Content-Length is known
        self._total = total
        report(self._progress, self._stage, 0, total)

    def update(self, size: int) -> None:
        # pooch counts whole chunks, so the last one may overshoot the total.
        self._done += size
        if self._total:
            report(self._progress, self._stage, min(self._done, self._total), self._total)

    def reset(self) -> None:
        self._done = 0

    def close(self) -> None:
        done = self._total or self._done
        report(self._progress, self._stage, done, done)


class _PrefixChecked:
    """pooch's HTTP download, then a check of the file's hash against a prefix of it.

    torchvision's weight file names carry only the first hex digits of their SHA-256,
    which pooch's ``known_hash`` cannot take. A ValueError here makes pooch delete the
    temporary file, as its own hash check does.
    """

    def __init__(self, download: pooch.HTTPDownloader, algorithm: str, prefix: str) -> None:
        self._download, self._algorithm, self._prefix = download, algorithm, prefix.lower()

    def __call__(self, url: str, output_file: str, pooch_instance) -> None:
        self._download(url, output_file, pooch_instance)
        digest = pooch.file_hash(output_file, alg=self._algorithm)
        if not digest.startswith(self._prefix):
            raise ValueError(f"{self._algorithm.upper()} hash of the downloaded file ({digest}) does not start "
                             f"with the known {self._prefix}")


_HEX_DIGITS = {"md5": 32, "sha1": 40, "sha256": 64}


def download_file(
    url: str,
    dest: Path | str,
    *,
    what: str,
    how_to_fix: str,
    progress: Optional[ProgressFn] = None,
    known_hash: Optional[str] = None,
) -> Path:
    """Return ``dest``, downloading it from ``url`` first if it does not exist yet.

    ``known_hash`` is ``"algorithm:hexdigest"`` as pooch takes it (``"sha256:…"``,
    ``"md5:…"``); the hex digest may be a prefix (torchvision file names carry the first
    hex digits). A file that fails the check is never left at ``dest``. ``what`` and
    ``how_to_fix`` go into the error raised when the download is impossible; the URL and
    destination path are always added to the fix.
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

    bar = _ProgressBar(progress, f"download {dest.name}") if progress else False
    downloader = pooch.HTTPDownloader(progressbar=bar, chunk_size=CHUNK_BYTES, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
    algorithm, _, digest = (known_hash or "").lower().partition(":")
    if known_hash and len(digest) < _HEX_DIGITS.get(algorithm, 0):
        downloader, known_hash = _PrefixChecked(downloader, algorithm, digest), None
    try:
        pooch.retrieve(url, known_hash=known_hash, fname=dest.name, path=dest.parent, downloader=downloader)
    except ValueError as exc:  # pooch's hash check, or the prefix check above
        raise MissingResourceError(
            what,
            looked_in=looked_in,
            how_to_fix=f"The download from {url} was corrupt ({exc}). Try again. " + manual_fix(url, dest, how_to_fix),
        ) from exc
    except OSError as exc:  # requests' errors are OSErrors too
        raise MissingResourceError(
            what,
            looked_in=looked_in,
            how_to_fix=f"Downloading {url} failed ({exc}). " + manual_fix(url, dest, how_to_fix),
        ) from exc
    return dest

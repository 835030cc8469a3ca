"""Start the app as a local server process and wait until it answers its health check.

Tests, benchmarks and ``docs/make_screenshots.py`` all start the app this way:
``python -m dissect_core app`` (or ``python -m streamlit run SCRIPT`` for a folder written
by ``dissect host``) on a free port of 127.0.0.1, headless, then poll
``/_stcore/health`` until it says ``ok``. If the server exits or stays silent, the error
says so and quotes the end of the server's output.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Optional, Sequence, Union

HEALTH_PATH = "/_stcore/health"
START_TIMEOUT_S = 120.0  # a cold start on a busy 2-core machine takes a few seconds; torch is not imported
OUTPUT_TAIL_CHARS = 4000


class ServerStartError(RuntimeError):
    """The app's server exited or did not answer its health check in time."""


@dataclass(frozen=True)
class LocalServer:
    """A running app server: its base URL (no trailing slash) and its process."""

    url: str
    process: subprocess.Popen


def free_port() -> int:
    """A TCP port of 127.0.0.1 that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_command(
    port: int, *, results: Sequence[Union[str, Path]] = (), hosted: bool = False, script: Optional[Path] = None,
) -> list[str]:
    """The command line that serves the app on 127.0.0.1:``port``: ``dissect app``, or
    ``streamlit run script`` when a script is given (a hosted folder's own copy)."""
    options = ["--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1",
               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    app_args = [arg for folder in results for arg in ("--results", str(folder))] + (["--hosted"] if hosted else [])
    if script is None:
        return [sys.executable, "-m", "dissect_core", "app", *app_args, *options]
    return [sys.executable, "-m", "streamlit", "run", str(script), *options, "--", *app_args]


@contextmanager
def local_server(
    *,
    results: Sequence[Union[str, Path]] = (),
    hosted: bool = False,
    script: Optional[Path] = None,
    cwd: Optional[Union[str, Path]] = None,
    env: Optional[Mapping[str, str]] = None,
    timeout_s: float = START_TIMEOUT_S,
) -> Iterator[LocalServer]:
    """Serve the app (see ``server_command``) until the block ends; yields once it is healthy.

    ``env`` replaces the environment (default: this process's). Raises ``ServerStartError``
    with the end of the server's output when it exits early or is not healthy in ``timeout_s``.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(
            server_command(port, results=results, hosted=hosted, script=script), cwd=cwd,
            env=dict(os.environ if env is None else env), stdout=output, stderr=subprocess.STDOUT,
        )
        try:
            _wait_until_healthy(process, url, timeout_s, output)
            yield LocalServer(url, process)
        finally:
            _stop(process)


def _wait_until_healthy(process: subprocess.Popen, url: str, timeout_s: float, output) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise ServerStartError(f"The app's server exited with code {process.returncode} before it answered "
                                   f"{url}{HEALTH_PATH}. Its output ends with:\n{_tail(output)}")
        try:
            with urllib.request.urlopen(f"{url}{HEALTH_PATH}", timeout=2) as response:
                if response.read().decode().strip() == "ok":
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise ServerStartError(f"The app's server did not answer {url}{HEALTH_PATH} within {timeout_s:.0f} s. "
                                   f"Its output ends with:\n{_tail(output)}")
        time.sleep(0.25)


def _tail(output) -> str:
    # Read without moving the file offset the server process shares (it may still be writing).
    size = os.fstat(output.fileno()).st_size
    start = max(0, size - 4 * OUTPUT_TAIL_CHARS)
    return os.pread(output.fileno(), size - start, start).decode(errors="replace")[-OUTPUT_TAIL_CHARS:]


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)

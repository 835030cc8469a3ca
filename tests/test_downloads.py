"""download_file (pooch underneath) and the connectivity check, against a loopback HTTP server (no internet)."""
from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import time

import pytest

from dissect_core.engine import downloads
from dissect_core.common.errors import MissingResourceError
from dissect_core.common.files import file_sha256

PAYLOAD = bytes(range(256)) * 5000  # 1.28 MB: more than one 1 MB chunk


@pytest.fixture
def local_server(tmp_path):
    """Serve ``tmp_path/served`` on 127.0.0.1; yields the base URL."""
    served = tmp_path / "served"
    served.mkdir()
    (served / "weights.bin").write_bytes(PAYLOAD)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, *args):  # keep test output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_is_reachable_on_loopback(local_server, monkeypatch):
    monkeypatch.setenv("no_proxy", "*")
    assert downloads.is_reachable(local_server + "/weights.bin")
    start = time.perf_counter()
    assert not downloads.is_reachable(f"http://127.0.0.1:{_closed_port()}/x", timeout=1.0)
    assert time.perf_counter() - start < 2


def test_download_verifies_reports_progress_and_renames(local_server, tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "*")
    dest = tmp_path / "cache" / "weights.bin"
    calls = []
    out = downloads.download_file(
        local_server + "/weights.bin",
        dest,
        what="Test weights",
        how_to_fix="",
        progress=lambda *args: calls.append(args),
        known_hash="sha256:" + hashlib.sha256(PAYLOAD).hexdigest()[:10],  # a prefix, as torchvision names carry
    )
    assert out == dest and dest.read_bytes() == PAYLOAD
    assert calls[0] == ("download weights.bin", 0, len(PAYLOAD))
    assert calls[-1] == ("download weights.bin", len(PAYLOAD), len(PAYLOAD))
    assert [p.name for p in dest.parent.iterdir()] == ["weights.bin"]  # no temp file left behind


def test_full_hash_is_checked_by_pooch(local_server, tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "*")
    dest = tmp_path / "weights.bin"
    md5 = "md5:" + hashlib.md5(PAYLOAD).hexdigest()
    assert downloads.download_file(local_server + "/weights.bin", dest, what="W", how_to_fix="", known_hash=md5) == dest
    assert dest.read_bytes() == PAYLOAD


@pytest.mark.parametrize("known_hash", ["sha256:00ff", "sha256:" + "0" * 64, "md5:" + "0" * 32])
def test_checksum_mismatch_leaves_no_file(local_server, tmp_path, monkeypatch, known_hash):
    monkeypatch.setenv("no_proxy", "*")
    dest = tmp_path / "cache" / "weights.bin"
    with pytest.raises(MissingResourceError, match="corrupt") as info:
        downloads.download_file(local_server + "/weights.bin", dest, what="W", how_to_fix="", known_hash=known_hash)
    assert str(dest.resolve()) in str(info.value)  # where to save a copy fetched by hand
    assert list(dest.parent.iterdir()) == []  # neither the file nor pooch's temporary one


def test_server_error_says_the_download_failed(local_server, tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "*")
    with pytest.raises(MissingResourceError, match="404") as info:
        downloads.download_file(local_server + "/absent.bin", tmp_path / "cache" / "absent.bin", what="W",
                                how_to_fix="")
    assert "Downloading " + local_server + "/absent.bin failed" in str(info.value)
    assert list((tmp_path / "cache").iterdir()) == []


def test_existing_file_is_returned_without_network(tmp_path, monkeypatch):
    dest = tmp_path / "present.bin"
    dest.write_bytes(b"x")
    monkeypatch.setattr(downloads, "is_reachable", lambda *a, **k: pytest.fail("network checked"))
    assert downloads.download_file("http://example.invalid/present.bin", dest, what="W", how_to_fix="") == dest


def test_offline_error_names_file_location_url_and_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(downloads, "is_reachable", lambda *a, **k: False)
    dest = tmp_path / "sub" / "model.pth"
    start = time.perf_counter()
    with pytest.raises(MissingResourceError) as info:
        downloads.download_file(
            "https://example.org/files/model.pth", dest, what="The model.pth weights", how_to_fix="Or use --x."
        )
    assert time.perf_counter() - start < 1
    message = str(info.value)
    for part in ("model.pth", str(dest.resolve()), "https://example.org/files/model.pth", "example.org", "Or use --x."):
        assert part in message
    assert not dest.parent.exists()


def test_file_sha256_follows_changes(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(PAYLOAD)
    assert file_sha256(path) == hashlib.sha256(PAYLOAD).hexdigest()
    path.write_bytes(PAYLOAD + b"!")  # a changed file must not hit the memo
    assert file_sha256(path) == hashlib.sha256(PAYLOAD + b"!").hexdigest()


def test_broden_download_is_checked_against_its_known_hash(local_server, tmp_path, monkeypatch):
    # The served file is not Broden, so the pinned MD5 must reject it before anything is unpacked.
    from dissect_core.engine import datasets

    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setattr(datasets, "BRODEN_URL", local_server + "/weights.bin")
    with pytest.raises(MissingResourceError, match="corrupt") as info:
        datasets.download_broden(tmp_path / "data", progress=None)
    assert datasets.BRODEN_HASH.removeprefix("md5:") in str(info.value)
    assert list((tmp_path / "data").iterdir()) == []

"""Exported files get the user's umask, as files made with ``open`` do: a bundle, a host
folder or a run folder written with umask 022 is readable by others (not 0600/0700)."""
from __future__ import annotations

import os
import stat
import sys

import pytest

from dissect_core.common.files import atomic_write_bytes, staging_dir, umask

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")


@pytest.fixture(params=[0o022, 0o077, 0o002])
def user_umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_umask_is_read_without_changing_it(user_umask):
    assert umask() == user_umask
    assert umask() == user_umask


def test_atomic_writes_get_the_mode_open_would_give(tmp_path, user_umask):
    atomic_write_bytes(tmp_path / "bundle.zip", b"data")
    with open(tmp_path / "plain", "wb"):
        pass
    mode = stat.S_IMODE((tmp_path / "bundle.zip").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o666 & ~user_umask


def test_staging_folders_get_the_mode_mkdir_would_give(tmp_path, user_umask):
    folder = staging_dir(tmp_path, ".host-")
    (tmp_path / "plain").mkdir()
    assert stat.S_IMODE(folder.stat().st_mode) == stat.S_IMODE((tmp_path / "plain").stat().st_mode) \
        == 0o777 & ~user_umask

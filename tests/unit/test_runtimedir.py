"""Sweeping the private directories of killed `--http-workers` servers (real files, flock)."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from hookrunner import runtimedir


@pytest.fixture(autouse=True)
def own_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


def test_a_directory_in_use_is_kept_and_swept_once_its_owner_is_gone(tmp_path: Path) -> None:
    live, fds = runtimedir.create()
    assert live.parent == tmp_path and (live / "owner.lock").exists()
    assert runtimedir.sweep() == []  # its lock is held
    assert live.exists()
    for fd in fds:
        os.close(fd)  # the server died
    assert runtimedir.sweep() == [live]
    assert not live.exists()


def test_a_tmp_cleaner_leaves_a_directory_in_use_alone(tmp_path: Path) -> None:
    """systemd-tmpfiles skips a directory some process holds a flock on (tmpfiles.d(5)): it
    tries LOCK_EX itself. Ten days after the start it removed a server's metrics files, lock
    and rules copy (/metrics answered 500). Where the cleaner is installed, it is run."""
    live, fds = runtimedir.create()
    (live / "metrics").mkdir()
    (live / "metrics" / "counter_1.db").write_text("x")
    cleaner = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(cleaner, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(cleaner)
    tmpfiles = shutil.which("systemd-tmpfiles")
    if tmpfiles is not None and os.geteuid() == 0:
        old = time.time() - 11 * 86400
        for path in [live, *live.rglob("*")]:
            os.utime(path, (old, old), follow_symlinks=False)
        conf = tmp_path.parent / f"{tmp_path.name}-tmpfiles.conf"
        conf.write_text(f"d {tmp_path} 0755 root root amAM:10d\n")
        try:
            subprocess.run([tmpfiles, "--clean", str(conf)], check=True, capture_output=True)
        finally:
            conf.unlink()
        assert (live / "metrics" / "counter_1.db").exists() and (live / "owner.lock").exists()
    for fd in fds:
        os.close(fd)


def test_only_directories_it_made_are_touched(tmp_path: Path) -> None:
    (tmp_path / "hookrunner-other").mkdir()  # no owner.lock
    (tmp_path / "hookrunner-pg-x").mkdir()
    (tmp_path / "hookrunner-file").write_text("")
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "owner.lock").write_text("")
    (tmp_path / "hookrunner-link").symlink_to(target)  # never followed
    assert runtimedir.sweep() == []
    assert {p.name for p in tmp_path.iterdir()} == {
        "hookrunner-other", "hookrunner-pg-x", "hookrunner-file", "elsewhere", "hookrunner-link"}
    assert (target / "owner.lock").exists()

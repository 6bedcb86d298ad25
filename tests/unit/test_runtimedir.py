"""Sweeping the private directories of killed `--http-workers` servers (real files, flock)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from hookrunner import runtimedir


@pytest.fixture(autouse=True)
def own_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


def test_a_directory_in_use_is_kept_and_swept_once_its_owner_is_gone(tmp_path: Path) -> None:
    live, fd = runtimedir.create()
    assert live.parent == tmp_path and (live / "owner.lock").exists()
    assert runtimedir.sweep() == []  # its lock is held
    assert live.exists()
    os.close(fd)  # the server died
    assert runtimedir.sweep() == [live]
    assert not live.exists()


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

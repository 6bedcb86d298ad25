"""The record of which rules the server on a --data serves (hookrunner.servedrules)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hookrunner import servedrules


def test_a_record_names_the_absolute_directories_and_the_last_server_wins(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path)
    servedrules.record(tmp_path, Path("rules"), Path("."), 2.0)
    assert servedrules.recorded(tmp_path) == (tmp_path / "rules", tmp_path)
    servedrules.record(tmp_path, tmp_path / "other", tmp_path / "other", 3600.0)
    assert servedrules.recorded(tmp_path) == (tmp_path / "other", tmp_path / "other")
    assert servedrules.recorded_timeout(tmp_path) == 3600.0
    # Private, as everything under --data; and no temporary file is left behind.
    assert stat.S_IMODE(os.stat(tmp_path / servedrules.FILE).st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "rules", servedrules.FILE]


@pytest.mark.parametrize("text", [
    "", "{", "[]", '"x"', '{"rules": 1, "root": "/"}', '{"rules": "", "root": "/"}',
    '{"rules": "/"}', '{"rules": "/nonexistent-hr", "root": "/"}', "\udcff",
])
def test_anything_but_a_record_of_two_directories_is_no_record(tmp_path: Path, text: str) -> None:
    (tmp_path / servedrules.FILE).write_bytes(text.encode("utf-8", "surrogateescape"))
    assert servedrules.recorded(tmp_path) is None


def test_no_record_where_none_was_written_or_it_cannot_be_read(tmp_path: Path) -> None:
    assert servedrules.recorded(tmp_path) is None
    assert servedrules.recorded(tmp_path / "missing") is None
    (tmp_path / servedrules.FILE).mkdir()  # not a file
    assert servedrules.recorded(tmp_path) is None


def test_a_write_that_cannot_be_made_raises_for_the_server_to_warn(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        servedrules.record(tmp_path / "missing", tmp_path, tmp_path, 1.0)
    assert not (tmp_path / "missing").exists()


def test_a_link_in_the_temporary_files_place_is_replaced_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("keep")
    (tmp_path / f".{servedrules.FILE}.{os.getpid()}").symlink_to(target)
    servedrules.record(tmp_path, tmp_path, tmp_path, 1.0)
    assert target.read_text() == "keep"
    assert servedrules.recorded(tmp_path) == (tmp_path, tmp_path)


@pytest.mark.parametrize("timeout", ["", ', "default_timeout": 0', ', "default_timeout": -1',
                                     ', "default_timeout": true', ', "default_timeout": "1h"',
                                     ', "default_timeout": NaN', ', "default_timeout": Infinity'])
def test_a_record_without_a_usable_default_timeout_gives_none(tmp_path: Path, timeout: str) -> None:
    """probe: the record had no default timeout, and a shell's `replay` gave its runs the
    shell's; one an older version wrote (or a bad value) leaves the shell's setting, while
    its directories still count."""
    (tmp_path / servedrules.FILE).write_text(f'{{"rules": "/", "root": "/"{timeout}}}')
    assert servedrules.recorded_timeout(tmp_path) is None
    assert servedrules.recorded(tmp_path) == (Path("/"), Path("/"))

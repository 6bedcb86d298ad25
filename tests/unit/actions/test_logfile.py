"""FileLog: appended, capped with one note, notes on a line of their own; tail()."""

from __future__ import annotations

from pathlib import Path

from hookrunner.actions.logfile import FileLog, tail


def test_cap_keeps_the_first_bytes_and_notes_once(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with FileLog(path, cap_bytes=10) as log:
        log.write(b"12345")
        log.write(b"67890abc")
        log.write(b"more")
        log.note("timed out after 1s")
    assert path.read_text() == (
        "1234567890\n[hookrunner] output truncated at 10 bytes\n[hookrunner] timed out after 1s\n"
    )


def test_note_after_partial_line_starts_a_new_line(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with FileLog(path, cap_bytes=100) as log:
        log.write(b"no newline")
        log.note("canceled")
    assert path.read_text() == "no newline\n[hookrunner] canceled\n"


def test_log_is_private_and_appends(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "log"
    with FileLog(path) as log:
        log.write(b"a\n")
    with FileLog(path) as log:
        log.write(b"b\n")
    assert path.read_text() == "a\nb\n"
    assert path.stat().st_mode & 0o777 == 0o600


def test_tail(tmp_path: Path) -> None:
    path = tmp_path / "log"
    assert tail(path, 10) == ""
    path.write_bytes("é".encode() * 10)  # 2 bytes each
    assert tail(path, 5) == "éé"  # the cut continuation byte is dropped
    assert tail(path, 1000) == "é" * 10

"""FileLog: appended, capped with one note, notes on a line of their own, deferred to disk
until asked (or too large); tail()."""

from __future__ import annotations

from pathlib import Path

from hookrunner.actions.logfile import KEEP_IN_MEMORY, FileLog, tail


def test_cap_keeps_the_start_and_the_end_with_what_was_dropped_between(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with FileLog(path, cap_bytes=40) as log:  # the last 10 bytes (a quarter) past the first 30
        for i in range(20):
            log.write(b"line %02d\n" % i)  # 8 bytes each
        assert path.read_text() == (
            "line 00\nline 01\nline 02\nline 0"
            "\n[hookrunner] output truncated at 40 bytes: the rest is kept as its last 10 bytes,"
            " written at the end or the next note\n")
        log.note("timed out after 1s")
        log.write(b"late\n")
    assert path.read_text() == (
        "line 00\nline 01\nline 02\nline 0"
        "\n[hookrunner] output truncated at 40 bytes: the rest is kept as its last 10 bytes,"
        " written at the end or the next note\n"
        "[hookrunner] 120 bytes of output dropped here; the last 10 follow\n"
        "8\nline 19\n"
        "[hookrunner] timed out after 1s\n"
        "late\n")


def test_the_kept_end_starts_on_a_whole_character(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with FileLog(path, cap_bytes=40) as log:
        log.write(b"x" * 30 + "é".encode() * 40)  # 2 bytes each: the 10th byte from the end
        log.write(b"!")  # is the middle of one
    assert path.read_text().endswith("; the last 9 follow\n" + "é" * 4 + "!")


def test_a_tiny_cap_keeps_only_the_start(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with FileLog(path, cap_bytes=3) as log:
        log.write(b"abcdef")
        log.note("done")
    assert path.read_text() == "abc\n[hookrunner] output truncated at 3 bytes\n[hookrunner] done\n"


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


def test_a_deferred_log_is_in_memory_until_asked_to_disk(tmp_path: Path) -> None:
    path = tmp_path / "run" / "1.log"
    log = FileLog(path, cap_bytes=100, deferred=True)
    log.note("started")
    log.write(b"out\n")
    assert not path.parent.exists() and not log.on_disk
    assert log.to_disk() == path and log.on_disk
    assert path.read_text() == "[hookrunner] started\nout\n"  # what it held, at once
    log.write(b"more")
    log.note("done")
    log.close()
    assert path.read_text() == "[hookrunner] started\nout\nmore\n[hookrunner] done\n"
    assert log.text() == path.read_text()
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_deferred_log_that_ends_in_memory_creates_no_file_unless_followed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "run" / "1.log"
    log = FileLog(path, cap_bytes=3, deferred=True)
    log.write(b"short\n")
    log.close()
    assert not path.parent.exists()
    # Its output capped, the note kept: all of it goes to the store (no file to read back).
    assert log.text() == "sho\n[hookrunner] output truncated at 3 bytes\n"
    # Followed after its end (before it is recorded): written whole, and closed.
    assert log.to_disk() == path
    assert path.read_text() == log.text()
    log.write(b"late")
    assert path.read_text() == log.text()


def test_a_deferred_log_goes_to_disk_when_it_outgrows_memory(tmp_path: Path) -> None:
    path = tmp_path / "1.log"
    log = FileLog(path, deferred=True)
    chunk = b"x" * 1000 + b"\n"
    for _ in range(KEEP_IN_MEMORY // len(chunk) + 1):
        log.write(chunk)
    assert log.on_disk
    log.close()
    assert path.read_bytes() == chunk * (KEEP_IN_MEMORY // len(chunk) + 1)
    assert log.text() is None  # too large to keep: read back from the file


def test_a_deferred_log_that_cannot_reach_disk_says_so_and_keeps_its_output_in_memory(
    tmp_path: Path,
) -> None:
    (tmp_path / "run").write_text("a file where the log's directory should be")
    log = FileLog(tmp_path / "run" / "1.log", deferred=True)
    log.write(b"kept\n")
    assert log.to_disk() is None
    assert isinstance(log.failed, OSError) and not log.truncated
    log.write(b"also kept\n")  # saved with the run's record
    log.close()
    assert log.text() == "kept\nalso kept\n"


def test_a_log_file_that_fills_the_disk_goes_on_in_memory(tmp_path: Path) -> None:
    """The file fails (ENOSPC from /dev/full); a log small enough for memory is still whole
    there, for the run's record; of a larger one the record gets what the file has, and a
    note of what it lacks."""
    log = FileLog(tmp_path / "1.log", deferred=True)
    log.write(b"first\n")
    assert log.to_disk() is not None and log._file is not None
    log._file.close()
    log._file = open("/dev/full", "ab", buffering=0)  # noqa: SIM115 (the log closes it)
    log.write(b"second\n")
    assert isinstance(log.failed, OSError) and not log.truncated
    log.note("succeeded")
    log.close()
    assert log.text() == "first\nsecond\n[hookrunner] succeeded\n"
    assert (tmp_path / "1.log").read_text() == "first\n"
    big = FileLog(tmp_path / "2.log", deferred=True)
    big.write(b"x\n")
    assert big.to_disk() is not None and big._file is not None
    big._file.close()
    big._file = open("/dev/full", "ab", buffering=0)  # noqa: SIM115
    big.write(b"y" * (KEEP_IN_MEMORY + 1))
    big.note("succeeded")
    big.close()
    assert big.text() is None and not big.complete  # the record gets the file's part...
    assert big.loss_text() == (  # ...and this after it
        f"[hookrunner] {KEEP_IN_MEMORY + 1} bytes of output could not be written to the log"
        " file here (No space left on device)\n[hookrunner] succeeded\n")


def test_a_log_file_takes_writes_again_once_there_is_room_and_says_what_it_missed(
    tmp_path: Path,
) -> None:
    log = FileLog(tmp_path / "1.log")
    log.write(b"before\npartial")
    real = log._file
    log._file = open("/dev/full", "ab", buffering=0)  # noqa: SIM115 (closed below)
    log.write(b" line\n" + b"z" * 100_000)  # lost: the disk is full
    log.note("timed out after 1s")  # lost too, for now
    log._file.close()
    log._file = real  # room again
    log.write(b"after\n")
    log.close()
    assert log.complete and isinstance(log.failed, OSError)
    assert (tmp_path / "1.log").read_text() == (
        "before\npartial\n[hookrunner] 100006 bytes of output could not be written to the log"
        " file here (No space left on device)\n[hookrunner] timed out after 1s\nafter\n")

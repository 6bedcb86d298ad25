"""FileLog: appended, capped with one note, notes on a line of their own, deferred to disk
until asked (or too large); tail()."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hookrunner.actions import logfile
from hookrunner.actions.logfile import KEEP_IN_MEMORY, FileLog, tail


def test_cap_keeps_the_start_and_the_end_with_what_was_dropped_between(tmp_path: Path) -> None:
    path = tmp_path / "log"
    out = b"".join(b"line %02d\n" % i for i in range(100))  # 800 bytes
    with FileLog(path, cap_bytes=400) as log:  # the first 300, the last 100 (a quarter)
        log.write(out[:500])
        assert path.read_bytes() == out[:300] + (
            b"\n[hookrunner] output past 400 bytes: after its first 300, only its last 100 bytes"
            b" are kept, written when the run ends\n")  # said at once, to a follower
        log.note("the first note")  # in the dropped part: kept, before the drop's note
        log.write(out[500:])
        log.note("timed out after 1s")  # in the kept end: in its place
        log.write(b"late\n")
    note = b"[hookrunner] timed out after 1s\n"
    end = (out[500:] + note + b"late\n")[-100 - len(note):]  # 100 bytes of output, and the note
    assert path.read_bytes() == out[:300] + (
        b"\n[hookrunner] output past 400 bytes: after its first 300, only its last 100 bytes"
        b" are kept, written when the run ends\n"
        b"[hookrunner] the first note\n"
        b"[hookrunner] 405 bytes of output dropped here; the last 100 follow\n") + end


def test_output_within_the_cap_reads_as_it_came_with_its_notes_in_place(tmp_path: Path) -> None:
    """Past the start but within the cap: held until the end, then written whole, without a
    note of truncation (one was written with nothing dropped, and a newline added)."""
    path = tmp_path / "log"
    out = bytes(range(33, 123)) * 4 + b"\n"  # 361 bytes, one line
    with FileLog(path, cap_bytes=400) as log:
        log.write(out[:350])
        log.note("a note mid-line")
        log.write(out[350:])
        log.note("succeeded")
    assert path.read_bytes() == (out[:350] + b"\n[hookrunner] a note mid-line\n" + out[350:]
                                 + b"[hookrunner] succeeded\n")


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
    assert big.loss_text() == (  # ...and this after it: what it missed, its end kept
        f"[hookrunner] {KEEP_IN_MEMORY + 1} bytes of output could not be written to the log"
        f" file here (No space left on device); the last {KEEP_IN_MEMORY + 1} follow\n"
        + "y" * (KEEP_IN_MEMORY + 1) + "\n[hookrunner] succeeded\n")


def test_a_log_file_takes_writes_again_once_there_is_room_and_says_what_it_missed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logfile, "RETRY_FILE_EVERY", 0.0)  # (tried again at every write)
    log = FileLog(tmp_path / "1.log", cap_bytes=400_000)  # keeps the last 100,000 it missed
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
        " file here (No space left on device); the last 100000 follow\n" + "z" * 100_000
        + "\n[hookrunner] timed out after 1s\nafter\n")


def test_without_a_file_what_memory_cannot_hold_comes_after_it_in_order(tmp_path: Path) -> None:
    """No file could be made (its directory is a file): a later small line went into the
    memory copy, before the earlier big chunk that did not fit; and the note was glued to a
    partial line."""
    (tmp_path / "run").write_text("a file where the log's directory should be")
    log = FileLog(tmp_path / "run" / "1.log", deferred=True)
    log.write(b"partial")
    log.write(b"B" * KEEP_IN_MEMORY)  # does not fit: missed
    log.write(b"later\n")  # fits, but comes after what was missed
    log.note("succeeded")
    log.close()
    assert log.text() == (
        f"partial\n[hookrunner] {KEEP_IN_MEMORY + 6} bytes of output could not be written to"
        f" the log file here (Not a directory); the last {KEEP_IN_MEMORY + 6} follow\n"
        + "B" * KEEP_IN_MEMORY + "later\n[hookrunner] succeeded\n")


def test_a_note_of_what_was_missed_goes_in_whole_or_not_at_all(tmp_path: Path) -> None:
    """A disk with a little room took part of the note (and of the missed output's end),
    then refused; the whole note came again later, after the part. In a process of its own
    whose file size limit (RLIMIT_FSIZE: a partial write, then EFBIG) plays the disk."""
    code = f"""
import os, resource
from hookrunner.actions import logfile
from hookrunner.actions.logfile import FileLog
logfile.RETRY_FILE_EVERY = 0.0
path = {str(tmp_path / "1.log")!r}
log = FileLog(path)
log.write(b"start\\n")
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (6, hard))  # full
log.write(b"x" * 5000 + b"\\n")  # missed
resource.setrlimit(resource.RLIMIT_FSIZE, (200, hard))  # a little room: part of the note
log.write(b"y\\n")  # missed too: the note did not fit
assert os.path.getsize(path) == 6, os.path.getsize(path)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
log.write(b"end\\n")
log.close()
print(open(path).read().count("could not be written"))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30)
    assert (done.returncode, done.stdout.strip()) == (0, "1"), done.stderr
    text = (tmp_path / "1.log").read_text()
    assert text == ("start\n[hookrunner] 5003 bytes of output could not be written to the log"
                    " file here (File too large); the last 5003 follow\n" + "x" * 5000
                    + "\ny\nend\n"), text[:300]


def test_notes_a_refused_file_missed_keep_their_places_and_are_not_counted_as_output(
    tmp_path: Path,
) -> None:
    """The notes written at the end (the kept end's, the result) were counted as output the
    file missed, so the count was off by their length, the shown end lost as many bytes of
    output, and a timeout note came after all the output it had come amid."""
    log = FileLog(tmp_path / "1.log", cap_bytes=400)  # start 300, end 100
    log.write(b"s" * 10 + b"\n")
    log._file = open("/dev/full", "ab", buffering=0)  # noqa: SIM115 (the log closes it)
    log.write(b"a" * 40 + b"\n")  # missed (in the start part)
    log.note("timed out after 1s")  # missed, amid the output
    log.write(b"b" * 20 + b"\n")  # missed
    log.note("timed_out")  # the result, missed
    log.close()
    assert not log.complete
    assert log.loss_text() == (
        "[hookrunner] 62 bytes of output could not be written to the log file here (No space"
        " left on device); the last 62 follow\n" + "a" * 40 + "\n[hookrunner] timed out after"
        " 1s\n" + "b" * 20 + "\n[hookrunner] timed_out\n")


def test_the_start_of_a_capped_log_ends_on_a_whole_character(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with FileLog(path, cap_bytes=40) as log:  # the start: 30 bytes; "€" is 3
        log.write(b"x" * 29 + "€".encode() * 20)
    data = path.read_bytes()
    assert data.startswith(b"x" * 29 + b"\n[hookrunner] output past 40 bytes"), data
    assert data.decode("utf-8")  # whole characters throughout


def test_a_note_cut_short_by_a_full_disk_leaves_no_part_of_it(tmp_path: Path) -> None:
    """A full disk took part of a note (`[hoo`), and the whole note came again later. In a
    process of its own whose file size limit (RLIMIT_FSIZE: a partial write, then EFBIG)
    plays the disk."""
    code = f"""
import resource
from hookrunner.actions import logfile
from hookrunner.actions.logfile import FileLog
logfile.RETRY_FILE_EVERY = 0.0
path = {str(tmp_path / "1.log")!r}
log = FileLog(path)
log.write(b"a" * 95 + b"\\n")
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (100, hard))  # room for 4 bytes of the note
log.note("timeout")
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
log.write(b"after\\n")
log.close()
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "1.log").read_bytes() == b"a" * 95 + b"\n[hookrunner] timeout\nafter\n"


def test_a_log_that_goes_to_a_full_disk_keeps_what_it_held_in_memory(tmp_path: Path) -> None:
    """A run going on past a second (or followed) has its log written to a file: on a full
    disk, what the memory held (its first note too) was counted as missed output and never
    shown. It is written as it was once the file takes writes."""
    path = tmp_path / "1.log"
    log = FileLog(path, deferred=True)
    log.note("run R rule r attempt 1/1 on node n")
    log.write(b"first line\n")
    real_open = log._open
    log._open = lambda: open("/dev/full", "ab", buffering=0)  # type: ignore[method-assign] # noqa: SIM115
    assert log.to_disk() == path and not log.complete  # made, and refused
    assert log.text() is not None  # (the record would get the memory's copy, whole)
    log._file = real_open()  # room again
    log._retry_file_at = 0.0
    log.write(b"second line\n")
    log.close()
    assert log.complete
    assert path.read_text() == "[hookrunner] run R rule r attempt 1/1 on node n\nfirst line\n" \
                               "second line\n"


def test_a_note_quoting_a_value_stays_one_line(tmp_path: Path) -> None:
    """A program path a payload made (`zz\\n[hookrunner] succeeded`) added a line that read
    as hookrunner's own to a failed run's log."""
    path = tmp_path / "run.log"
    with FileLog(path, cap_bytes=4000) as log:
        log.note("executable not found: 'scripts/zz\n[hookrunner] succeeded\x1b[0m.sh'")
    text = path.read_text()
    assert text.count("\n") == 1 and text.startswith("[hookrunner] executable not found"), text
    assert "\\u000a[hookrunner] succeeded\\u001b[0m" in text, text

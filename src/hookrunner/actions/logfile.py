"""A run's output log on disk: appended, flushed per write (readers stream it), capped.

A log may start in memory (`deferred`) and go to disk only when asked (`to_disk`): the
dispatcher does so for runs still going after a second, for logs past `KEEP_IN_MEMORY`, and
when someone follows the run. A run that ends sooner never creates a file: its log is saved
with its record in the store. (Creating two inodes per run was a fifth of the server's CPU
per action on this project's journal-less ext4, where freshly deleted inodes are scanned
past.)
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from hookrunner.logs import terminal_safe
from hookrunner.private import PRIVATE_FILE, private_dir
from hookrunner.redact import scrub
from hookrunner.settings import DEFAULT_LOG_CAP  # one default, named once

NOTE_PREFIX = "[hookrunner] "
RETRY_FILE_EVERY = 1.0  # seconds between tries of a log file a full disk refused
KEEP_IN_MEMORY = 64 * 1024  # a log up to this size is also kept in memory: no read-back
# Of output past the cap, its end is kept (where a failing script says why), up to this much
# and a quarter of the cap: the log holds the start, a note, and the end.
TAIL_KEPT = 256 * 1024
# What a capped log holds besides its capped output (hookrunner's notes: the run's first line,
# Terraform's steps, what was dropped): the run's record reads this much past the cap, so it
# holds what the file does.
NOTES_ROOM = 64 * 1024
_UTF8_CONTINUATION = range(0x80, 0xC0)


class FileLog:
    """`LogSink` writing to `path`. Process output is kept up to `cap_bytes`: its start, and
    past that, the log's last `tail_bytes` (output and notes alike, in order), held in memory
    and written when the log closes; where something was dropped, notes say how much and
    where. Output within the cap reads as it came.

    `deferred`: kept in memory until `to_disk()` (or until it outgrows KEEP_IN_MEMORY)."""

    def __init__(self, path: Path | str, cap_bytes: int = DEFAULT_LOG_CAP, *,
                 deferred: bool = False) -> None:
        self.path = path if isinstance(path, Path) else Path(path)  # (Path(a Path) parses again)
        self.cap_bytes = cap_bytes
        self.tail_bytes = min(cap_bytes // 4, TAIL_KEPT)
        self.written = 0  # bytes of process output written in the log's start so far
        self.truncated = False  # output went past the start: the rest goes to `_tail` first
        # Output past the start, not yet written: its end (`_tail`), where it begins in that
        # output (`_tail_base`), how much there was, and hookrunner's notes meanwhile, each
        # with the output position it came at (written in place, or before what is dropped).
        self._tail = bytearray()
        self._tail_base = 0
        self._past = 0
        self._tail_notes: list[tuple[int, bytes]] = []
        self._tail_at_line_start = True
        self._told = False  # the note that the middle goes was written
        self.failed: OSError | None = None  # the last write error of the log file, if any
        # Whether the file (or memory) ever missed some of the log: a first open refused,
        # then a file that took everything, missed nothing.
        self.missed_any = False
        self._lost_bytes = 0  # output the file missed since it last took a write
        self._missed_end = bytearray()  # the end of that output (up to tail_bytes)
        # Notes it missed meanwhile, each with how much output it had missed before it.
        self._unwritten: list[tuple[int, bytes]] = []
        self._retry_file_at = 0.0  # (monotonic) when a file that failed is tried again
        self._pending = b""  # what the memory held when the file, refusing it, was made
        self._file_at_line_start = True
        self._at_line_start = True
        self._copy: bytearray | None = bytearray()  # what was written, while it is small
        self._lock = threading.Lock()  # ansible-runner's thread may write too
        self._file: BinaryIO | None = None
        self._closed = False
        # Values rendered from secret request values (redact.hidden_values): hookrunner's own
        # notes quote rendered values (a path, a URL); they are scrubbed from them.
        self.hidden: tuple[str, ...] = ()
        if not deferred:
            self._file = self._open()  # an OSError here is the caller's

    def to_disk(self) -> Path | None:
        """Write the log to its file from now on (at once, what it holds so far; all of it if
        it has ended); its path, or None when the file cannot be written."""
        with self._lock:
            if self._file is None:
                self._spill()
                if self._closed and self._file is not None:
                    self._file.close()
            return self.path if self._file is not None else None

    @property
    def on_disk(self) -> bool:
        return self._file is not None

    def write(self, data: bytes) -> None:
        if not data:
            return
        with self._lock:
            if self._closed:
                return
            if self.truncated:
                self._keep_end(data)
                return
            room = self.cap_bytes - self.tail_bytes - self.written
            if len(data) <= room:
                self._append(data)
                self.written += len(data)
                return
            while room > 0 and data[room] in _UTF8_CONTINUATION:
                room -= 1  # the start ends on a whole character (the rest is the tail's)
            self._append(data[:room])
            self.written += room
            self.truncated = True
            self._tail_at_line_start = self._at_line_start
            self._keep_end(data[room:])

    def note(self, text: str) -> None:
        with self._lock:
            if self._closed:
                return
            text = scrub(text, self.hidden) if self.hidden else text
            # One line, as written: a value it quotes (a program path a payload made, `x\n
            # [hookrunner] succeeded`) must not add lines that read as hookrunner's own.
            text = terminal_safe(text.rstrip("\n"))
            if self.truncated and self.tail_bytes:  # placed with the output around it later
                prefix = b"" if self._tail_at_line_start else b"\n"
                self._tail_notes.append(
                    (self._past, prefix + (NOTE_PREFIX + text.rstrip("\n") + "\n").encode()))
                self._tail_at_line_start = True
            else:
                self._note(text)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._write_end()
                if self._file is not None and not self.complete:
                    self._note_loss()  # a last try, whenever the one before was
            self._closed = True
            if self._file is not None:
                self._file.close()

    def text(self) -> str | None:
        """The whole log as text (its output capped, its notes) if it was small enough to keep
        in memory, else None: then it is on disk, and `tail` reads it (with `loss_text`
        after it, where the file is not `complete`)."""
        with self._lock:
            if self._copy is None:
                return None
            text = self._copy.decode("utf-8", errors="replace")
            return text + self.loss_text() if self._file is None else text

    def __enter__(self) -> FileLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _keep_end(self, data: bytes) -> None:
        self._tail += data
        self._past += len(data)
        self._tail_at_line_start = data.endswith(b"\n")
        if len(self._tail) <= self.tail_bytes:
            return
        if not self._told:  # something will be dropped: said where, at once (to followers)
            self._told = True
            self._note(f"output past {self.cap_bytes} bytes: after its first "
                       f"{self.cap_bytes - self.tail_bytes}, only its last {self.tail_bytes} "
                       "bytes are kept, written when the run ends"
                       if self.tail_bytes else f"output truncated at {self.cap_bytes} bytes")
        if len(self._tail) > 2 * self.tail_bytes:  # trimmed in batches: amortized O(1)
            cut = len(self._tail) - self.tail_bytes
            self._tail_base += cut
            del self._tail[:cut]

    def _write_end(self) -> None:
        """The output past the start, with the notes that came meanwhile in their places:
        whole if it fits the cap, else its end after a note of what was dropped (the notes
        that came during the dropped part before that note)."""
        if not self.tail_bytes or not self._past:
            for _, note in self._tail_notes:
                self._append(note, note=True)
            self._tail_notes = []
            return
        cut = max(0, len(self._tail) - self.tail_bytes)
        while (self._tail_base or cut) and cut < len(self._tail) \
                and self._tail[cut] in _UTF8_CONTINUATION:
            cut += 1  # not from the middle of a character
        kept_from = self._tail_base + cut  # output position where the kept end begins
        end = bytes(self._tail[cut:])
        notes, self._tail_notes = self._tail_notes, []
        self._tail = bytearray()
        at = 0
        if kept_from:
            for pos, note in notes:
                if pos <= kept_from:
                    self._append(note.lstrip(b"\n"), note=True)  # (after the note: a line start)
            self._note(f"{_bytes(kept_from)} of output dropped here; the last {len(end)} follow")
            notes = [(pos, note) for pos, note in notes if pos > kept_from]
        for pos, note in notes:
            self._append(end[at:pos - kept_from])
            self._append(note, note=True)
            at = pos - kept_from
        self._append(end[at:])

    def _note(self, text: str) -> None:
        # A note always starts on a line of its own, even after a partial line of output.
        prefix = b"" if self._at_line_start else b"\n"
        self._append(prefix + (NOTE_PREFIX + text.rstrip("\n") + "\n").encode(), note=True)

    def _open(self) -> BinaryIO:
        private_dir(self.path.parent)  # logs hold whatever the action printed
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE)
        return os.fdopen(fd, "ab", buffering=0)

    def _spill(self) -> None:
        """Open the file and write what the memory holds (under the lock)."""
        try:
            self._file = self._open()
        except OSError as exc:
            self.failed = exc
            return
        if self._copy and self._write_whole(bytes(self._copy)):
            # Refused (a full disk): what it held is written first, as it is, once the file
            # takes writes again (its notes are notes, not missed output).
            self._pending = bytes(self._copy)
            self._retry_file_at = time.monotonic() + RETRY_FILE_EVERY
        if self.missed_any:
            # The memory stopped taking output when it missed some, before this file could
            # be opened: the file, which gets the note of it, is the record now (the memory
            # alone, without what it missed and unsaid, was: review).
            self._copy = None

    def _write_all(self, data: bytes) -> int:
        """Into the file, all of it (a full disk first writes part, then refuses); how many
        bytes it did not take."""
        assert self._file is not None
        view = memoryview(data)
        try:
            while view:
                view = view[self._file.write(view) or 0:]  # unbuffered: readers see it at once
        except OSError as exc:
            # Disk full or gone: the run goes on (its output is still drained, so it never
            # blocks on a full pipe); what the file misses is counted, and said there once
            # the file takes writes again, or with the run's record (loss_text).
            self.failed = exc
            if len(view) < len(data):
                self._file_at_line_start = False  # (whatever made it in ends mid-line)
            return len(view)
        self._file_at_line_start = data.endswith(b"\n")
        return 0

    def _to_file(self, data: bytes, note: bool) -> None:
        # After a failure the file is tried again at most every RETRY_FILE_EVERY (a write per
        # chunk of output would build the note each time, on the event loop), and the note
        # goes in whole or not at all (a part of it would be followed by all of it later).
        if not self.complete and (
                time.monotonic() < self._retry_file_at or not self._note_loss()):
            self._missed(data, note, len(data))
            return
        if note:
            if self._write_whole(data):
                self._missed(data, note, len(data))
        elif missed := self._write_all(data):
            self._missed(data, note, missed)

    def _write_whole(self, data: bytes) -> bool:
        """Write all of `data` or nothing of it (a part is cut back: it would be followed by
        all of it later); whether it was refused."""
        assert self._file is not None
        try:
            size = os.fstat(self._file.fileno()).st_size
        except OSError as exc:
            self.failed = exc
            return True
        at_line_start = self._file_at_line_start
        if missed := self._write_all(data):
            if missed < len(data):
                with contextlib.suppress(OSError):
                    os.ftruncate(self._file.fileno(), size)
            self._file_at_line_start = at_line_start
            return True
        return False

    def _note_loss(self) -> bool:
        """Write what the file missed and the note of it; False (nothing of it kept) if it
        fails."""
        if self._write_whole(self.loss_text().encode()):
            self._retry_file_at = time.monotonic() + RETRY_FILE_EVERY
            return False
        self._lost_bytes, self._unwritten, self._missed_end = 0, [], bytearray()
        self._pending = b""
        return True

    def _missed(self, data: bytes, note: bool, count: int) -> None:
        self.missed_any = True
        if self.complete:
            self._retry_file_at = time.monotonic() + RETRY_FILE_EVERY
        if note:  # (whole, even if part of it made it in)
            self._unwritten.append((self._lost_bytes, data))
            return
        self._lost_bytes += count
        if self.tail_bytes:  # its end is kept, for where the file takes writes again or the record
            self._missed_end += data[len(data) - count:]
            if len(self._missed_end) > 2 * self.tail_bytes:
                del self._missed_end[:len(self._missed_end) - self.tail_bytes]

    def loss_text(self) -> str:
        """What the file misses, as text to put where it stops: a note of the output that
        could not be written with that output's end (as a capped log keeps its end), and
        hookrunner's own notes in their places among it ('' if none)."""
        if self.complete:
            return ""
        if self._pending:  # what the memory held when the file was made, as it was
            at_line_start = self._pending.endswith(b"\n")
        elif self._file is not None:
            at_line_start = self._file_at_line_start
        else:
            at_line_start = not self._copy or self._copy.endswith(b"\n")
        if not self._lost_bytes and not self._unwritten:
            return self._pending.decode("utf-8", errors="replace")
        out = bytearray(self._pending) + (b"" if at_line_start else b"\n")
        end = bytes(self._missed_end[-self.tail_bytes:]) if self.tail_bytes else b""
        skip = 0
        while skip < len(end) and end[skip] in _UTF8_CONTINUATION:
            skip += 1
        end = end[skip:]
        shown_from = self._lost_bytes - len(end)  # output position where the shown end begins
        late = []
        for pos, note in self._unwritten:  # those before the shown end come before the note
            if pos <= shown_from:
                out += note.lstrip(b"\n")
            else:
                late.append((pos, note))
        if self._lost_bytes:
            why = (self.failed.strerror or str(self.failed)) if self.failed else "write failed"
            out += (f"{NOTE_PREFIX}{_bytes(self._lost_bytes)} of output could not be written to "
                    f"the log file here ({why})" + (f"; the last {len(end)} follow" if end else "")
                    + "\n").encode()
        at = 0
        for pos, note in late:
            out += end[at:pos - shown_from] + note
            at = pos - shown_from
        out += end[at:]
        if end and not out.endswith(b"\n"):
            out += b"\n"
        return out.decode("utf-8", errors="replace")

    @property
    def complete(self) -> bool:
        """Whether the file holds the whole log (False: a full disk kept some of it out)."""
        return not self._lost_bytes and not self._unwritten and not self._pending

    def _append(self, data: bytes, note: bool = False) -> None:
        if not data:
            return
        if self._file is None and self._copy is not None and (
                len(self._copy) + len(data) > KEEP_IN_MEMORY):
            self._spill()  # too large to keep only in memory (tried again if it failed)
        if self._file is not None:
            self._to_file(data, note)
        if self._copy is not None:  # kept on when the file fails: the record gets it whole
            if self._file is None and (not self.complete or (
                    len(self._copy) + len(data) > KEEP_IN_MEMORY)):
                # No file for it, and no room in memory (nor for anything after it: the
                # record is the memory, then a note of what it missed, in that order).
                self._missed(data, note, len(data))
            else:
                self._copy += data
                if len(self._copy) > KEEP_IN_MEMORY:
                    self._copy = None
        self._at_line_start = data.endswith(b"\n")


def _bytes(n: int) -> str:
    return f"{n} byte" if n == 1 else f"{n} bytes"


def end_note(outcome: str, reason: str) -> str:
    """The note an attempt's log ends with: how it ended, as its record says."""
    # `canceled: replaced by ...`, `canceled by request` and `timed out after 1s` already
    # say how it ended.
    said = reason.startswith(outcome.replace("_", " "))
    return reason if said else outcome + (f": {reason}" if reason else "")


def closing_note(text: str, note: str) -> str:
    """`note` as a log whose text (or end) is `text` takes it: on a line of its own."""
    return ("" if not text or text.endswith("\n") else "\n") + NOTE_PREFIX \
        + terminal_safe(note) + "\n"


def append_whole(path: Path, text: str) -> None:
    """Append to the log file a dead process left (never made here: a run that ended within
    its first second has none), all of `text` or nothing of it (a full disk: the run's
    record has it too)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    except OSError:
        return
    try:
        size = os.fstat(fd).st_size
        view = memoryview(text.encode())
        try:
            while view:
                view = view[os.write(fd, view):]
        except OSError:
            os.ftruncate(fd, size)
    except OSError:
        pass
    finally:
        os.close(fd)


def tail(path: Path | str, n_bytes: int) -> str:
    """The last `n_bytes` of a log as text ('' if there is no log yet)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - n_bytes))
            data = f.read(n_bytes)
    except FileNotFoundError:
        return ""
    if size > n_bytes:
        # Do not start in the middle of a UTF-8 sequence.
        skip = 0
        while skip < min(3, len(data)) and data[skip] in _UTF8_CONTINUATION:
            skip += 1
        data = data[skip:]
    return data.decode("utf-8", errors="replace")

"""A run's output log on disk: appended, flushed per write (readers stream it), capped.

A log may start in memory (`deferred`) and go to disk only when asked (`to_disk`): the
dispatcher does so for runs still going after a second, for logs past `KEEP_IN_MEMORY`, and
when someone follows the run. A run that ends sooner never creates a file: its log is saved
with its record in the store. (Creating two inodes per run was a fifth of the server's CPU
per action on this project's journal-less ext4, where freshly deleted inodes are scanned
past.)
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from hookrunner.private import PRIVATE_FILE, private_dir
from hookrunner.redact import scrub
from hookrunner.settings import DEFAULT_LOG_CAP  # one default, named once

NOTE_PREFIX = "[hookrunner] "
KEEP_IN_MEMORY = 64 * 1024  # a log up to this size is also kept in memory: no read-back
# Of output past the cap, its end is kept (where a failing script says why), up to this much
# and a quarter of the cap: the log holds the start, a note, and the end.
TAIL_KEPT = 256 * 1024
_UTF8_CONTINUATION = range(0x80, 0xC0)


class FileLog:
    """`LogSink` writing to `path`. Process output is kept up to `cap_bytes`: its start, and
    past that its last `tail_bytes`, held in memory and written when a note or the end
    comes, after a note that says how much was dropped; notes always go in.

    `deferred`: kept in memory until `to_disk()` (or until it outgrows KEEP_IN_MEMORY)."""

    def __init__(self, path: Path | str, cap_bytes: int = DEFAULT_LOG_CAP, *,
                 deferred: bool = False) -> None:
        self.path = Path(path)
        self.cap_bytes = cap_bytes
        self.tail_bytes = min(cap_bytes // 4, TAIL_KEPT)
        self.written = 0  # bytes of process output written so far
        self.truncated = False
        self._tail = bytearray()  # output past the cap's head, its end kept (not yet written)
        self._dropped = 0  # bytes of output past the head that were let go
        self.failed: OSError | None = None  # the last write error of the log file, if any
        self._lost_bytes = 0  # output the file missed since it last took a write
        self._unwritten: list[str] = []  # notes it missed meanwhile
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
            self._append(data[:room])
            self.written += room
            self.truncated = True
            self._note(f"output truncated at {self.cap_bytes} bytes: the rest is kept as its"
                       f" last {self.tail_bytes} bytes, written at the end or the next note"
                       if self.tail_bytes else f"output truncated at {self.cap_bytes} bytes")
            self._keep_end(data[room:])

    def note(self, text: str) -> None:
        with self._lock:
            if not self._closed:
                self._write_end()
                self._note(scrub(text, self.hidden) if self.hidden else text)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._write_end()
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
        if len(self._tail) > 2 * self.tail_bytes:  # trimmed in batches: amortized O(1)
            cut = len(self._tail) - self.tail_bytes
            self._dropped += cut
            del self._tail[:cut]

    def _write_end(self) -> None:
        """The end of output kept past the cap, after a note of what was dropped."""
        if not self.tail_bytes or (not self._tail and not self._dropped):
            return
        cut = max(0, len(self._tail) - self.tail_bytes)
        while cut < len(self._tail) and self._tail[cut] in _UTF8_CONTINUATION:
            cut += 1  # not from the middle of a character
        end, dropped = bytes(self._tail[cut:]), self._dropped + cut
        self._tail, self._dropped = bytearray(), 0
        if dropped:
            self._note(f"{dropped} bytes of output dropped here; the last {len(end)} follow")
        self._append(end)

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
        if self._copy:
            self._lost_bytes += self._write_all(bytes(self._copy))

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
        if self._lost_bytes or self._unwritten:
            if self._write_all(self.loss_text().encode()):
                self._missed(data, note, len(data))
                return
            self._lost_bytes, self._unwritten = 0, []
        if missed := self._write_all(data):
            self._missed(data, note, missed)

    def _missed(self, data: bytes, note: bool, count: int) -> None:
        if note:  # (whole, even if part of it made it in)
            self._unwritten.append(data.decode("utf-8", errors="replace").lstrip("\n"))
        else:
            self._lost_bytes += count

    def loss_text(self) -> str:
        """What the file misses, as text to put where it stops: a note of the output that
        could not be written, and hookrunner's own notes that could not ('' if none)."""
        if not self._lost_bytes and not self._unwritten:
            return ""
        why = (self.failed.strerror or str(self.failed)) if self.failed else "write failed"
        start = "" if self._file_at_line_start else "\n"
        lost = (f"{start}{NOTE_PREFIX}{self._lost_bytes} bytes of output could not be written "
                f"to the log file here ({why})\n") if self._lost_bytes else start
        return lost + "".join(self._unwritten)

    @property
    def complete(self) -> bool:
        """Whether the file holds the whole log (False: a full disk kept some of it out)."""
        return not self._lost_bytes and not self._unwritten

    def _append(self, data: bytes, note: bool = False) -> None:
        if not data:
            return
        if self._file is None and self._copy is not None and (
                len(self._copy) + len(data) > KEEP_IN_MEMORY):
            self._spill()  # too large to keep only in memory (tried again if it failed)
        if self._file is not None:
            self._to_file(data, note)
        if self._copy is not None:  # kept on when the file fails: the record gets it whole
            if self._file is None and len(self._copy) + len(data) > KEEP_IN_MEMORY:
                self._missed(data, note, len(data))  # no file for it, and no room in memory
            else:
                self._copy += data
                if len(self._copy) > KEEP_IN_MEMORY:
                    self._copy = None
        self._at_line_start = data.endswith(b"\n")


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

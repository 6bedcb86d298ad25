"""A run's output log on disk: appended, flushed per write (readers stream it), capped."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import TracebackType

from hookrunner.settings import DEFAULT_LOG_CAP  # one default, named once

NOTE_PREFIX = "[hookrunner] "
KEEP_IN_MEMORY = 64 * 1024  # a log up to this size is also kept in memory: no read-back
_UTF8_CONTINUATION = range(0x80, 0xC0)


class FileLog:
    """`LogSink` writing to `path`. Process output stops at `cap_bytes`; notes always go in."""

    def __init__(self, path: Path | str, cap_bytes: int = DEFAULT_LOG_CAP) -> None:
        self.path = Path(path)
        self.cap_bytes = cap_bytes
        self.written = 0  # bytes of process output kept so far
        self.truncated = False
        self.failed: OSError | None = None  # the write error that stopped the log, if any
        self._at_line_start = True
        self._copy: bytearray | None = bytearray()  # what was written, while it is small
        self._lock = threading.Lock()  # ansible-runner's thread may write too
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._file = os.fdopen(fd, "ab", buffering=0)

    def write(self, data: bytes) -> None:
        if not data:
            return
        with self._lock:
            if self.truncated or self._file.closed:
                return
            room = self.cap_bytes - self.written
            if len(data) <= room:
                self._append(data)
                self.written += len(data)
                return
            self._append(data[:room])
            self.written += room
            self.truncated = True
            self._note(f"output truncated at {self.cap_bytes} bytes")

    def note(self, text: str) -> None:
        with self._lock:
            if not self._file.closed:
                self._note(text)

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def text(self) -> str | None:
        """The whole log as text if it is small enough to have been kept in memory, else None
        (then `tail` reads it). Only what was written without error is kept."""
        with self._lock:
            if self._copy is None or len(self._copy) > self.cap_bytes:
                return None
            return self._copy.decode("utf-8", errors="replace")

    def __enter__(self) -> FileLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _note(self, text: str) -> None:
        # A note always starts on a line of its own, even after a partial line of output.
        prefix = b"" if self._at_line_start else b"\n"
        self._append(prefix + (NOTE_PREFIX + text.rstrip("\n") + "\n").encode())

    def _append(self, data: bytes) -> None:
        if not data or self.failed:
            return
        try:
            self._file.write(data)  # unbuffered: visible to readers at once
            if self._copy is not None:
                self._copy += data
                if len(self._copy) > KEEP_IN_MEMORY:
                    self._copy = None
        except OSError as exc:
            # Disk full or gone: keep the run going (its output is still drained so it never
            # blocks on a full pipe) and say why its log stops here, once.
            self.failed = exc
            self.truncated = True
            return
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

"""The render budget's backstop: a render still going well past its time is interrupted.

A render's own checks (bounds: at each loop step, call, operator and bounded filter) end it
when its time is up, but only where they run: a filter that walks a list in Python (`map`,
`select`, `unique`, `sort`'s key) has none, and `(payload.s * 10 ** 6) | map('upper') | ...`
kept the event loop for a minute. A thread here watches the renders in progress and, once
one has used its budget of CPU time and a margin besides, raises an exception in its thread
(`PyThreadState_SetAsyncExc`: Python delivers it at that thread's next bytecode, so it cuts
Python code short, never a single C call).

An exception raised in another thread could land anywhere that thread runs: each render is
armed before it starts and disarmed, under one lock, before its caller goes on; a render
fired at is disarmed by the watchdog itself, and its own disarm takes back a delivery still
pending and raises instead, from within the render's error handling.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from dataclasses import dataclass, field

from jinja2.exceptions import SecurityError

CHECK_EVERY = 0.05  # seconds between the watchdog's looks while a render is in progress
MARGIN = 0.1  # CPU seconds past its budget a render may take before it is interrupted
WALL_FACTOR = 5  # ... or this many times its budget of wall time (a thread kept off the CPU)


class Overrun(SecurityError):
    """Raised in a render's thread by the watchdog (by class, hence the fixed message)."""

    def __init__(self, message: str = "the template took longer than its time") -> None:
        super().__init__(message)


@dataclass(eq=False)
class Watch:
    """One render in progress: `budget` seconds of CPU from when the watchdog first sees it."""

    ident: int
    budget: float
    limit: str  # what the render's error says once it is interrupted
    started: float = field(default_factory=time.monotonic)
    cpu_seen: float | None = None  # the thread's CPU time when the watchdog first looked
    fired: bool = False


class _Watchdog:
    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # --http-workers: its own thread

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._watched: dict[int, Watch] = {}
        self._busy = threading.Event()
        self._thread: threading.Thread | None = None
        self._clocks: dict[int, int] = {}

    def arm(self, budget: float, limit: str) -> Watch | None:
        """Watch this thread's render, or None where one of its renders is watched already."""
        ident = threading.get_ident()
        with self._lock:
            if ident in self._watched:
                return None
            watch = self._watched[ident] = Watch(ident, budget, limit)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="hookrunner-overrun",
                                                daemon=True)
                self._thread.start()
            if not self._busy.is_set():
                self._busy.set()
        return watch

    def disarm(self, watch: Watch) -> None:
        """The render has ended: no interruption may come any more. Raises its error where
        the watchdog fired at it (a delivery still pending is taken back first)."""
        with self._lock:
            if self._watched.get(watch.ident) is watch:
                del self._watched[watch.ident]
            if watch.fired:
                _raise_in(watch.ident, None)
        if watch.fired:
            raise SecurityError(watch.limit)

    def _run(self) -> None:
        while True:
            self._busy.wait()
            time.sleep(CHECK_EVERY)
            with self._lock:
                if not self._watched:
                    self._busy.clear()
                    continue
                now = time.monotonic()
                for ident, watch in list(self._watched.items()):
                    if self._overdue(watch, now):
                        watch.fired = True
                        del self._watched[ident]
                        _raise_in(ident, Overrun)

    def _overdue(self, watch: Watch, now: float) -> bool:
        if now - watch.started > watch.budget * WALL_FACTOR + MARGIN:
            return True
        try:
            clock = self._clocks.get(watch.ident)
            if clock is None:
                clock = self._clocks[watch.ident] = time.pthread_getcpuclockid(watch.ident)
            cpu = time.clock_gettime(clock)
        except OSError:  # the thread has ended meanwhile
            self._clocks.pop(watch.ident, None)
            return False
        if watch.cpu_seen is None:  # first seen now: as if on the CPU since it began
            watch.cpu_seen = cpu - (now - watch.started)
        return cpu - watch.cpu_seen > watch.budget + MARGIN


def _raise_in(ident: int, exc: type[BaseException] | None) -> None:
    """Raise `exc` in thread `ident` at its next bytecode; None takes back one pending."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), ctypes.py_object(exc) if exc is not None else None)


WATCHDOG = _Watchdog()

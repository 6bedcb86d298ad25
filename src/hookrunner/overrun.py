"""The render budget's backstop: a render still going well past its time is interrupted.

A render's own checks (bounds: at each loop step, call, operator and bounded filter) end it
when its time is up, but only where they run: a filter that walks a list in Python (`map`,
`select`, `unique`, `sort`'s key) has none, and `(payload.s * 10 ** 6) | map('upper') | ...`
kept the event loop for a minute. A thread here watches the renders in progress and, once
one has used its budget of CPU time and a margin besides, raises an exception in its thread
(`PyThreadState_SetAsyncExc`: Python delivers it at that thread's next bytecode, so it cuts
Python code short, never a single C call). It fires again while the render goes on: one
delivered in a garbage collector's callback or a finalizer is dropped there.

An exception raised in another thread could land anywhere that thread runs. A render sets
`done` as the first thing its `finally` does (no call before it: a pending exception is only
delivered at a call, a loop's jump or a function's start), and the watchdog sets `claimed`
before it looks at `done` and fires: so it never fires at a render that has ended, and a
render it may have fired at takes back, under the watchdog's lock, what is still pending,
before its caller goes on (`disarm`). Nothing is locked on the common path, which the
watchdog has not looked at.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time

from jinja2.exceptions import SecurityError

from hookrunner.logs import event

CHECK_EVERY = 0.05  # seconds between the watchdog's looks while a render is in progress
MARGIN = 0.1  # CPU seconds past its budget a render may take before it is interrupted
WALL_FACTOR = 5  # ... or this many times its budget of wall time (a thread kept off the CPU)


class Overrun(SecurityError):
    """Raised in a render's thread by the watchdog (by class, hence the fixed message)."""

    def __init__(self, message: str = "the template took longer than its time") -> None:
        super().__init__(message)


class Watch:
    """One render in progress: `budget` seconds of CPU, `limit` its error's message."""

    __slots__ = ("budget", "claimed", "cpu_seen", "done", "fired", "ident", "limit", "started")

    def __init__(self, ident: int, budget: float, limit: str) -> None:
        self.ident, self.budget, self.limit = ident, budget, limit
        self.started = time.monotonic()
        self.cpu_seen: float | None = None  # the thread's CPU time when first looked at
        self.done = False  # set by the render's own thread, first thing once it has ended
        self.claimed = False  # set by the watchdog before it looks at `done` to fire
        self.fired = False


class _Watchdog:
    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # --http-workers: its own thread

    def _reset(self) -> None:
        self._lock = threading.Lock()  # the watchdog's looks, and a fired-at render's disarm
        # Each thread adds and removes its own entry only; the watchdog reads a snapshot.
        self._watched: dict[int, Watch] = {}
        self._busy = threading.Event()
        self._thread: threading.Thread | None = None
        self._clocks: dict[int, int] = {}
        self._failed = False

    def arm(self, budget: float, limit: str) -> Watch | None:
        """Watch this thread's render, or None where one of its renders is watched already
        (or no watchdog can run)."""
        ident = threading.get_ident()
        current = self._watched.get(ident)
        if current is not None and not current.done:
            return None
        if self._thread is None and not self._start():
            return None
        watch = self._watched[ident] = Watch(ident, budget, limit)
        if not self._busy.is_set():
            self._busy.set()
        return watch

    def _start(self) -> bool:
        with self._lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="hookrunner-overrun",
                                          daemon=True)
                try:
                    thread.start()
                except RuntimeError as exc:  # no thread to be had (a limit): unwatched
                    if not self._failed:
                        self._failed = True
                        event("templates.watchdog_failed", logging.ERROR, error=str(exc),
                              then="renders are bounded by their own checks only")
                    return False
                self._thread = thread
        return True

    def disarm(self, watch: Watch) -> None:
        """The render has ended (its `done` set already): take back what the watchdog may
        still have pending, and raise the render's error where it fired."""
        watch.done = True  # (set by the caller already; again, should it not have been)
        if self._watched.get(watch.ident) is watch:
            del self._watched[watch.ident]
        if not watch.claimed:
            return
        with self._lock:  # the watchdog has let go of it: nothing is raised any more
            if watch.fired:
                _raise_in(watch.ident, None)
        if watch.fired:
            raise SecurityError(watch.limit)

    def _run(self) -> None:
        while True:
            self._busy.wait()
            time.sleep(CHECK_EVERY)
            with self._lock:
                watched = list(self._watched.values())
                if not watched:
                    self._busy.clear()
                    continue
                now = time.monotonic()
                for watch in watched:
                    if watch.done or not self._overdue(watch, now):
                        continue
                    watch.claimed = True
                    if not watch.done:  # (looked at after `claimed`: see the module's doc)
                        watch.fired = True
                        _raise_in(watch.ident, Overrun)

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

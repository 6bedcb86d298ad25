"""--max-queued accounting, in one process or shared by the processes of one server.

queued = the store's count at the last refresh + runs journaled since that refresh began
+ runs of accepts still being journaled (reserved). Never below the truth on one node (a
run may count twice until the next refresh). Admission checks and reserves in one step, so
concurrent requests (or processes) cannot all slip past the bound.
"""

from __future__ import annotations

import mmap
import multiprocessing
from contextlib import AbstractContextManager, nullcontext
from typing import Any

_STORE, _JOURNALED, _AT_REFRESH, _RESERVED = range(4)


class QueueBudget:
    def __init__(self, shared: bool = False) -> None:
        """`shared`: counters in shared memory under a process-shared lock, for processes
        forked after this (see hookrunner.multiproc)."""
        self._lock: AbstractContextManager[Any]
        if shared:
            self._mem: mmap.mmap | bytearray = mmap.mmap(-1, 8 * 4)  # anonymous, MAP_SHARED
            self._lock = multiprocessing.get_context("fork").Lock()
        else:
            self._mem = bytearray(8 * 4)
            self._lock = nullcontext()
        self._n = memoryview(self._mem).cast("q")

    @property
    def queued(self) -> int:
        n = self._n
        return n[_STORE] + n[_JOURNALED] - n[_AT_REFRESH] + n[_RESERVED]

    def admit(self, runs: int, limit: int) -> bool:
        """Reserve room for `runs` new runs; False when the queue is full. An empty queue
        admits any delivery."""
        with self._lock:
            queued = self.queued
            if runs and queued and queued + runs > limit:
                return False
            self._n[_RESERVED] += runs
            return True

    def accepted(self, runs: int, reserved: int) -> None:
        """`runs` were journaled (0 for a duplicate or a failed write); frees `reserved`."""
        with self._lock:
            self._n[_RESERVED] -= reserved
            self._n[_JOURNALED] += runs

    def journaled(self) -> int:
        """Runs journaled ever: taken before a count of the store, handed to `refresh`."""
        return self._n[_JOURNALED]

    def refresh(self, store_queued: int, journaled_before_count: int) -> None:
        with self._lock:
            self._n[_STORE] = store_queued
            self._n[_AT_REFRESH] = journaled_before_count

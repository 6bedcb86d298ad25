"""--max-queued accounting, in one process or shared by the processes of one server.

queued = the store's count at the last refresh + runs journaled since that refresh began
- runs this node's dispatcher claimed since then + runs of accepts still being journaled
(reserved). Admission checks and reserves in one step, so concurrent requests (or processes)
cannot all slip past the bound. The dispatcher counts the store and claims one at a time, so
a claim is either in the count or subtracted after it, never both. Between refreshes (every
HOUSEKEEPING) the figure may be a little high (a run journaled during the count counts twice;
runs a claim skipped still count) or low (a replay from the CLI, which only the next count
sees): the next refresh corrects either. Without the claims, a small --max-queued refused
deliveries while nothing was queued at all.

Shared (`--http-workers`): the counters live in shared memory, each process reserves in a
slot of its own, and the lock is an `flock` each process opens for itself. The kernel drops
the lock of a process that dies holding it, and the supervisor empties a dead worker's slot,
so a crash mid-request neither blocks the others nor shrinks the queue for good.
"""

from __future__ import annotations

import fcntl
import mmap
import os

# Counters in shared memory; _RESERVED + slot: one per process.
_STORE, _JOURNALED, _AT_REFRESH, _CLAIMED, _CLAIMED_AT_REFRESH, _RESERVED = range(6)


class QueueBudget:
    def __init__(self, lock_path: str | None = None, slots: int = 1) -> None:
        """`lock_path`: shared by the processes forked after this; each then calls `enter`."""
        size = 8 * (_RESERVED + slots)
        self._mem: mmap.mmap | bytearray = mmap.mmap(-1, size) if lock_path else bytearray(size)
        self._n = memoryview(self._mem).cast("q")
        self._slots = slots
        self._lock_path = lock_path
        self._fd: int | None = None
        self._slot = 0

    def enter(self, slot: int) -> None:
        """In a process of a shared budget: its own lock descriptor (a descriptor inherited
        across fork would share the lock instead of competing for it) and reservation slot."""
        assert self._lock_path is not None and 0 <= slot < self._slots
        self._fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._slot = slot

    @property
    def queued(self) -> int:
        n = self._n
        reserved = sum(n[_RESERVED:_RESERVED + self._slots])
        since = n[_JOURNALED] - n[_AT_REFRESH] - (n[_CLAIMED] - n[_CLAIMED_AT_REFRESH])
        return max(0, n[_STORE] + since) + reserved

    def admit(self, runs: int, limit: int) -> bool:
        """Reserve room for `runs` new runs; False when the queue is full. An empty queue
        admits any delivery."""
        if not runs:
            return True  # nothing to reserve: no lock (most deliveries match no rule)
        self._lock()
        try:
            queued = self.queued
            if runs and queued and queued + runs > limit:
                return False
            self._n[_RESERVED + self._slot] += runs
            return True
        finally:
            self._unlock()

    def accepted(self, runs: int, reserved: int) -> None:
        """`runs` were journaled (0 for a duplicate or a failed write); frees `reserved`."""
        if not runs and not reserved:
            return
        self._lock()
        try:
            self._n[_RESERVED + self._slot] -= reserved
            self._n[_JOURNALED] += runs
        finally:
            self._unlock()

    def claimed(self, runs: int) -> None:
        """The dispatcher took `runs` off the queue. No more than the estimate holds: runs
        it never counted (a replay from the CLI, a retry come due) must not become credit
        that lets later deliveries past the bound until the next refresh."""
        if runs:
            self._lock()
            try:
                n = self._n
                estimate = n[_STORE] + n[_JOURNALED] - n[_AT_REFRESH] - (
                    n[_CLAIMED] - n[_CLAIMED_AT_REFRESH])
                n[_CLAIMED] += min(runs, max(0, estimate))
            finally:
                self._unlock()

    def snapshot(self) -> tuple[int, int]:
        """Runs journaled and claimed ever: taken before a count of the store, handed to
        `refresh` with it."""
        return self._n[_JOURNALED], self._n[_CLAIMED]

    def refresh(self, store_queued: int, before_count: tuple[int, int]) -> None:
        self._lock()
        try:
            self._n[_STORE] = store_queued
            self._n[_AT_REFRESH], self._n[_CLAIMED_AT_REFRESH] = before_count
        finally:
            self._unlock()

    def release(self, slot: int) -> None:
        """Forget the reservations of a process that died (its accepts never finished: what
        it did journal is counted by the next refresh)."""
        self._lock()
        try:
            self._n[_RESERVED + slot] = 0
        finally:
            self._unlock()

    def _lock(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_EX)

    def _unlock(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

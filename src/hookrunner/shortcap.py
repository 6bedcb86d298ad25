"""How many runs a node starts at once when its runs may take what it needs, and when a
run that could not start is tried again. Pure: the dispatcher passes the clock and counts.

Under a low descriptor or process limit, `--workers` runs (each with a pipe, a pidfd and a
log file) can take all there is: the next start fails with EMFILE or EAGAIN, and so do the
connections the server should accept. So a run starts only while the descriptors left keep
the server a reserve (fd_room). Where a start fails all the same (a process limit), the
node runs fewer at once (ShortCap): half of those it had going (some of them still
starting, and failing alike; a claim's worth of failures halves it once), one more for each
run that succeeds, and one more for every `probe_after` seconds without a failed start (a
shortage that was not the node's doing, gone meanwhile, must not hold the queue until its
long runs end). Back at `workers`, the cap is off.
"""

from __future__ import annotations

SETTLE = 1.0  # seconds: failed starts within it (one claim's) halve the cap once
BUSY_TRIES = 120  # such failed starts of one run that are not counted as its tries
FDS_PER_RUN = 3  # descriptors a running action holds here: a pipe, a pidfd, a log file


def busy_retry_delay(earlier: int, first: float) -> float | None:
    """Seconds before a run whose start failed while the node's own runs held what it
    lacked is tried again, after `earlier` such failures: at once (the cap paces it), then
    every `first` (a run that ends frees what it needs; no longer, or an idle node waited on
    it); None past BUSY_TRIES, ten minutes of it (then it counts as a try: a shortage that
    outlasts the node's runs is not theirs)."""
    if earlier >= BUSY_TRIES:
        return None
    return 0.0 if earlier == 0 else first


def idle_retry_delay(earlier: int, first: float) -> float:
    """Seconds before a run whose start failed with none of the node's runs going is tried
    again, after `earlier` such failures: `first`, doubling (5 s to 80 s for the 5 tries:
    a shortage of another program's making, half a minute long, failed whole queues when
    they were 5 s apart)."""
    return first * float(2 ** earlier)


def fd_room(limit: int, open_fds: int) -> int:
    """How many more runs may start with `open_fds` of `limit` descriptors open, keeping an
    eighth (at least 16) for the server itself: connections, /healthz, the store. Without
    it, runs started up to the limit, and the server then accepted no connection until one
    ended (a burst under systemd's default 1,024, or a lower limit)."""
    reserve = max(16, limit // 8)
    return max(0, (limit - reserve - open_fds) // FDS_PER_RUN)


class ShortCap:
    def __init__(self, workers: int, probe_after: float) -> None:
        self.workers = workers
        self.probe_after = probe_after
        self.cap: int | None = None  # None: `workers`
        self._lowered = 0.0  # when a failed start last set it
        self._changed = 0.0  # ... or time raised it

    def failed(self, running: int, now: float) -> bool:
        """A start failed while `running` of the node's runs were under way; True the first
        time (the shortage begins: say so)."""
        began = self.cap is None
        if self.cap is None:
            self.cap = max(1, running // 2)
        elif now - self._lowered >= SETTLE:
            self.cap = max(1, min(self.cap, running) // 2)
        else:  # the same claim's failures: halved once, but never above what runs
            self.cap = max(1, min(self.cap, running))
            return False
        self._lowered = self._changed = now
        return began

    def ended(self) -> bool:
        """A run succeeded: one more at once; True when the cap is off again."""
        if self.cap is None:
            return False
        self.cap += 1
        if self.cap >= self.workers:
            self.cap = None
            return True
        return False

    def limit(self, now: float) -> tuple[int, bool]:
        """How many may run at once now, and whether the cap came off just now."""
        if self.cap is not None and now - self._changed >= self.probe_after:
            self._changed = now
            if self.ended():
                return self.workers, True
        return (self.workers if self.cap is None else self.cap), False

"""How many runs a node starts at once while starts fail for want of what its own runs hold.

Under a low descriptor or process limit, `--workers` runs (each with a pipe, a pidfd and a
log file) can take all there is: the next start fails with EMFILE or EAGAIN, and so do the
connections the server should accept. While that lasts the node runs fewer at once: half
of those it had going when a start failed (some of them still starting, and failing alike;
a claim's worth of failures halves it once), one more for each run that started and ended,
and one more for every `probe_after` seconds without a failed start (a shortage that was
not the node's doing, gone meanwhile, must not hold the queue until its long runs end).
Back at `workers`, the cap is off. Pure: the dispatcher passes the clock.
"""

from __future__ import annotations

SETTLE = 1.0  # seconds: failed starts within it (one claim's) halve the cap once
BUSY_TRIES = 60  # such failed starts of one run that are not counted as its tries
BUSY_BACKOFF_MAX = 60.0  # seconds between them at most: ~55 minutes for the 60


def busy_retry_delay(earlier: int, first: float) -> float | None:
    """Seconds before a run whose start failed while the node's own runs held what it
    lacked is tried again, after `earlier` such failures: at once (the cap paces it), then
    `first`, doubling up to BUSY_BACKOFF_MAX; None past BUSY_TRIES (then it counts as a try:
    a shortage that outlasts the node's runs is not theirs)."""
    if earlier >= BUSY_TRIES:
        return None
    return 0.0 if earlier == 0 else min(BUSY_BACKOFF_MAX, first * 2 ** (earlier - 1))


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
        else:
            return False  # the same claim's failures: halved once
        self._lowered = self._changed = now
        return began

    def ended(self) -> bool:
        """A run that started has ended: one more at once; True when the cap is off again."""
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

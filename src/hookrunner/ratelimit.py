"""Token buckets per (hook, client): pure arithmetic over an injected clock."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

MAX_BUCKETS = 10_000  # clients remembered at most, so a scan cannot grow memory
SWEEP_EVERY = 1.0  # seconds between sweeps of refilled buckets when full
MAX_RETRY_AFTER = 86400  # seconds


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float
    rate: float
    burst: float

    def full(self, now: float) -> bool:
        return self.tokens + (now - self.at) * self.rate >= self.burst


class RateLimiter:
    """Keys are (scope, client): a hook's id or "admin-token", and the client's bucket
    ("" for a limit shared by every client)."""

    def __init__(self) -> None:
        # A shared limit (one per hook) is never forgotten: a flood from many addresses
        # must not reset the limit it is held to.
        self._shared: dict[tuple[str, str], _Bucket] = {}
        self._clients: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()  # LRU first
        self._swept_at = float("-inf")

    def take(self, key: tuple[str, str], rate: float, burst: int, now: float) -> float:
        """Take one token; return 0 if allowed, else seconds until a token is available."""
        buckets = self._clients if key[1] else self._shared
        b = buckets.get(key)
        if b is None:
            if buckets is self._clients and len(self._clients) >= MAX_BUCKETS:
                self._make_room(now)
            b = buckets[key] = _Bucket(float(burst), now, rate, float(burst))
        elif buckets is self._clients:
            self._clients.move_to_end(key)
        b.rate, b.burst = rate, float(burst)  # a reload may have changed the hook's limit
        b.tokens = min(float(burst), b.tokens + (now - b.at) * rate)
        b.at = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return 0.0
        return (1.0 - b.tokens) / rate if rate > 0 else 60.0

    def waiting(self, key: tuple[str, str], rate: float, now: float) -> float:
        """Seconds until `take` would allow `key` one (0: now), without taking it."""
        b = (self._clients if key[1] else self._shared).get(key)
        if b is None:
            return 0.0
        tokens = min(b.burst, b.tokens + (now - b.at) * rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / rate if rate > 0 else 60.0

    def _make_room(self, now: float) -> None:
        """Forget the clients whose buckets have filled up again (a new bucket would be the
        same), at most once a second; failing that, the least recently seen (one that keeps
        sending stays: only 10,000 others sending since its last try push it out)."""
        if now - self._swept_at >= SWEEP_EVERY:
            self._swept_at = now
            for key in [k for k, b in self._clients.items() if b.full(now)]:
                del self._clients[key]
        while len(self._clients) >= MAX_BUCKETS:
            self._clients.popitem(last=False)


def retry_after(delay: float) -> str:
    """A `Retry-After` for `delay` seconds: whole seconds, rounded up (rounded down, a
    client that waits exactly that long is refused again), and never more than a day (a
    bucket's rate is at least one a day: rules.load MIN_RATE)."""
    return str(max(1, math.ceil(delay))) if delay < MAX_RETRY_AFTER else str(MAX_RETRY_AFTER)


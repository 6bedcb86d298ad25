"""Token buckets per (hook, client): pure arithmetic over an injected clock."""

from __future__ import annotations

from dataclasses import dataclass

MAX_BUCKETS = 10_000  # forget the oldest clients past this, so a scan cannot grow memory


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def take(self, key: tuple[str, str], rate: float, burst: int, now: float) -> float:
        """Take one token; return 0 if allowed, else seconds until a token is available."""
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._buckets.pop(next(iter(self._buckets)))
            b = self._buckets[key] = _Bucket(float(burst), now)
        b.tokens = min(float(burst), b.tokens + (now - b.at) * rate)
        b.at = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return 0.0
        return (1.0 - b.tokens) / rate if rate > 0 else 60.0

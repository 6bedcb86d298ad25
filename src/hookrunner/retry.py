"""Pure retry decisions: whether an attempt's outcome is retried, and after how long."""

from __future__ import annotations

import random

JITTER = 0.2  # +-20 % so retries of many runs failing together spread out
MAX_EXPONENT = 60  # 2**60 backoffs are "forever" already; past it float() would overflow


def should_retry(outcome: str, attempt: int, max_attempts: int, retry_on: tuple[str, ...]) -> bool:
    """Canceled runs are never retried; others when attempts remain and the outcome is listed."""
    return outcome != "canceled" and attempt < max_attempts and outcome in retry_on


def backoff_delay(
    attempt: int, backoff: float, max_backoff: float, rand: random.Random | None = None
) -> float:
    """Seconds before the attempt after `attempt` (1-based): backoff * 2**(attempt-1), +-JITTER.

    `max_backoff` (when > 0) caps the delay after jitter, so it is a true upper bound; at the
    cap the jitter only spreads retries downwards.
    """
    base = backoff * float(2 ** min(max(attempt - 1, 0), MAX_EXPONENT))
    r: float = (rand or random).uniform(1 - JITTER, 1 + JITTER)
    delay = base * r
    if max_backoff > 0:
        delay = min(delay, max_backoff)
    return float(max(delay, 0.0))


ASKED_CAP = 600.0  # seconds: the most a Retry-After adds where max_backoff is 0 (its default)


def retry_delay(attempt: int, backoff: float, max_backoff: float, asked: float | None,
                rand: random.Random | None = None) -> float:
    """backoff_delay, or what the other end asked for (Retry-After) where that is longer,
    within `max_backoff` (ASKED_CAP where that is 0): the answering server cannot park a run
    for longer than the rule allows."""
    delay = backoff_delay(attempt, backoff, max_backoff, rand)
    if asked is not None and asked > delay:
        delay = max(delay, min(asked, max_backoff if max_backoff > 0 else ASKED_CAP))
    return delay

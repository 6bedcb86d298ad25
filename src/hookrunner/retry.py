"""Pure retry decisions: whether an attempt's outcome is retried, and after how long."""

from __future__ import annotations

import random

JITTER = 0.2  # +-20 % so retries of many runs failing together spread out


def should_retry(outcome: str, attempt: int, max_attempts: int, retry_on: tuple[str, ...]) -> bool:
    """Canceled runs are never retried; others when attempts remain and the outcome is listed."""
    return outcome != "canceled" and attempt < max_attempts and outcome in retry_on


def backoff_delay(
    attempt: int, backoff: float, max_backoff: float, rand: random.Random | None = None
) -> float:
    """Exponential: backoff * 2**(attempt-1), capped at max_backoff, with jitter."""
    base = backoff * (2 ** max(attempt - 1, 0))
    if max_backoff > 0:
        base = min(base, max_backoff)
    r: float = (rand or random).uniform(1 - JITTER, 1 + JITTER)
    return float(max(base * r, 0.0))

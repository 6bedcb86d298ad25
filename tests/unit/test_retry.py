"""Retry decisions as tables: which outcomes are retried, and the backoff delays."""

from __future__ import annotations

import random

import pytest

from hookrunner.actions.http import retry_after_seconds
from hookrunner.retry import JITTER, backoff_delay, retry_delay, should_retry

ON_BOTH = ("failed", "timed_out")


@pytest.mark.parametrize(
    ("outcome", "attempt", "max_attempts", "retry_on", "expected"),
    [
        ("failed", 1, 3, ON_BOTH, True),
        ("failed", 2, 3, ON_BOTH, True),
        ("failed", 3, 3, ON_BOTH, False),  # the last attempt
        ("failed", 1, 1, ON_BOTH, False),  # no retry configured
        ("timed_out", 1, 3, ON_BOTH, True),
        ("failed", 1, 3, ("timed_out",), False),  # on: [timed_out] leaves plain failures alone
        ("timed_out", 1, 3, ("timed_out",), True),
        ("timed_out", 1, 3, ("failed",), False),
        ("canceled", 1, 3, ("failed", "timed_out", "canceled"), False),  # never, even if listed
        ("succeeded", 1, 3, ON_BOTH, False),
    ],
)
def test_should_retry(
    outcome: str, attempt: int, max_attempts: int, retry_on: tuple[str, ...], expected: bool
) -> None:
    """An outcome is retried only when listed in `on`, attempts remain, and it is no cancel."""
    assert should_retry(outcome, attempt, max_attempts, retry_on) is expected


class Fixed(random.Random):
    """uniform() always answers the given end of the range (jitter at its bound)."""

    def __init__(self, end: str) -> None:
        super().__init__()
        self.end = end

    def uniform(self, a: float, b: float) -> float:
        return {"low": a, "mid": (a + b) / 2, "high": b}[self.end]


@pytest.mark.parametrize(
    ("attempt", "backoff", "max_backoff", "end", "expected"),
    [
        (1, 0.1, 0, "mid", 0.1),
        (2, 0.1, 0, "mid", 0.2),
        (3, 0.1, 0, "mid", 0.4),
        (5, 30.0, 0, "mid", 480.0),  # no cap
        (5, 30.0, 600.0, "mid", 480.0),
        (6, 30.0, 600.0, "mid", 600.0),  # capped
        (6, 30.0, 600.0, "low", 600.0),  # 960 * 0.8 is still above the cap
        (5, 30.0, 600.0, "high", 576.0),
        (5, 30.0, 500.0, "high", 500.0),  # the cap holds after jitter too
        (1, 10.0, 0, "low", 10.0 * (1 - JITTER)),
        (1, 10.0, 0, "high", 10.0 * (1 + JITTER)),
        (0, 10.0, 0, "mid", 10.0),  # attempt 0 (never started) counts as the first
        (1, 0.0, 0, "high", 0.0),  # backoff 0: retry at once
        (10_000, 1.0, 3600.0, "mid", 3600.0),  # a huge attempt number does not overflow
    ],
)
def test_backoff_delay_table(
    attempt: int, backoff: float, max_backoff: float, end: str, expected: float
) -> None:
    """Delay doubles per attempt from `backoff`, is capped by `max_backoff`, jitter included."""
    assert backoff_delay(attempt, backoff, max_backoff, Fixed(end)) == pytest.approx(expected)


@pytest.mark.parametrize("attempt", [1, 2, 3, 4])
def test_jitter_stays_within_bounds_and_spreads(attempt: int) -> None:
    """Random jitter keeps every delay within +-JITTER of the exponential base, and varies."""
    rand = random.Random(attempt)
    base = 1.0 * 2 ** (attempt - 1)
    delays = [backoff_delay(attempt, 1.0, 0, rand) for _ in range(500)]
    assert all(base * (1 - JITTER) <= d <= base * (1 + JITTER) for d in delays)
    assert max(delays) - min(delays) > base * JITTER  # spread out, not one value


def test_capped_jitter_never_exceeds_the_cap() -> None:
    """At the cap, random jitter only spreads retries below `max_backoff`."""
    rand = random.Random(7)
    delays = [backoff_delay(7, 10.0, 700.0, rand) for _ in range(500)]  # base 640
    assert max(delays) == 700.0 and min(delays) >= 640.0 * (1 - JITTER)
    assert len({round(d, 3) for d in delays if d < 700.0}) > 100


@pytest.mark.parametrize(("asked", "expected"), [
    (None, (8.0, 12.0)),  # the backoff, jittered
    (3.0, (8.0, 12.0)),  # shorter than the backoff: the backoff
    (30.0, (30.0, 30.0)),  # longer: what was asked
    (86400.0, (60.0, 60.0)),  # past max_backoff: the cap
])
def test_retry_delay_takes_a_longer_retry_after_within_the_cap(
    asked: float | None, expected: tuple[float, float],
) -> None:
    for seed in range(20):
        delay = retry_delay(1, 10.0, 60.0, asked, random.Random(seed))
        assert expected[0] <= delay <= expected[1], (asked, delay)


def test_retry_delay_without_a_cap_takes_what_was_asked_up_to_ten_minutes() -> None:
    assert retry_delay(1, 0.0, 0.0, 500.0, random.Random(1)) == 500.0
    assert retry_delay(1, 0.0, 0.0, 1e9, random.Random(1)) == 600.0


@pytest.mark.parametrize(("value", "expected"), [
    ("120", 120.0),
    (" 7 ", 7.0),
    ("0", 0.0),
    ("99999999999999999999", 1e9),
    ("9" * 5000, 1e9),  # past int()'s 4,300 digits
    ("000000000000007", 7.0),
    ("Fri, 31 Dec 9999 23:59:59 -2359", 1e9),
    ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),  # an HTTP date, 30 s after `now`
    ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # past: at once
    ("Wed, 21 Oct 2015 07:28:30 -0000", 30.0),
    ("-5", None),
    ("1.5", None),
    ("soon", None),
    ("", None),
    ("\u0661\u0662", None),  # Arabic-Indic digits are digits to str.isdigit, not to HTTP
])
def test_retry_after_is_seconds_or_an_http_date(value: str, expected: float | None) -> None:
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert retry_after_seconds(value, now) == expected

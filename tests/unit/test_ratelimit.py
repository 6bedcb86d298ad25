"""Token buckets per (hook, client) over an injected clock."""

from __future__ import annotations

import pytest

from hookrunner import ratelimit
from hookrunner.ratelimit import RateLimiter

KEY = ("hook", "198.51.100.1")


def test_a_burst_passes_then_the_next_waits_for_one_token() -> None:
    rl = RateLimiter()
    assert [rl.take(KEY, 1.0, 3, 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rl.take(KEY, 1.0, 3, 100.0) == pytest.approx(1.0)
    # Half a second later half a token has come back: half a second more to wait.
    assert rl.take(KEY, 1.0, 3, 100.5) == pytest.approx(0.5)
    assert rl.take(KEY, 1.0, 3, 101.0) == 0.0


@pytest.mark.parametrize(("rate", "expected_wait"), [(10.0, 0.1), (1 / 60, 60.0), (0.0, 60.0)])
def test_the_wait_is_the_time_until_one_token(rate: float, expected_wait: float) -> None:
    rl = RateLimiter()
    assert rl.take(KEY, rate, 1, 0.0) == 0.0
    assert rl.take(KEY, rate, 1, 0.0) == pytest.approx(expected_wait)


def test_tokens_refill_up_to_the_burst_only() -> None:
    rl = RateLimiter()
    rl.take(KEY, 1.0, 2, 0.0)
    # An hour idle refills to the burst (2), not to 3600.
    assert [rl.take(KEY, 1.0, 2, 3600.0) for _ in range(3)][2] > 0


def test_clients_have_separate_buckets() -> None:
    rl = RateLimiter()
    assert rl.take(("h", "a"), 1.0, 1, 0.0) == 0.0
    assert rl.take(("h", "a"), 1.0, 1, 0.0) > 0
    assert rl.take(("h", "b"), 1.0, 1, 0.0) == 0.0
    assert rl.take(("other", "a"), 1.0, 1, 0.0) == 0.0


def test_the_number_of_buckets_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A scan from many addresses cannot grow memory without bound."""
    monkeypatch.setattr(ratelimit, "MAX_BUCKETS", 100)
    rl = RateLimiter()
    for i in range(1000):
        rl.take(("h", f"10.0.{i // 256}.{i % 256}"), 1.0, 1, 0.0)
    assert len(rl._clients) == 100


def test_a_flood_of_clients_never_resets_a_shared_limit_or_a_held_back_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The oldest bucket went first: 10,000 other addresses reset a hook-wide limit, or
    the limit of a client that had just been refused."""
    monkeypatch.setattr(ratelimit, "MAX_BUCKETS", 100)
    rl = RateLimiter()
    assert rl.take(("all", ""), 1 / 3600, 1, 0.0) == 0.0  # one an hour, for everyone
    assert rl.take(KEY, 1 / 3600, 1, 0.0) == 0.0
    for i in range(1000):
        rl.take(("h", f"10.0.{i // 256}.{i % 256}"), 1.0, 1, 1.0)
        rl.take(KEY, 1 / 3600, 1, 1.0)  # it keeps trying: it stays the most recent
    assert rl.take(("all", ""), 1 / 3600, 1, 2.0) > 3000
    assert rl.take(KEY, 1 / 3600, 1, 2.0) > 3000


def test_clients_whose_buckets_filled_up_again_are_forgotten_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ratelimit, "MAX_BUCKETS", 3)
    rl = RateLimiter()
    rl.take(("h", "held"), 1 / 3600, 1, 0.0)  # empty for an hour: the oldest, but kept
    rl.take(("h", "a"), 1.0, 1, 0.0)
    rl.take(("h", "b"), 1.0, 1, 0.0)
    rl.take(("h", "c"), 1.0, 1, 10.0)  # a and b are full again by now: both go
    assert set(rl._clients) == {("h", "held"), ("h", "c")}
    assert rl.take(("h", "held"), 1 / 3600, 1, 10.0) > 3000


@pytest.mark.parametrize(("delay", "header"), [(0.2, "1"), (1.0, "1"), (36.4, "37"), (60.0, "60")])
def test_retry_after_is_rounded_up(delay: float, header: str) -> None:
    assert ratelimit.retry_after(delay) == header


def test_a_reloaded_limit_applies_to_the_buckets_already_there() -> None:
    rl = RateLimiter()
    assert rl.take(KEY, 1.0, 1, 0.0) == 0.0
    assert rl.take(KEY, 1.0, 5, 0.0) > 0  # no token yet: the burst grows as tokens come
    assert [rl.take(KEY, 1.0, 5, 10.0) for _ in range(5)] == [0.0] * 5
    assert rl._clients[KEY].burst == 5.0 and rl._clients[KEY].full(20.0)


def test_waiting_says_when_a_take_would_be_allowed_without_taking() -> None:
    limiter = RateLimiter()
    key = ("admin-token", "192.0.2.1")
    assert limiter.waiting(key, 1.0, 0.0) == 0.0  # never seen: free
    for _ in range(2):
        assert limiter.take(key, 1.0, 2, 0.0) == 0.0
    assert limiter.waiting(key, 1.0, 0.0) == pytest.approx(1.0)
    assert limiter.waiting(key, 1.0, 0.0) == pytest.approx(1.0)  # asking took nothing
    assert limiter.waiting(key, 1.0, 0.5) == pytest.approx(0.5)
    assert limiter.waiting(key, 1.0, 1.0) == 0.0


def test_retry_after_is_whole_seconds_and_at_most_a_day() -> None:
    from hookrunner.ratelimit import retry_after

    assert [retry_after(d) for d in (0.0, 0.2, 1.0, 1.01, 86399.5)] == ["1", "1", "1", "2", "86400"]
    assert retry_after(1e300) == retry_after(float("inf")) == "86400"  # never a traceback

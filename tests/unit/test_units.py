"""Durations and sizes as rules, flags and variables write them."""

from __future__ import annotations

import pytest

from hookrunner.units import parse_duration, parse_size, utc_iso


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5), ("30s", 30.0), ("10m", 600.0), ("1h", 3600.0), ("30d", 2_592_000.0),
    ("45", 45.0), (" 1.5h ", 5400.0),
    ("2h30m", 9000.0), ("1m30s", 90.0), ("1d12h", 129_600.0), ("1h 30m", 5400.0),
    ("1s500ms", 1.5),
])
def test_durations_single_and_compound(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "h", "2h30", "30x", "-1s", "1h-30m", "ms", "1.h"])
def test_what_is_no_duration_says_what_one_looks_like(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration like 500ms, 30s, 10m, 1h, 2h30m"):
        parse_duration(text)


@pytest.mark.parametrize("value", ["36501d", "99999999999999999999d", 99999999999999999999,
                                   float("inf"), "876601h", 10 ** 400])
def test_a_duration_past_a_hundred_years_is_refused(value: object) -> None:
    """`backoff: 99999999999999999999d` put a retry's date past year 9999: every listing of
    the run failed."""
    with pytest.raises(ValueError, match="a duration is at most 36500d"):
        parse_duration(value)
    assert parse_duration("36500d") == 36500 * 86400


def test_a_time_past_the_calendar_is_shown_as_its_number() -> None:
    assert utc_iso(0) == "1970-01-01T00:00:00Z"
    assert utc_iso(8.64e24) == f"{8.64e24:.0f}"  # Unix seconds, where no date can be given


def test_sizes() -> None:
    assert parse_size("5MiB") == 5 * 1024**2
    assert parse_size(512) == 512
    with pytest.raises(ValueError, match="expected a size like"):
        parse_size("5 parsecs")

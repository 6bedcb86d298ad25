"""Durations (`500ms`, `30s`, `10m`, `1h`, `30d`, `2h30m`, or seconds) and sizes (`512KiB`,
`5MiB`, bytes)."""

from __future__ import annotations

import re
import time

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
# Go's (and so many ops tools') compound form: `2h30m`, `1m30s`, `1d12h`.
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_COMPOUND = re.compile(r"^\s*(?:\d+(?:\.\d+)?\s*(?:ms|s|m|h|d)\s*){2,}$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|KB|MB|GB|K|M|G)?\s*$")
_SIZE_UNITS = {
    None: 1, "B": 1,
    "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3,
    "KB": 1000, "MB": 1000**2, "GB": 1000**3,
    "K": 1024, "M": 1024**2, "G": 1024**3,
}


def as_written(value: object) -> str:
    """A value as an error quotes it: YAML's and JSON's words for null and the booleans (a
    `timeout:` left empty is `null` to its writer, not Python's `None`), else its repr."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


MAX_DURATION = 36500 * 86400.0  # a hundred years: a time past it (now + it) is no date at all


def parse_duration(value: object) -> float:
    """Seconds in `value`; raises ValueError with a readable message."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 30s, got {as_written(value)}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"duration must not be negative: {value!r}")
        if value > MAX_DURATION:  # (before float(): an int of 400 digits overflows it)
            shown = value if value < 10 ** 30 else "a larger number"  # (str() of 5,000 digits fails)
            raise ValueError(f"a duration is at most 36500d (a hundred years), got {shown}")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return _at_most(float(m.group(1)) * _DURATION_UNITS[m.group(2)], value)
        if _COMPOUND.match(value):
            return _at_most(sum(float(n) * _DURATION_UNITS[unit]
                                for n, unit in _DURATION_PART.findall(value)), value)
    raise ValueError(f"expected a duration like 500ms, 30s, 10m, 1h, 2h30m, 30d, "
                     f"got {as_written(value)}")


def _at_most(seconds: float, value: object) -> float:
    # `backoff: 99999999999999999999d` put a retry past the year 9999, and every listing
    # that showed the run's next attempt as a date failed.
    if seconds > MAX_DURATION:
        raise ValueError(f"a duration is at most 36500d (a hundred years), got {value!r}")
    return seconds


def parse_size(value: object) -> int:
    """Bytes in `value`; raises ValueError with a readable message."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size like 5MiB, got {as_written(value)}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size must not be negative: {value!r}")
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])
    raise ValueError(f"expected a size like 512KiB, 5MiB or a number of bytes, "
                     f"got {as_written(value)}")


def format_duration(seconds: float) -> str:
    """The shortest readable form, for logs and the CLI."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{_one_place(seconds)}s"
    if seconds < 3600:
        return f"{_one_place(seconds / 60)}m"
    return f"{_one_place(seconds / 3600)}h"


def _one_place(value: float) -> str:
    """One decimal place where it says something: `90s`, `1.5m`, not `90.0s`."""
    return f"{value:.1f}".removesuffix(".0")


def utc_iso(t: float, form: str = "%Y-%m-%dT%H:%M:%SZ") -> str:
    """`t` (Unix seconds) as UTC, as the logs and the console give times; one past what the
    platform's calendar holds (a record an older version wrote) as its number."""
    try:
        return time.strftime(form, time.gmtime(t))
    except (OverflowError, OSError, ValueError):
        return f"{t:.0f}"

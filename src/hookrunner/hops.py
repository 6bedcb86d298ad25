"""How many hookrunner http actions in a row led to a request: a loop's guard.

A rule whose http action posts to a hook of this server (or of another hookrunner) that
leads back to the same rule made deliveries and runs without end, each journaled for good.
Every http action sends `X-Hookrunner-Hops` one past the count of the delivery that made its
run (none: 0), and a hook refuses a request past MAX_HOPS with 508 Loop Detected.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

HEADER = "X-Hookrunner-Hops"
MAX_HOPS = 10  # a chain of hooks longer than this is a loop, not a pipeline
KEY = "hops"  # where a rendered http action keeps its count (redact.OWN_CHECKS: never shown)
_COUNT = re.compile(r"[0-9]+")
_SHOWN = 9  # digits of a count read as they are; a longer one is past any limit all the same


def of(headers: Mapping[str, str] | Any) -> int:
    """The request's count: 0 without the header or for one that is no whole number (a
    sender's own header of that name, which a hook must not refuse). A count too long to
    read (`1000`, 30 digits) is past the limit, not 0 as it was."""
    value = headers.get(HEADER)
    text = value.strip() if isinstance(value, str) else ""
    # ASCII digits only: `²` is a digit to str.isdigit and no number to int() (a 500).
    if not _COUNT.fullmatch(text):
        return 0
    text = text.lstrip("0") or "0"
    return int(text) if len(text) <= _SHOWN else int("9" * _SHOWN)


def too_many(headers: Mapping[str, str] | Any) -> int | None:
    """The count, where it is past MAX_HOPS."""
    hops = of(headers)
    return hops if hops > MAX_HOPS else None

"""JSON on the hot paths: orjson where it can, the standard library where it cannot.

orjson is 3-4x faster (a 5 KB push parses in ~8 us instead of ~28). It refuses what the
standard library accepts (NaN, integers past 64 bits, lone surrogates, nesting past 1024):
those fall back to `json`, so results and error messages stay the standard library's.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def loads(text: str | bytes) -> Any:
    """Parse JSON; raise what `json.loads` raises for what it refuses."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def dumps(value: Any) -> str:
    """Compact JSON text (UTF-8 as is, not \\u-escaped). Not for floats that may be NaN:
    orjson writes those as null."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError: a big int, a lone surrogate, an odd key type
        return json.dumps(value, separators=(",", ":"))


def dumps_bytes(value: Any) -> bytes:
    """As `dumps`, as bytes (an HTTP body)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()

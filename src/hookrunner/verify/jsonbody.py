"""Read a delivery id or event type out of a JSON body, only once the signature holds."""

from __future__ import annotations

import json
from typing import Any


def parse(body: bytes) -> Any:
    """The decoded JSON body, or None if it is not JSON (Slack also posts form bodies)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def field(doc: Any, *path: str) -> str | None:
    """`doc[path[0]][path[1]]...` as a string if it is a non-empty string or number."""
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    if isinstance(doc, bool):
        return None
    if isinstance(doc, str):
        return doc or None
    if isinstance(doc, int | float):
        return str(doc)
    return None

"""Read a delivery id or event type out of a JSON body, only once the signature holds."""

from __future__ import annotations

import json
from typing import Any

from hookrunner.payload import body_text


def parse(body: bytes, content_type: str | None = None) -> Any:
    """The decoded JSON body, or None if it is not JSON (Slack also posts form bodies).
    Decoded as the payload is (payload.body_text): JSON labelled ISO-8859-1 that is not
    UTF-8 lost its event type and delivery id (so a resend ran again)."""
    text = body_text(body, content_type)
    if text is None:
        return None
    try:
        return json.loads(text)
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

"""Turn a raw body into the `payload` name of templates: JSON, or form fields.

GitHub's form-encoded deliveries carry the JSON in a `payload=` field; it is unwrapped.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from hookrunner.errors import HookrunnerError

FORM = "application/x-www-form-urlencoded"


class PayloadError(HookrunnerError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise PayloadError(400, "body is nested too deeply") from None
    except ValueError as exc:
        raise PayloadError(400, f"body is not valid JSON: {exc}") from None


def parse_body(body: bytes, content_type: str | None) -> Any:
    """Raise PayloadError(415) for a media type no hook can parse, (400) for a malformed body."""
    media = _media_type(content_type)
    if not body.strip():
        return {}
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError(400, "body is not valid UTF-8") from None
    if media == FORM:
        fields = dict(parse_qsl(text, keep_blank_values=True))
        if set(fields) == {"payload"}:
            return _json(fields["payload"])
        return fields
    if media in ("", "application/json", "text/json", "text/plain") or media.endswith("+json"):
        return _json(text)
    raise PayloadError(415, f"unsupported content type {media!r}; send JSON or form fields")

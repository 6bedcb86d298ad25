"""Hide secret-looking values in a rendered action before the API or the console shows it.

The store keeps the action as it ran (the dispatcher needs it); only its display is redacted.
A key is secret-looking when its name contains one of SECRET_WORDS (so `API_TOKEN`,
`db_password`, `X-Auth-Token` all count); every value of an http action's `headers` is hidden,
and so is the password part of a URL.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REDACTED = "[redacted]"
SECRET_WORDS = ("password", "passwd", "token", "secret", "authorization", "api_key", "apikey",
                "private_key", "credential", "cookie")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/]*@")


def secret_key(name: str) -> bool:
    lowered = name.lower().replace("-", "_")
    return any(w in lowered for w in SECRET_WORDS)


def redact_spec(spec: Any, action: str = "") -> Any:
    """A copy of `spec` with secret values replaced by REDACTED."""
    return _walk(spec, headers_secret=action == "http")


def _walk(value: Any, *, headers_secret: bool) -> Any:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            key = str(k)
            if secret_key(key) or (headers_secret and key.lower() == "headers" and isinstance(v, dict)):
                out[key] = _hide(v)
            else:
                out[key] = _walk(v, headers_secret=headers_secret)
        return out
    if isinstance(value, list | tuple):
        return [_walk(v, headers_secret=headers_secret) for v in value]
    if isinstance(value, str):
        return redact_url(value)
    return value


def _hide(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): REDACTED for k in value}
    return REDACTED


def redact_url(text: str) -> str:
    """`https://user:pw@host/x` -> `https://user:[redacted]@host/x`; other text unchanged."""
    if not _URL.match(text):
        return text
    parts = urlsplit(text)
    if parts.password is None:
        return text
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"{parts.username or ''}:{REDACTED}@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))

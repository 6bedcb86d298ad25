"""The verifier protocol: a pure check over (headers, raw body, secrets, now).

A verifier module registers a factory under its name with `@register("name")`. The factory
receives the hook's `verify.<name>` options (already parsed YAML) and a `SecretSource` that
turns `{env: X}` / `{file: P}` / a list of those into the secret values. It returns a
`Verifier`, or raises `ConfigError` (without file/line: the rules loader adds them).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from hookrunner.errors import ConfigError, VerifyError


class Headers:
    """Case-insensitive, multi-valued request headers (as received, decoded latin-1)."""

    __slots__ = ("_first", "_items")
    missing_message = "the request has no header {!r}"  # for templates (hookrunner.templating)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(k, v) for k, v in items]
        # First value per lower-cased name: every verifier and template looks names up.
        self._first: dict[str, str] = {}
        for k, v in reversed(self._items):
            self._first[k.lower()] = v

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._first.get(name.lower(), default)

    def repeats(self) -> bool:
        """Whether any name was sent more than once."""
        return len(self._first) != len(self._items)

    def get_all(self, name: str) -> list[str]:
        low = name.lower()
        return [v for k, v in self._items if k.lower() == low]

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __str__(self) -> str:  # `{{ headers | string }}`: as `{{ headers }}` writes them
        return json.dumps(self.as_dict(), ensure_ascii=False)

    def as_dict(self) -> dict[str, str]:
        """Each name once, spelled as first sent, with the value `get` reads: what a template
        writes for `{{ headers }}` (JSON, not this class's repr)."""
        out: dict[str, str] = {}
        seen: set[str] = set()
        for k, v in self._items:
            if k.lower() not in seen:
                seen.add(k.lower())
                out[k] = v
        return out

    def keys(self) -> list[str]:
        return [k for k, _ in self._items]

    def as_utf8(self) -> Headers:
        """The values as text: a value whose wire bytes are UTF-8 read as UTF-8, others as
        received. HTTP servers decode header bytes as latin-1, which verifiers need (the
        exact bytes), but templates, the store and the console want `Jürgen`, not
        `JÃ¼rgen`. Idempotent for text that was already read this way."""
        if "".join([v for _, v in self._items]).isascii():
            return self
        return Headers((k, header_text(v)) for k, v in self._items)

    def __iter__(self) -> Any:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


def header_text(value: str) -> str:
    """A header value read as UTF-8 where its wire bytes are UTF-8 (see Headers.as_utf8)."""
    if value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


@dataclass(frozen=True)
class SignedRequest:
    """Everything a verifier may look at. `body` is the raw bytes as received."""

    headers: Headers
    body: bytes
    # The full URL as the server saw it (scheme://host/path?query); the accept path builds it
    # only for a verifier whose class sets `uses_url = True` (else "").
    url: str = ""
    query: Mapping[str, str] = field(default_factory=dict)
    client_ip: str = ""
    now: float = 0.0  # unix time, injected so checks are pure and testable


@dataclass(frozen=True)
class Verified:
    """What a successful verification learned: the sender's delivery id and event type, and
    `reply`, where the request is a sender's set-up handshake (Slack's `url_verification`)
    that wants this JSON back instead of being a delivery: nothing is journaled or run."""

    delivery_id: str | None = None
    event: str | None = None
    reply: Mapping[str, Any] | None = None


class Verifier(Protocol):
    """Optional class attributes, read with getattr: `uses_url` (see SignedRequest.url) and
    `challenge`, the `WWW-Authenticate` value sent with this verifier's 401."""

    @property
    def secret_headers(self) -> tuple[str, ...]:
        """Header names whose values are redacted when the delivery is stored."""
        ...

    def verify(self, request: SignedRequest) -> Verified:
        """Check the request, then return `learned(request)`; or raise `VerifyError(reason)`."""
        ...

    def learned(self, request: SignedRequest) -> Verified:
        """The sender's delivery id and event type, read WITHOUT checking anything.

        Only for what is already verified, or for dry runs (`hookrunner test`)."""
        ...


class LearnsNothing:
    """For schemes whose requests carry no delivery id or event type."""

    def learned(self, request: SignedRequest) -> Verified:
        return Verified()


class Unavailable(LearnsNothing):
    """A hook whose secret could not be read when the rules loaded (Hook.unavailable): its
    deliveries are refused before this is reached; were one not, it would verify nothing."""

    secret_headers: tuple[str, ...] = ()

    def verify(self, request: SignedRequest) -> Verified:
        raise VerifyError("its secret could not be read when the rules loaded")


class SecretSource(Protocol):
    def __call__(self, value: Any, key: str = "secret") -> list[bytes]:
        """Resolve `{env: X}`, `{file: P}`, a literal string, or a list of those (rotation)."""
        ...


Factory = Callable[[Mapping[str, Any], SecretSource], Verifier]

VERIFIERS: dict[str, Factory] = {}


def register(name: str) -> Callable[[Factory], Factory]:
    def deco(factory: Factory) -> Factory:
        VERIFIERS[name] = factory
        return factory

    return deco


def check_options(
    options: Mapping[str, Any], allowed: Iterable[str], required: Iterable[str] = ()
) -> None:
    """Reject unknown or missing option keys with a clear ConfigError."""
    allowed_set = set(allowed)
    for key in options:
        if key not in allowed_set:
            expected = (f"expected one of: {', '.join(sorted(allowed_set))}" if allowed_set
                        else "this verifier takes no options")
            raise ConfigError(f"unknown option {key!r}; {expected}", path=(key,))
    for key in required:
        if key not in options:
            raise ConfigError(f"missing required option {key!r}")

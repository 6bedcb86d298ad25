"""Helpers shared by the verifier tests: build a verifier by name, build a request, sign."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import pytest

from hookrunner.verify import VERIFIERS, resolve_secret
from hookrunner.verify.base import Headers, SignedRequest, Verifier

NOW = 1_700_000_000.0


def make(name: str, **options: Any) -> Verifier:
    """The registered verifier `name` with literal options (secrets resolved as in the loader)."""
    return VERIFIERS[name](options, resolve_secret)


def request(
    body: bytes | str = b"",
    headers: Mapping[str, str] | None = None,
    *,
    url: str = "",
    now: float = NOW,
) -> SignedRequest:
    raw = body.encode() if isinstance(body, str) else body
    return SignedRequest(
        headers=Headers((headers or {}).items()), body=raw, url=url, now=now
    )


def hexmac(secret: str | bytes, message: str | bytes, algorithm: str = "sha256") -> str:
    return _mac(secret, message, algorithm).hexdigest()


def b64mac(secret: str | bytes, message: str | bytes, algorithm: str = "sha256") -> str:
    return base64.b64encode(_mac(secret, message, algorithm).digest()).decode()


def _mac(secret: str | bytes, message: str | bytes, algorithm: str) -> Any:
    key = secret.encode() if isinstance(secret, str) else secret
    msg = message.encode() if isinstance(message, str) else message
    return hmac.new(key, msg, getattr(hashlib, algorithm))


@pytest.fixture(autouse=True)
def _no_secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOOKRUNNER_TEST_SECRET", raising=False)

"""Standard Webhooks (https://www.standardwebhooks.com/), also sent by Svix with `svix-*` names.

Signed content is "{id}.{timestamp}.{body}", HMAC-SHA256, base64; the signature header is a
space-separated list of `v1,<sig>` entries (asymmetric `v1a,` entries are skipped).
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hookrunner.errors import ConfigError, VerifyError
from hookrunner.verify import crypto
from hookrunner.verify.base import (
    SecretSource,
    SignedRequest,
    Verified,
    check_options,
    header_text,
    register,
)

SECRET_PREFIX = b"whsec_"
# (id, timestamp, signature) header names, in the order they are looked for.
HEADER_SETS = (
    ("webhook-id", "webhook-timestamp", "webhook-signature"),
    ("svix-id", "svix-timestamp", "svix-signature"),
)


def signing_keys(secret: bytes) -> list[bytes]:
    """The HMAC keys a configured secret stands for.

    The spec serializes a secret as `whsec_` + base64; the reference library base64-decodes an
    unprefixed secret too. An unprefixed secret is therefore tried both decoded and as raw bytes,
    so a key handed out without the base64 convention also works.
    """
    if secret.startswith(SECRET_PREFIX):
        decoded = _b64(secret[len(SECRET_PREFIX):])
        if not decoded:
            raise ConfigError("secret: a whsec_ secret must be base64 after the prefix",
                              path=("secret",))
        return [decoded]
    decoded = _b64(secret)
    return [secret, decoded] if decoded else [secret]


def _b64(data: bytes) -> bytes | None:
    try:
        # The reference library accepts unpadded base64, so pad before decoding.
        return binascii.a2b_base64(data + b"=" * (-len(data) % 4), strict_mode=True) or None
    except ValueError:
        return None


@dataclass(frozen=True)
class StandardVerifier:
    keys: tuple[bytes, ...]
    tolerance: float = crypto.DEFAULT_TOLERANCE
    secret_headers: tuple[str, ...] = ("webhook-signature", "svix-signature")

    def verify(self, request: SignedRequest) -> Verified:
        id_name, ts_name, sig_name = _header_set(request)
        msg_id = crypto.require_header(request.headers, id_name)
        stamp = crypto.require_header(request.headers, ts_name)
        value = crypto.require_header(request.headers, sig_name)
        crypto.check_window(crypto.parse_unix_timestamp(stamp), request.now, self.tolerance)
        signatures = _v1_signatures(value.split())
        if not signatures:  # no `v1,` entry: not a key problem, as "mismatch" would suggest
            raise VerifyError(f"malformed signature header (no v1 entry in {sig_name})")
        message = crypto.header_bytes(f"{msg_id}.{stamp}.") + request.body
        crypto.require_signature(self.keys, message, signatures, encoding="base64")
        return Verified(delivery_id=header_text(msg_id))  # (signed as its wire bytes)

    def learned(self, request: SignedRequest) -> Verified:
        """The delivery id and event type, read without checking (dry runs use it too)."""
        id_name, _, _ = _header_set(request)
        return Verified(delivery_id=crypto.optional_header(request.headers, id_name))


def _header_set(request: SignedRequest) -> tuple[str, str, str]:
    for names in HEADER_SETS:
        if any(name in request.headers for name in names):
            return names
    return HEADER_SETS[0]


def _v1_signatures(entries: Sequence[str]) -> list[str]:
    out = []
    for entry in entries:
        version, sep, signature = entry.partition(",")
        if sep and version == "v1":
            out.append(signature)
    return out


@register("standard")
def standard(options: Mapping[str, Any], secrets: SecretSource) -> StandardVerifier:
    check_options(options, ("secret", "tolerance"), required=("secret",))
    keys = [key for s in crypto.option_secrets(options, secrets) for key in signing_keys(s)]
    return StandardVerifier(tuple(keys), crypto.option_tolerance(options))

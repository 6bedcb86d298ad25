"""Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]` over "{t}.{body}".

The secret (`whsec_...`) is used as is, not base64-decoded. Several v1 entries appear while a
secret is being rolled; `v0` entries (test-mode legacy) are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from hookrunner.errors import VerifyError
from hookrunner.verify import crypto, jsonbody
from hookrunner.verify.base import SecretSource, SignedRequest, Verified, check_options, register

SIGNATURE = "Stripe-Signature"


def parse_signature_header(value: str) -> tuple[str, list[str]]:
    """(timestamp, [v1 signatures]) of a Stripe-Signature header."""
    timestamp: str | None = None
    signatures: list[str] = []
    for item in value.split(","):
        key, sep, val = item.strip().partition("=")
        if not sep:
            continue
        if key == "t" and timestamp is None:
            timestamp = val.strip()
        elif key == "v1":
            signatures.append(val.strip())
    if timestamp is None or not signatures:
        raise VerifyError("malformed signature header")
    return timestamp, signatures


@dataclass(frozen=True)
class StripeVerifier:
    secrets: tuple[bytes, ...]
    tolerance: float = crypto.DEFAULT_TOLERANCE
    secret_headers: tuple[str, ...] = (SIGNATURE,)
    event_source: ClassVar[str] = "the body's `type`"  # (for `test`'s note)

    def verify(self, request: SignedRequest) -> Verified:
        timestamp, signatures = parse_signature_header(
            crypto.require_header(request.headers, SIGNATURE)
        )
        crypto.check_window(crypto.parse_unix_timestamp(timestamp), request.now, self.tolerance)
        message = crypto.header_bytes(timestamp) + b"." + request.body
        crypto.require_signature(self.secrets, message, signatures)
        return self.learned(request)

    def learned(self, request: SignedRequest) -> Verified:
        """The delivery id and event type, read without checking (dry runs use it too)."""
        doc = jsonbody.parse(request.body, request.headers.get("content-type"))
        return Verified(delivery_id=jsonbody.field(doc, "id"), event=jsonbody.field(doc, "type"))


@register("stripe")
def stripe(options: Mapping[str, Any], secrets: SecretSource) -> StripeVerifier:
    check_options(options, ("secret", "tolerance"), required=("secret",))
    return StripeVerifier(
        tuple(crypto.option_secrets(options, secrets)), crypto.option_tolerance(options)
    )

"""SaaS senders: Shopify, PagerDuty, Linear and Sentry sign the body; Zendesk signs a
timestamp and the body."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from hookrunner.verify import crypto, jsonbody
from hookrunner.verify.base import SecretSource, SignedRequest, Verified, check_options, register
from hookrunner.verify.bodysig import BodySignature, register_body_signature

register_body_signature(
    "shopify",
    BodySignature(
        signature_headers=("X-Shopify-Hmac-Sha256",),
        encoding="base64",
        id_headers=("X-Shopify-Webhook-Id",),
        event_headers=("X-Shopify-Topic",),
    ),
)

# V3 webhooks: `v1=<hex>` entries, comma-separated, one per secret while PagerDuty rotates.
register_body_signature(
    "pagerduty",
    BodySignature(
        signature_headers=("X-PagerDuty-Signature",),
        prefix="v1=",
        separator=",",
        id_headers=("X-Webhook-Id",),
        id_field=("event", "id"),
        event_field=("event", "event_type"),
    ),
)

register_body_signature(
    "linear",
    BodySignature(
        signature_headers=("Linear-Signature",),
        id_headers=("Linear-Delivery",),
        event_headers=("Linear-Event",),
        stamp_field=("webhookTimestamp",),  # ms; Linear's SDK allows a minute either way
    ),
)

register_body_signature(
    "sentry",
    BodySignature(
        signature_headers=("Sentry-Hook-Signature",),
        id_headers=("Request-ID",),
        event_headers=("Sentry-Hook-Resource",),
    ),
)

ZENDESK_SIGNATURE = "X-Zendesk-Webhook-Signature"
ZENDESK_TIMESTAMP = "X-Zendesk-Webhook-Signature-Timestamp"


@dataclass(frozen=True)
class ZendeskVerifier:
    """base64(HMAC-SHA256(timestamp + body)); the timestamp is ISO 8601 (`...T05:09:27Z`)."""

    secrets: tuple[bytes, ...]
    tolerance: float = crypto.DEFAULT_TOLERANCE
    secret_headers: tuple[str, ...] = (ZENDESK_SIGNATURE,)
    event_source: ClassVar[str] = "the body's `type`"  # (for `test`'s note)

    def verify(self, request: SignedRequest) -> Verified:
        signature = crypto.require_header(request.headers, ZENDESK_SIGNATURE)
        stamp = crypto.require_header(request.headers, ZENDESK_TIMESTAMP)
        crypto.check_window(crypto.parse_iso_timestamp(stamp), request.now, self.tolerance)
        crypto.require_signature(
            self.secrets, crypto.header_bytes(stamp) + request.body, [signature],
            encoding="base64",
        )
        return self.learned(request)

    def learned(self, request: SignedRequest) -> Verified:
        """The delivery id and event type, read without checking (dry runs use it too)."""
        # X-Zendesk-Webhook-Id names the webhook (the same on every request), not the delivery.
        return Verified(
            delivery_id=crypto.optional_header(
                request.headers, "X-Zendesk-Webhook-Invocation-Id"
            ),
            event=jsonbody.field(
                jsonbody.parse(request.body, request.headers.get("content-type")), "type"),
        )


@register("zendesk")
def zendesk(options: Mapping[str, Any], secrets: SecretSource) -> ZendeskVerifier:
    check_options(options, ("secret", "tolerance"), required=("secret",))
    return ZendeskVerifier(
        tuple(crypto.option_secrets(options, secrets)), crypto.option_tolerance(options)
    )

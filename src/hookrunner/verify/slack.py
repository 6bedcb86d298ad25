"""Slack: `X-Slack-Signature: v0=<hex>` over "v0:{X-Slack-Request-Timestamp}:{body}".

Events API bodies are JSON (dedup on `event_id`); slash commands and interactivity post form
bodies, which have no delivery id here (a hook can set `dedup:` for those). The Events API's
`url_verification` request is answered with its `challenge`, as Slack requires before it
sends any event to a Request URL, and a slash command's `ssl_check=1` with a 200: both are
handshakes, not deliveries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import parse_qs

from hookrunner.errors import VerifyError
from hookrunner.payload import body_text, form_charset
from hookrunner.verify import crypto, jsonbody
from hookrunner.verify.base import SecretSource, SignedRequest, Verified, check_options, register

SIGNATURE = "X-Slack-Signature"
TIMESTAMP = "X-Slack-Request-Timestamp"
VERSION = "v0"


@dataclass(frozen=True)
class SlackVerifier:
    secrets: tuple[bytes, ...]
    tolerance: float = crypto.DEFAULT_TOLERANCE
    secret_headers: tuple[str, ...] = (SIGNATURE,)
    # (for `test`'s note)
    event_source: ClassVar[str] = "the body's `event.type` or `type`, or a command's `command`"

    def verify(self, request: SignedRequest) -> Verified:
        value = crypto.require_header(request.headers, SIGNATURE)
        stamp = crypto.require_header(request.headers, TIMESTAMP)
        version, sep, signature = value.partition("=")
        if not sep or version != VERSION:
            raise VerifyError("malformed signature header")
        crypto.check_window(crypto.parse_unix_timestamp(stamp), request.now, self.tolerance)
        message = b"v0:" + crypto.header_bytes(stamp) + b":" + request.body
        crypto.require_signature(self.secrets, message, [signature])
        return self.learned(request)

    def learned(self, request: SignedRequest) -> Verified:
        """The delivery id and event type, read without checking (dry runs use it too)."""
        doc = jsonbody.parse(request.body, request.headers.get("content-type"))
        if doc is None:
            return _learned_from_form(request.body, request.headers.get("content-type"))
        challenge = jsonbody.field(doc, "challenge")
        if jsonbody.field(doc, "type") == "url_verification" and challenge is not None:
            return Verified(event="url_verification", reply={"challenge": challenge})
        return Verified(
            delivery_id=jsonbody.field(doc, "event_id"),
            event=jsonbody.field(doc, "event", "type") or jsonbody.field(doc, "type"),
        )


def _learned_from_form(body: bytes, content_type: str | None) -> Verified:
    """Interactivity posts `payload=<JSON>` (its `type`: `block_actions`, `view_submission`,
    ...); a slash command posts fields, `command` naming it (`/deploy`). Read in the charset
    the payload is read in (`event` was `/deploy�` where `payload.command` was `/deployé`)."""
    text = body_text(body, content_type)
    fields = parse_qs(body.decode("utf-8", "replace") if text is None else text,
                      keep_blank_values=True, encoding=form_charset(content_type),
                      errors="replace")
    if fields.get("ssl_check") == ["1"]:
        # Slack checking a slash command's certificate: answered 200, nothing journaled or run.
        return Verified(event="ssl_check", reply={})
    if "payload" in fields:
        return Verified(event=jsonbody.field(jsonbody.parse(fields["payload"][0].encode()), "type"))
    command = fields.get("command")
    return Verified(event=(command[0] or None) if command else None)


@register("slack")
def slack(options: Mapping[str, Any], secrets: SecretSource) -> SlackVerifier:
    check_options(options, ("secret", "tolerance"), required=("secret",))
    return SlackVerifier(
        tuple(crypto.option_secrets(options, secrets)), crypto.option_tolerance(options)
    )

"""One verifier for the many senders that sign only the raw body and name the delivery in a
header: they differ in header names, encoding and prefix, so each is a template, not a class.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from hookrunner.errors import VerifyError
from hookrunner.payload import form_payload
from hookrunner.verify import crypto, jsonbody
from hookrunner.verify.base import SecretSource, SignedRequest, Verified, check_options, register


@dataclass(frozen=True)
class BodySignature:
    signature_headers: tuple[str, ...]  # alternatives; the first one present is checked
    secrets: tuple[bytes, ...] = ()
    encoding: crypto.Encoding = "hex"
    prefix: str = ""  # e.g. "sha256="; compared case-insensitively
    separator: str | None = None  # several signatures in one header (rotation), e.g. ","
    id_headers: tuple[str, ...] = ()
    event_headers: tuple[str, ...] = ()
    id_field: tuple[str, ...] = ()  # JSON body path, used when no id header is present
    event_field: tuple[str, ...] = ()
    other_secret_headers: tuple[str, ...] = ()
    # A signed JSON body field holding when it was sent, in milliseconds (Linear's
    # `webhookTimestamp`): checked against `tolerance` where the hook sets one.
    stamp_field: tuple[str, ...] = ()
    tolerance: float | None = None
    # Signs the JSON it sends as a form's one field `payload` where the hook is set to the
    # form content type (Gitea, Forgejo, Gogs): the body's signature failing, that field's.
    signs_form_payload: bool = False

    @property
    def secret_headers(self) -> tuple[str, ...]:
        return self.signature_headers + self.other_secret_headers

    @property
    def event_source(self) -> str | None:
        """Where the event type is read, in words (for `test`'s note), or None."""
        said = [f"its {' or '.join(self.event_headers)} header"] if self.event_headers else []
        if self.event_field:
            said.append(f"the body's `{'.'.join(self.event_field)}`")
        return ", else ".join(said) or None

    def verify(self, request: SignedRequest) -> Verified:
        _, value = crypto.first_header(request.headers, self.signature_headers)
        parts = [value] if self.separator is None else value.split(self.separator)
        candidates = [p for p in (self._strip_prefix(p.strip()) for p in parts) if p is not None]
        if not candidates:
            raise VerifyError("malformed signature header")
        if not crypto.any_signature_matches(self.secrets, request.body, candidates,
                                            encoding=self.encoding):
            inner = form_payload(request.body, request.headers.get("content-type")) \
                if self.signs_form_payload else None
            if inner is None:
                raise VerifyError("signature mismatch")
            crypto.require_signature(self.secrets, inner, candidates, encoding=self.encoding)
        if self.tolerance is not None:
            crypto.check_window(self._sent_at(request), request.now, self.tolerance)
        return self.learned(request)

    def _sent_at(self, request: SignedRequest) -> float:
        stamp = jsonbody.field(jsonbody.parse(request.body, request.headers.get("content-type")),
                               *self.stamp_field)
        try:
            sent = float(stamp or "") / 1000
        except ValueError:
            sent = math.nan
        if not math.isfinite(sent):  # (json takes NaN and Infinity, which no window refuses)
            raise VerifyError(f"missing timestamp field {'.'.join(self.stamp_field)}")
        return sent

    def learned(self, request: SignedRequest) -> Verified:
        """The delivery id and event type, read without checking (dry runs use it too)."""
        delivery_id = crypto.optional_header(request.headers, *self.id_headers)
        event = crypto.optional_header(request.headers, *self.event_headers)
        if (delivery_id is None and self.id_field) or (event is None and self.event_field):
            doc = jsonbody.parse(request.body, request.headers.get("content-type"))
            if delivery_id is None and self.id_field:
                delivery_id = jsonbody.field(doc, *self.id_field)
            if event is None and self.event_field:
                event = jsonbody.field(doc, *self.event_field)
        return Verified(delivery_id=delivery_id, event=event)

    def _strip_prefix(self, part: str) -> str | None:
        if not self.prefix:
            return part
        if not part.lower().startswith(self.prefix.lower()):
            return None  # another scheme's entry (e.g. a future `v2=`): skip it
        return part[len(self.prefix):]


def register_body_signature(name: str, template: BodySignature) -> None:
    """Register `name` as `template` with the hook's secrets; its options are `secret`, and
    `tolerance` where the body carries when it was sent (off unless given)."""

    def factory(options: Mapping[str, Any], secrets: SecretSource) -> BodySignature:
        check_options(options, ("secret", "tolerance") if template.stamp_field else ("secret",),
                      required=("secret",))
        tolerance = crypto.option_tolerance(options) if "tolerance" in options else None
        return replace(template, secrets=tuple(crypto.option_secrets(options, secrets)),
                       tolerance=tolerance)

    register(name)(factory)

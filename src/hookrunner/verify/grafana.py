"""Grafana alerting webhooks: hex HMAC-SHA256 of the body, or of "{timestamp}:{body}" when the
contact point names a timestamp header (Grafana docs, "Configure webhook notifications",
section HMAC signature)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from hookrunner.verify import crypto
from hookrunner.verify.base import (
    LearnsNothing,
    SecretSource,
    SignedRequest,
    Verified,
    check_options,
    register,
)

DEFAULT_HEADER = "X-Grafana-Alerting-Signature"


@dataclass(frozen=True)
class GrafanaVerifier(LearnsNothing):
    secrets: tuple[bytes, ...]
    header: str = DEFAULT_HEADER
    timestamp_header: str | None = None
    tolerance: float = crypto.DEFAULT_TOLERANCE

    @property
    def secret_headers(self) -> tuple[str, ...]:
        return (self.header,)

    def verify(self, request: SignedRequest) -> Verified:
        signature = crypto.require_header(request.headers, self.header)
        message = request.body
        if self.timestamp_header:
            stamp = crypto.require_header(request.headers, self.timestamp_header)
            crypto.check_window(crypto.parse_unix_timestamp(stamp), request.now, self.tolerance)
            message = crypto.header_bytes(stamp) + b":" + request.body
        crypto.require_signature(self.secrets, message, [signature])
        return self.learned(request)


@register("grafana")
def grafana(options: Mapping[str, Any], secrets: SecretSource) -> GrafanaVerifier:
    check_options(
        options, ("secret", "header", "timestamp_header", "tolerance"), required=("secret",)
    )
    return GrafanaVerifier(
        secrets=tuple(crypto.option_secrets(options, secrets)),
        header=cast(str, crypto.option_str(options, "header", DEFAULT_HEADER)),
        timestamp_header=crypto.option_str(options, "timestamp_header"),
        tolerance=crypto.option_tolerance(options),
    )

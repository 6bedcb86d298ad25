"""Grafana alerting webhooks: hex HMAC-SHA256 of the body, or of "{timestamp}:{body}" when the
contact point names a timestamp header (Grafana docs, "Configure webhook notifications",
section HMAC signature). The generic `hmac` scheme with Grafana's defaults."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hookrunner.verify import crypto
from hookrunner.verify.base import SecretSource, check_options, register
from hookrunner.verify.generic import HmacVerifier

DEFAULT_HEADER = "X-Grafana-Alerting-Signature"
# Where the contact point's "Header" field is left blank, some Grafana versions sign into this
# one instead (grafana/alerting http/hmac.go's defaultHeaderName), whatever the UI suggests.
BLANK_FIELD_HEADER = "X-Grafana-Alert-Signature"


@register("grafana")
def grafana(options: Mapping[str, Any], secrets: SecretSource) -> HmacVerifier:
    check_options(
        options, ("secret", "header", "timestamp_header", "tolerance"), required=("secret",)
    )
    timestamp_header, tolerance, warnings = crypto.option_window(options)
    header = crypto.option_header(options, "header")
    return HmacVerifier(
        secrets=tuple(crypto.option_secrets(options, secrets)),
        header=header or DEFAULT_HEADER,
        also_header=None if header else BLANK_FIELD_HEADER,
        timestamp_header=timestamp_header,
        tolerance=tolerance,
        timestamp_separator=b":",
        config_warnings=warnings,
    )

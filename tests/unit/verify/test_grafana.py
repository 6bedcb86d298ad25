"""grafana: hex HMAC-SHA256 of the body, or of "{timestamp}:{body}" with a timestamp header."""

from __future__ import annotations

from typing import Any

import pytest

from hookrunner.errors import VerifyError
from hookrunner.verify.base import Verified

from .conftest import NOW, hexmac, make, request

BODY = b'{"receiver":"hookrunner","status":"firing","alerts":[]}'
TS = int(NOW)


@pytest.mark.parametrize(
    ("options", "headers", "body", "reason"),
    [
        ({}, {"X-Grafana-Alerting-Signature": hexmac("g", BODY)}, BODY, None),
        ({"header": "X-Sig"}, {"X-Sig": hexmac("g", BODY)}, BODY, None),
        ({"timestamp_header": "X-Grafana-Alerting-Timestamp"},
         {"X-Grafana-Alerting-Signature": hexmac("g", f"{TS}:".encode() + BODY),
          "X-Grafana-Alerting-Timestamp": str(TS)}, BODY, None),
        ({}, {"X-Grafana-Alerting-Signature": hexmac("g", BODY)}, BODY + b" ",
         "signature mismatch"),
        ({}, {"X-Grafana-Alerting-Signature": hexmac("h", BODY)}, BODY, "signature mismatch"),
        ({}, {}, BODY, "missing header X-Grafana-Alerting-Signature"),
        # A blank "Header" field in the contact point: grafana/alerting signs into its own
        # default name, which some versions spell without "ing".
        ({}, {"X-Grafana-Alert-Signature": hexmac("g", BODY)}, BODY, None),
        ({}, {"X-Grafana-Alert-Signature": hexmac("h", BODY)}, BODY, "signature mismatch"),
        # The first name present is the one checked: the other cannot stand in for it.
        ({}, {"X-Grafana-Alerting-Signature": hexmac("h", BODY),
              "X-Grafana-Alert-Signature": hexmac("g", BODY)}, BODY, "signature mismatch"),
        # A chosen header name is the only one read.
        ({"header": "X-Sig"}, {"X-Grafana-Alert-Signature": hexmac("g", BODY)}, BODY,
         "missing header X-Sig"),
        # With a timestamp header, a "." separator (the generic hmac form) is not Grafana's.
        ({"timestamp_header": "X-Ts"},
         {"X-Grafana-Alerting-Signature": hexmac("g", f"{TS}.".encode() + BODY),
          "X-Ts": str(TS)}, BODY, "signature mismatch"),
        ({"timestamp_header": "X-Ts"},
         {"X-Grafana-Alerting-Signature": hexmac("g", f"{TS - 400}:".encode() + BODY),
          "X-Ts": str(TS - 400)}, BODY, "timestamp outside tolerance"),
        ({"timestamp_header": "X-Ts", "tolerance": "10m"},
         {"X-Grafana-Alerting-Signature": hexmac("g", f"{TS + 400}:".encode() + BODY),
          "X-Ts": str(TS + 400)}, BODY, None),
        ({"timestamp_header": "X-Ts"}, {"X-Grafana-Alerting-Signature": hexmac("g", BODY)},
         BODY, "missing header X-Ts"),
    ],
)
def test_grafana(
    options: dict[str, Any], headers: dict[str, str], body: bytes, reason: str | None
) -> None:
    verifier = make("grafana", secret=["old", "g"], **options)
    if reason is None:
        assert verifier.verify(request(body, headers)) == Verified()
    else:
        with pytest.raises(VerifyError) as info:
            verifier.verify(request(body, headers))
        assert info.value.reason == reason


def test_both_default_names_are_secret_headers() -> None:
    """Both default names are redacted in the stored headers; a chosen name alone."""
    assert make("grafana", secret="g").secret_headers == (
        "X-Grafana-Alerting-Signature", "X-Grafana-Alert-Signature")
    assert make("grafana", secret="g", header="X-Sig").secret_headers == ("X-Sig",)

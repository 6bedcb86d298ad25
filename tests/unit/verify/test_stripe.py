"""stripe: t=/v1= header over "{t}.{body}", any v1 may match, a window both ways."""

from __future__ import annotations

import pytest

from hookrunner.errors import ConfigError, VerifyError
from hookrunner.verify.base import Verified
from hookrunner.verify.stripe import parse_signature_header

from .conftest import NOW, hexmac, make, request

# Stripe publishes no fixed (secret, payload, signature) triple: its SDK tests sign on the fly
# (stripe-python tests/test_webhook.py, secret "whsec_test_secret"). The construction below is
# the documented one ("Verify the events that Stripe sends", docs.stripe.com/webhooks), and the
# secret is used as is, `whsec_` included.
SECRET = "whsec_test_secret"
BODY = b'{\n  "id": "evt_test_webhook",\n  "object": "event",\n  "type": "invoice.paid"\n}'
T = int(NOW)


def header(t: int = T, secret: str = SECRET, body: bytes = BODY, extra: str = "") -> str:
    return f"t={t},v1={hexmac(secret, f'{t}.'.encode() + body)}{extra}"


def test_docs_example_header_parses() -> None:
    # The example header from Stripe's "Check the webhook signatures" section.
    value = (
        "t=1492774577,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd,"
        "v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39"
    )
    assert parse_signature_header(value) == (
        "1492774577", ["5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd"]
    )


@pytest.mark.parametrize(
    ("value", "body", "reason"),
    [
        (header(), BODY, None),
        # Rolling a secret: the old and the new signature are both sent.
        (f"t={T},v1={'0' * 64}," + header().split(",", 1)[1], BODY, None),
        (header(extra=",v0=abc,x=1"), BODY, None),
        (header(), BODY.replace(b"paid", b"void"), "signature mismatch"),
        (header(secret="whsec_other"), BODY, "signature mismatch"),
        (header(t=T - 301), BODY, "timestamp outside tolerance"),
        (header(t=T + 301), BODY, "timestamp outside tolerance"),
        (f"v1={'0' * 64}", BODY, "malformed signature header"),
        (f"t={T}", BODY, "malformed signature header"),
        (f"t=abc,v1={'0' * 64}", BODY, "invalid timestamp: Unix seconds expected"),
    ],
)
def test_stripe(value: str, body: bytes, reason: str | None) -> None:
    verifier = make("stripe", secret=SECRET)
    req = request(body, {"Stripe-Signature": value})
    if reason is None:
        assert verifier.verify(req) == Verified("evt_test_webhook", "invoice.paid")
    else:
        with pytest.raises(VerifyError) as info:
            verifier.verify(req)
        assert info.value.reason == reason


def test_rotated_secrets_and_missing_header() -> None:
    verifier = make("stripe", secret=["whsec_old", SECRET])
    assert verifier.verify(request(BODY, {"Stripe-Signature": header()})).event == "invoice.paid"
    with pytest.raises(VerifyError, match="missing header Stripe-Signature"):
        verifier.verify(request(BODY))


def test_non_json_body_verifies_without_id() -> None:
    body = b"plain"
    verifier = make("stripe", secret=SECRET, tolerance="10m")
    assert verifier.verify(
        request(body, {"Stripe-Signature": header(t=T - 500, body=body)})
    ) == Verified()


def test_a_tolerance_under_a_second_is_refused_and_one_second_accepted() -> None:
    with pytest.raises(ConfigError, match="at least 1s"):
        make("stripe", secret=SECRET, tolerance="100ms")
    assert make("stripe", secret=SECRET, tolerance="1s")

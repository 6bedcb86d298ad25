"""standard: Standard Webhooks / Svix, whsec_ secrets, v1 list, window both ways."""

from __future__ import annotations

import base64

import pytest

from hookrunner.errors import ConfigError, VerifyError
from hookrunner.verify.base import Verified

from .conftest import NOW, b64mac, make, request

# The reference library's signing test (github.com/standard-webhooks/standard-webhooks,
# libraries/python/tests/test_webhooks.py, test_sign_function).
VEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VEC_TS = "1614265330"
VEC_BODY = '{"test": 2432232314}'
VEC_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

KEY = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")


def vec_headers(prefix: str = "webhook") -> dict[str, str]:
    return {f"{prefix}-id": VEC_ID, f"{prefix}-timestamp": VEC_TS, f"{prefix}-signature": VEC_SIG}


@pytest.mark.parametrize("prefix", ["webhook", "svix"])
@pytest.mark.parametrize("secret", [VEC_SECRET, VEC_SECRET.removeprefix("whsec_")])
def test_reference_vector(prefix: str, secret: str) -> None:
    # The reference library accepts the secret with or without `whsec_`.
    verifier = make("standard", secret=secret)
    req = request(VEC_BODY, vec_headers(prefix), now=float(VEC_TS))
    assert verifier.verify(req) == Verified(delivery_id=VEC_ID)


def test_reference_vector_with_several_signatures() -> None:
    # As in the reference test_multi_sig_payload_is_valid: other versions and wrong v1s around.
    wrong = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
    value = f"{wrong} v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= {VEC_SIG} {wrong}"
    req = request(VEC_BODY, {**vec_headers(), "webhook-signature": value}, now=float(VEC_TS))
    assert make("standard", secret=VEC_SECRET).verify(req).delivery_id == VEC_ID


def test_raw_unprefixed_secret_is_used_as_bytes() -> None:
    # A secret that is not base64 is the key itself.
    ts = str(int(NOW))
    headers = {
        "webhook-id": "m1",
        "webhook-timestamp": ts,
        "webhook-signature": "v1," + b64mac("not-base64!", f"m1.{ts}.".encode() + b"{}"),
    }
    verifier = make("standard", secret="not-base64!")
    assert verifier.verify(request(b"{}", headers)).delivery_id == "m1"


def signed(ts: int, key: bytes = KEY, body: bytes = b"{}", msg_id: str = "m1") -> dict[str, str]:
    sig = b64mac(key, f"{msg_id}.{ts}.".encode() + body)
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": f"v1,{sig}"}


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        (signed(int(NOW)), b"{}", None),
        (signed(int(NOW)), b"{ }", "signature mismatch"),
        (signed(int(NOW), key=b"other"), b"{}", "signature mismatch"),
        # The id is signed: a replay under a fresh id fails.
        ({**signed(int(NOW)), "webhook-id": "m2"}, b"{}", "signature mismatch"),
        (signed(int(NOW) - 301), b"{}", "timestamp outside tolerance"),
        (signed(int(NOW) + 301), b"{}", "timestamp outside tolerance"),
        ({**signed(int(NOW)), "webhook-timestamp": "hello"}, b"{}",
         "invalid timestamp: Unix seconds expected"),
        ({k: v for k, v in signed(int(NOW)).items() if k != "webhook-id"}, b"{}",
         "missing header webhook-id"),
        ({}, b"{}", "missing header webhook-id"),
        ({**signed(int(NOW)), "webhook-signature": "v1a,abc"}, b"{}",
         "malformed signature header (no v1 entry in webhook-signature)"),
        # The signature without its `v1,`: malformed, not a wrong key.
        ({**signed(int(NOW)), "webhook-signature": signed(int(NOW))["webhook-signature"][3:]},
         b"{}", "malformed signature header (no v1 entry in webhook-signature)"),
        ({**signed(int(NOW)), "webhook-signature": "v1a,abc v1,AAAA"}, b"{}", "signature mismatch"),
    ],
)
def test_standard(headers: dict[str, str], body: bytes, reason: str | None) -> None:
    verifier = make("standard", secret=["whsec_" + base64.b64encode(b"old").decode(), VEC_SECRET])
    if reason is None:
        assert verifier.verify(request(body, headers)) == Verified("m1")
    else:
        with pytest.raises(VerifyError) as info:
            verifier.verify(request(body, headers))
        assert info.value.reason == reason


def test_bad_whsec_secret_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="base64"):
        make("standard", secret="whsec_***")


def test_a_utf8_id_is_its_text_as_a_dry_run_reads_it() -> None:
    """The id is signed as its wire bytes, and kept as its UTF-8 text (as `learned` reads it
    for `hookrunner test`): the server stored `dÃ©-1`, the dry run said `dé-1`."""
    wire_id = "dé-1".encode().decode("latin-1")  # as the HTTP server hands it over
    message = wire_id.encode("latin-1") + f".{VEC_TS}.".encode() + VEC_BODY.encode()
    headers = {"webhook-id": wire_id, "webhook-timestamp": VEC_TS,
               "webhook-signature": "v1," + b64mac(KEY, message)}
    verifier = make("standard", secret=VEC_SECRET)
    req = request(VEC_BODY, headers, now=float(VEC_TS))
    assert verifier.verify(req) == Verified(delivery_id="dé-1")
    assert verifier.learned(req).delivery_id == "dé-1"  # type: ignore[attr-defined]

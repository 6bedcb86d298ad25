"""twilio: HMAC-SHA1 over URL + sorted params, bodySHA256 for JSON, port variants."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from hookrunner.errors import ConfigError, VerifyError
from hookrunner.verify.base import Verified

from .conftest import make, request

# twilio-python's RequestValidator tests (github.com/twilio/twilio-python,
# tests/unit/test_request_validator.py), auth token "12345".
TOKEN = "12345"
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
    "Caller": "+14158675309",
}
EXPECTED = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
DUPLICATE_BODY = "Sid=CA123&SidAccount=AC123&Digits=5678&Digits=1234"
DUPLICATE_EXPECTED = "IK+Dwps556ElfBT0I3Rgjkr1wJU="
JSON_BODY = '{"property": "value", "boolean": true}'
BODY_HASH = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
JSON_EXPECTED = "a9nBmqA0ju/hNViExpshrM61xv4="

FORM = urlencode(PARAMS)
MISMATCH = ("signature mismatch (URL checked: https://mycompany.com/myapp.php; "
            "set url: to the URL Twilio posts to)")


@pytest.mark.parametrize(
    ("url", "body", "signature"),
    [
        (URL, FORM, EXPECTED),
        (URL, DUPLICATE_BODY, DUPLICATE_EXPECTED),
        (f"{URL}&bodySHA256={BODY_HASH}", JSON_BODY, JSON_EXPECTED),
        # test_validation_removes_port_on_https: signed without the port the proxy added.
        (URL.replace(".com", ".com:1234"), FORM, EXPECTED),
        # test_validation_adds_port_on_https / _on_http: signed with the default port.
        (URL, FORM, "kvajT1Ptam85bY51eRf/AJRuM3w="),
        (URL.replace("https", "http"), FORM, "0ZXoZLH/DfblKGATFgpif+LLRf4="),
        # test_validation_removes_port_on_http: signed with the explicit port.
        (URL.replace(".com", ".com:1234").replace("https", "http"), FORM,
         "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="),
    ],
)
def test_sdk_vectors(url: str, body: str, signature: str) -> None:
    headers = {"X-Twilio-Signature": signature, "I-Twilio-Idempotency-Token": "idem-1"}
    result = make("twilio", secret=TOKEN).verify(request(body, headers, url=url))
    assert result == Verified(delivery_id="idem-1")


@pytest.mark.parametrize(
    ("url", "body", "signature", "reason"),
    [
        (URL, FORM + "&Extra=1", EXPECTED, MISMATCH),
        (URL.replace("foo=1", "foo=2"), FORM, EXPECTED, MISMATCH),
        # The URL checked is named, without its query or credentials (either may be secret).
        (URL.replace("https://", "https://user:pw@").replace(".com", ".com:8443"), FORM, EXPECTED,
         "signature mismatch (URL checked: https://mycompany.com:8443/myapp.php; "
         "set url: to the URL Twilio posts to)"),
        (f"{URL}&bodySHA256={BODY_HASH}", JSON_BODY + " ", JSON_EXPECTED, "body hash mismatch"),
        (f"{URL}&bodySHA256={'0' * 64}", JSON_BODY, JSON_EXPECTED, "body hash mismatch"),
        ("", FORM, EXPECTED, "request URL unknown"),
        ("http://[::1/x", FORM, EXPECTED, "malformed request URL"),
    ],
)
def test_rejects(url: str, body: str, signature: str, reason: str) -> None:
    with pytest.raises(VerifyError) as info:
        make("twilio", secret=TOKEN).verify(
            request(body, {"X-Twilio-Signature": signature}, url=url)
        )
    assert info.value.reason == reason


def test_wrong_token_and_rotation() -> None:
    req = request(FORM, {"X-Twilio-Signature": EXPECTED}, url=URL)
    with pytest.raises(VerifyError, match="signature mismatch"):
        make("twilio", secret="54321").verify(req)
    assert make("twilio", secret=["54321", TOKEN]).verify(req) == Verified()
    with pytest.raises(VerifyError, match="missing header X-Twilio-Signature"):
        make("twilio", secret=TOKEN).verify(request(FORM, url=URL))


def test_url_option_replaces_what_the_proxy_rewrote() -> None:
    # Behind a proxy the server sees http://10.0.0.5:8080/hooks/sms; Twilio signed the public URL.
    verifier = make("twilio", secret=TOKEN, url="https://mycompany.com/myapp.php")
    req = request(FORM, {"X-Twilio-Signature": EXPECTED},
                  url="http://10.0.0.5:8080/hooks/sms?foo=1&bar=2")
    assert verifier.verify(req) == Verified()
    # A configured URL with a query is used exactly...
    verifier = make("twilio", secret=TOKEN, url=URL)
    assert verifier.verify(request(FORM, {"X-Twilio-Signature": EXPECTED}, url="")) == Verified()
    # ...but for a JSON body Twilio appends bodySHA256 to it: that comes from the request.
    json_req = request(JSON_BODY, {"X-Twilio-Signature": JSON_EXPECTED},
                       url=f"http://10.0.0.5:8080/hooks/sms?foo=1&bar=2&bodySHA256={BODY_HASH}")
    assert verifier.verify(json_req) == Verified()
    tampered = request(JSON_BODY + " ", {"X-Twilio-Signature": JSON_EXPECTED},
                       url=f"http://10.0.0.5:8080/hooks/sms?foo=1&bar=2&bodySHA256={BODY_HASH}")
    with pytest.raises(VerifyError, match="body hash mismatch"):
        verifier.verify(tampered)


def test_bad_url_option() -> None:
    with pytest.raises(ConfigError):
        make("twilio", secret=TOKEN, url="mycompany.com/x")


def test_a_shared_key_signature_names_its_hmac_in_the_settings_header() -> None:
    """probe: Twilio's webhook signature settings sign with HMAC-SHA256 and say so in
    X-Twilio-Webhooks-Signature-Settings; every such request was refused. (The vector is
    twilio-python 9.13's RequestValidator.compute_signature(URL, PARAMS, "HMAC_SHA256").)"""
    sha256 = "033hgUJA9M/hXIZsYjwkerEP/DBm35nEri5FhCYjA5s="
    settings = "X-Twilio-Webhooks-Signature-Settings"
    verifier = make("twilio", secret=TOKEN)
    assert verifier.verify(request(FORM, {"X-Twilio-Signature": sha256,
                                          settings: "key=wsk_1,algorithm=HMAC_SHA256"},
                                   url=URL)) == Verified()
    assert verifier.verify(request(FORM, {"X-Twilio-Signature": EXPECTED,
                                          settings: "key=wsk_1"}, url=URL)) == Verified()
    for header, signature, reason in (
            ("key=wsk_1,algorithm=HMAC_SHA256", EXPECTED, MISMATCH),
            ("algorithm=HMAC_SHA1", sha256, MISMATCH),
            ("algorithm=HMAC_MD5", sha256, "unsupported signature algorithm 'HMAC_MD5' in "
                                           f"{settings} (HMAC_SHA1 or HMAC_SHA256)")):
        with pytest.raises(VerifyError) as info:
            verifier.verify(request(FORM, {"X-Twilio-Signature": signature, settings: header},
                                    url=URL))
        assert info.value.reason == reason

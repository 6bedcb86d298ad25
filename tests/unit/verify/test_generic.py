"""hmac, token, basic and none: the verifiers for senders without a scheme of their own."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from hookrunner.errors import ConfigError, VerifyError
from hookrunner.verify import crypto
from hookrunner.verify.base import Headers, SignedRequest, Verified

from .conftest import NOW, b64mac, hexmac, make, request

BODY = b'{"monitoring_status":"overloaded"}'
TS = str(int(NOW))


def _hmac_case(options: dict[str, Any], headers: dict[str, str], body: bytes = BODY) -> Any:
    return make("hmac", **{"secret": "k", "header": "X-Signature", **options}), request(
        body, headers
    )


HMAC_OK = [
    ({}, {"X-Signature": hexmac("k", BODY)}),
    ({"algorithm": "sha1"}, {"X-Signature": hexmac("k", BODY, "sha1")}),
    ({"algorithm": "sha512", "encoding": "base64"},
     {"X-Signature": b64mac("k", BODY, "sha512")}),
    ({"prefix": "sha256="}, {"X-Signature": "sha256=" + hexmac("k", BODY)}),
    ({"secret": ["old", "k"]}, {"X-Signature": hexmac("k", BODY)}),
    ({"timestamp_header": "X-Timestamp"},
     {"X-Signature": hexmac("k", f"{TS}.".encode() + BODY), "X-Timestamp": TS}),
    # 4 minutes old, inside the default 5m window.
    ({"timestamp_header": "X-Timestamp"},
     {"X-Signature": hexmac("k", f"{int(NOW) - 240}.".encode() + BODY),
      "X-Timestamp": str(int(NOW) - 240)}),
]

HMAC_BAD = [
    ({}, {"X-Signature": hexmac("k", BODY + b"x")}, "signature mismatch"),
    ({}, {"X-Signature": hexmac("wrong", BODY)}, "signature mismatch"),
    ({}, {"X-Signature": b64mac("k", BODY)}, "signature mismatch"),  # wrong encoding
    ({}, {}, "missing header X-Signature"),
    ({"prefix": "sha256="}, {"X-Signature": hexmac("k", BODY)},
     "malformed signature header (it does not start with the hook's prefix 'sha256=')"),
    ({"timestamp_header": "X-Timestamp"}, {"X-Signature": hexmac("k", BODY)},
     "missing header X-Timestamp"),
    # The timestamp is signed: changing it breaks the signature.
    ({"timestamp_header": "X-Timestamp"},
     {"X-Signature": hexmac("k", f"{TS}.".encode() + BODY), "X-Timestamp": str(int(NOW) - 1)},
     "signature mismatch"),
    ({"timestamp_header": "X-Timestamp"},
     {"X-Signature": hexmac("k", b"1." + BODY), "X-Timestamp": "1"},
     "timestamp outside tolerance"),
    ({"timestamp_header": "X-Timestamp", "tolerance": "1m"},
     {"X-Signature": hexmac("k", f"{int(NOW) + 61}.".encode() + BODY),
      "X-Timestamp": str(int(NOW) + 61)},
     "timestamp outside tolerance"),
    ({"timestamp_header": "X-Timestamp"}, {"X-Signature": "00", "X-Timestamp": "nan"},
     "invalid timestamp: Unix seconds expected"),
    ({"timestamp_header": "X-Timestamp"}, {"X-Signature": "00", "X-Timestamp": "1796097455351"},
     "invalid timestamp: Unix seconds expected (this looks like milliseconds)"),
    ({"timestamp_header": "X-Timestamp"},
     {"X-Signature": "00", "X-Timestamp": "2026-12-01T03:57:35Z"},
     "invalid timestamp: Unix seconds expected (this looks like a date)"),
]


@pytest.mark.parametrize(("options", "headers"), HMAC_OK)
def test_hmac_accepts(options: dict[str, Any], headers: dict[str, str]) -> None:
    verifier, req = _hmac_case(options, headers)
    assert verifier.verify(req) == Verified()


@pytest.mark.parametrize(("options", "headers", "reason"), HMAC_BAD)
def test_hmac_rejects(options: dict[str, Any], headers: dict[str, str], reason: str) -> None:
    verifier, req = _hmac_case(options, headers)
    with pytest.raises(VerifyError) as info:
        verifier.verify(req)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    "options",
    [
        {"secret": "k"},  # header is required
        {"secret": "k", "header": "X", "algorithm": "md5"},
        {"secret": "k", "header": "X", "encoding": "base32"},
        {"secret": "k", "header": "X", "timestamp_header": "T", "tolerance": "soon"},
        {"secret": "k", "header": "X", "timestamp_header": "T", "tolerance": 0},
        # Timestamps count whole seconds: 100ms refused 9 of 10 genuine deliveries.
        {"secret": "k", "header": "X", "timestamp_header": "T", "tolerance": "100ms"},
        {"secret": "k", "header": "X", "timestamp_header": "T", "tolerance": 0.5},
        {"secret": "k", "header": "X", "prefix": 3},
        {"secret": "k", "header": "X", "prefix": 0},  # meant no prefix, silently
        {"secret": "k", "header": "X", "prefix": False},
        {"secret": "k", "header": "X", "extra": 1},
        # No request can carry it: every delivery was a 401 `missing header`.
        {"secret": "k", "header": "X Sig"},
        {"secret": "k", "header": "X", "timestamp_header": "T:S"},
        {"header": "X"},
    ],
)
def test_hmac_bad_options(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        make("hmac", **options)


@pytest.mark.parametrize("verifier", ["hmac", "grafana"])
def test_a_tolerance_without_a_timestamp_header_is_warned_about(verifier: str) -> None:
    """It would read as replay protection while nothing checks a timestamp."""
    made = make(verifier, secret="k", header="X", tolerance="1m")
    assert made.config_warnings == (crypto.WINDOW_WITHOUT_TIMESTAMP,)
    assert make(verifier, secret="k", header="X", timestamp_header="T",
                tolerance="1m").config_warnings == ()


def test_hmac_redacts_its_header() -> None:
    assert make("hmac", secret="k", header="X-Sig").secret_headers == ("X-Sig",)


@pytest.mark.parametrize(
    ("options", "headers", "ok"),
    [
        ({}, {"Authorization": "Bearer tok"}, True),
        ({}, {"Authorization": "bearer tok"}, True),
        ({}, {"Authorization": "tok"}, True),
        ({"secret": ["old", "tok"]}, {"Authorization": "Bearer tok"}, True),
        ({"header": "X-Token"}, {"X-Token": "tok"}, True),
        ({}, {"Authorization": "Bearer tok2"}, False),
        ({}, {"Authorization": "Basic tok"}, False),
        ({"header": "X-Token"}, {"Authorization": "Bearer tok"}, False),
    ],
)
def test_token(options: dict[str, Any], headers: dict[str, str], ok: bool) -> None:
    verifier = make("token", **{"secret": "tok", **options})
    if ok:
        assert verifier.verify(request(b"", headers)) == Verified()
    else:
        with pytest.raises(VerifyError):
            verifier.verify(request(b"", headers))


def test_token_reasons() -> None:
    verifier = make("token", secret="tok")
    with pytest.raises(VerifyError, match=r"^missing header Authorization$"):
        verifier.verify(request())
    with pytest.raises(VerifyError, match=r"^token mismatch$"):
        verifier.verify(request(b"", {"Authorization": "Bearer nope"}))


def test_token_from_the_query() -> None:
    """For senders that can only put a secret in the URL (`?key=...`): the parameter is the
    verifier's own, redacted like its header would be, and a header does not stand in for it."""
    verifier = make("token", secret=["old", "tok"], query="key")
    assert verifier.secret_query == ("key",) and verifier.secret_headers == ()
    assert verifier.challenge is None

    def sent(query: dict[str, str], headers: dict[str, str] | None = None) -> Any:
        return SignedRequest(headers=Headers((headers or {}).items()), body=b"", query=query, now=NOW)

    assert verifier.verify(sent({"key": "tok"})) == Verified()
    assert verifier.verify(sent({"key": "old"})) == Verified()
    for query, headers, reason in [({}, {"Authorization": "Bearer tok"}, "missing query parameter key"),
                                   ({"key": ""}, None, "empty query parameter key"),
                                   ({"key": "tok2"}, None, "token mismatch"),
                                   ({"KEY": "tok"}, None, "missing query parameter key")]:
        with pytest.raises(VerifyError, match=f"^{reason}$"):
            verifier.verify(sent(query, headers))
    with pytest.raises(ConfigError, match="give header or query, not both"):
        make("token", secret="tok", query="key", header="X-Token")
    with pytest.raises(ConfigError, match="'wait' is hookrunner's own parameter"):
        make("token", secret="tok", query="wait")


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (_basic("ci", "pw"), None),
        (_basic("ci", "old"), None),  # rotation
        (_basic("ci", "pw:with:colons"), "credentials mismatch"),
        (_basic("CI", "pw"), "credentials mismatch"),
        (_basic("ci", "nope"), "credentials mismatch"),
        ({"Authorization": "Bearer pw"}, "expected Basic authorization"),
        ({"Authorization": "Basic !!!"}, "malformed Basic authorization"),
        ({"Authorization": "Basic " + base64.b64encode(b"nocolon").decode()},
         "malformed Basic authorization"),
        ({}, "missing header Authorization"),
    ],
)
def test_basic(headers: dict[str, str], reason: str | None) -> None:
    verifier = make("basic", username="ci", password=["old", "pw"])
    if reason is None:
        assert verifier.verify(request(b"", headers)) == Verified()
    else:
        with pytest.raises(VerifyError) as info:
            verifier.verify(request(b"", headers))
        assert info.value.reason == reason


def test_basic_password_with_colon() -> None:
    verifier = make("basic", username="ci", password="a:b")
    assert verifier.verify(request(b"", _basic("ci", "a:b"))) == Verified()


@pytest.mark.parametrize(
    "options", [{"username": "ci"}, {"password": "x"}, {"username": "a:b", "password": "x"}]
)
def test_basic_bad_options(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        make("basic", **options)


def test_none_accepts_anything_and_takes_no_options() -> None:
    assert make("none").verify(request(b"x", {"A": "b"})) == Verified()
    assert make("none").secret_headers == ()
    with pytest.raises(ConfigError):
        make("none", secret="x")

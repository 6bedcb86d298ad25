"""github: X-Hub-Signature-256 over the raw body, legacy X-Hub-Signature when alone."""

from __future__ import annotations

import pytest

from hookrunner.errors import ConfigError, VerifyError
from hookrunner.verify.base import Verified

from .conftest import hexmac, make, request

# GitHub's documented test values: "Validating webhook deliveries", section "Testing the
# webhook payload validation":
# https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
DOC_SECRET = "It's a Secret to Everybody"
DOC_PAYLOAD = "Hello, World!"
DOC_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

BODY = b'{"ref":"refs/heads/main"}'
IDS = {"X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958", "X-GitHub-Event": "push"}


def test_documented_vector_verifies() -> None:
    verifier = make("github", secret=DOC_SECRET)
    result = verifier.verify(request(DOC_PAYLOAD, {"X-Hub-Signature-256": DOC_SIGNATURE}))
    assert result == Verified(delivery_id=None, event=None)


@pytest.mark.parametrize(
    ("headers", "body", "secret", "expected"),
    [
        ({"X-Hub-Signature-256": "sha256=" + hexmac("s", BODY), **IDS}, BODY, "s", None),
        # Upper-case hex and algorithm name are the same signature.
        ({"X-Hub-Signature-256": "SHA256=" + hexmac("s", BODY).upper(), **IDS}, BODY, "s", None),
        ({"X-Hub-Signature": "sha1=" + hexmac("s", BODY, "sha1"), **IDS}, BODY, "s", None),
        # Rotation: the second secret matches.
        ({"X-Hub-Signature-256": "sha256=" + hexmac("new", BODY), **IDS}, BODY,
         ["old", "new"], None),
        ({"X-Hub-Signature-256": "sha256=" + hexmac("s", BODY), **IDS}, BODY + b" ", "s",
         "signature mismatch"),
        ({"X-Hub-Signature-256": "sha256=" + hexmac("s", BODY), **IDS}, BODY, "t",
         "signature mismatch"),
        # The SHA-1 header is ignored once the SHA-256 one is there.
        ({"X-Hub-Signature-256": "sha256=00", "X-Hub-Signature": "sha1="
          + hexmac("s", BODY, "sha1")}, BODY, "s", "signature mismatch"),
        ({"X-Hub-Signature-256": "sha1=" + hexmac("s", BODY, "sha1")}, BODY, "s",
         "malformed signature header (expected sha256=<signature>)"),
        ({"X-Hub-Signature-256": hexmac("s", BODY)}, BODY, "s",
         "malformed signature header (expected sha256=<signature>)"),
        ({"X-Hub-Signature-256": "sha256=zz"}, BODY, "s", "signature mismatch"),
        (IDS, BODY, "s", "missing header X-Hub-Signature-256"),
        # Present but empty: the legacy header does not stand in (it is used only when the
        # SHA-256 one is absent).
        ({"X-Hub-Signature-256": " ", "X-Hub-Signature": "sha1=" + hexmac("s", BODY, "sha1")},
         BODY, "s", "empty header X-Hub-Signature-256"),
    ],
)
def test_table(
    headers: dict[str, str], body: bytes, secret: str | list[str], expected: str | None
) -> None:
    verifier = make("github", secret=secret)
    if expected is None:
        result = verifier.verify(request(body, headers))
        assert result == Verified("72d3162e-cc78-11e3-81ab-4c9367dc0958", "push")
    else:
        with pytest.raises(VerifyError) as info:
            verifier.verify(request(body, headers))
        assert info.value.reason == expected


def test_secret_headers() -> None:
    assert make("github", secret="s").secret_headers == ("X-Hub-Signature-256", "X-Hub-Signature")


def test_unknown_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown option 'token'"):
        make("github", secret="s", token="x")

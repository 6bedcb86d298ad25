"""slack: v0= signature over "v0:{ts}:{body}", a window both ways, event_id dedup."""

from __future__ import annotations

import json

import pytest

from hookrunner.errors import VerifyError
from hookrunner.verify.base import Verified

from .conftest import NOW, hexmac, make, request

# Slack's worked example, "Verifying requests from Slack"
# (https://api.slack.com/authentication/verifying-requests-from-slack).
DOC_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
DOC_TS = "1531420618"
DOC_BODY = (
    "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&"
    "channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&"
    "command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands"
    "%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&"
    "trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
DOC_SIG = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


def test_documented_example_verifies_and_has_no_delivery_id() -> None:
    verifier = make("slack", secret=DOC_SECRET)
    headers = {"X-Slack-Signature": DOC_SIG, "X-Slack-Request-Timestamp": DOC_TS}
    assert verifier.verify(request(DOC_BODY, headers, now=float(DOC_TS) + 60)) == Verified(
        None, "/webhook-collect")


EVENT = json.dumps(
    {"type": "event_callback", "event_id": "Ev08MFMKH6", "event": {"type": "app_mention"}}
).encode()


def signed(ts: int, secret: str = "s", body: bytes = EVENT) -> dict[str, str]:
    return {
        "X-Slack-Signature": "v0=" + hexmac(secret, f"v0:{ts}:".encode() + body),
        "X-Slack-Request-Timestamp": str(ts),
    }


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        (signed(int(NOW)), EVENT, None),
        (signed(int(NOW) - 300), EVENT, None),
        (signed(int(NOW)), EVENT + b" ", "signature mismatch"),
        (signed(int(NOW), secret="x"), EVENT, "signature mismatch"),
        (signed(int(NOW) - 301), EVENT, "timestamp outside tolerance"),
        (signed(int(NOW) + 301), EVENT, "timestamp outside tolerance"),
        ({**signed(int(NOW)), "X-Slack-Signature": "v1=00"}, EVENT, "malformed signature header"),
        ({"X-Slack-Signature": "v0=00"}, EVENT, "missing header X-Slack-Request-Timestamp"),
        ({"X-Slack-Request-Timestamp": "1"}, EVENT, "missing header X-Slack-Signature"),
    ],
)
def test_slack(headers: dict[str, str], body: bytes, reason: str | None) -> None:
    verifier = make("slack", secret=["old", "s"])
    if reason is None:
        assert verifier.verify(request(body, headers)) == Verified("Ev08MFMKH6", "app_mention")
    else:
        with pytest.raises(VerifyError) as info:
            verifier.verify(request(body, headers))
        assert info.value.reason == reason


def test_url_verification_is_answered_with_its_challenge() -> None:
    body = b'{"token":"t","type":"url_verification","challenge":"3eZbrw1aBm2rZgRN"}'
    result = make("slack", secret="s").verify(request(body, signed(int(NOW), body=body)))
    assert result == Verified(None, "url_verification", reply={"challenge": "3eZbrw1aBm2rZgRN"})
    with pytest.raises(VerifyError):  # only once signed: a forged handshake gets nothing
        make("slack", secret="s").verify(request(body, signed(int(NOW), secret="x", body=body)))


def test_a_slash_commands_ssl_check_is_a_handshake_once_signed() -> None:
    """Slack posts `ssl_check=1` to a slash command's URL to check its certificate: a 200,
    never a delivery that would run the hook's rules."""
    body = b"ssl_check=1&token=t"
    result = make("slack", secret="s").verify(request(body, signed(int(NOW), body=body)))
    assert result == Verified(None, "ssl_check", reply={})
    with pytest.raises(VerifyError):
        make("slack", secret="s").verify(request(body, signed(int(NOW), secret="x", body=body)))
    other = b"ssl_check=0&command=%2Fdeploy"
    assert make("slack", secret="s").verify(request(other, signed(int(NOW), body=other))) == \
        Verified(None, "/deploy")


def test_event_type_falls_back_to_top_level_type() -> None:
    body = b'{"type":"app_rate_limited","team_id":"T1"}'
    result = make("slack", secret="s").verify(request(body, signed(int(NOW), body=body)))
    assert result == Verified(None, "app_rate_limited")


@pytest.mark.parametrize(("body", "event"), [
    (b"payload=" + b'%7B%22type%22%3A%22block_actions%22%2C%22user%22%3A%7B%7D%7D', "block_actions"),
    (DOC_BODY.encode(), "/webhook-collect"),  # a slash command: its name
    (b"text=hi", None),
])
def test_form_bodies_name_their_interaction_type_or_command(body: bytes, event: str | None) -> None:
    result = make("slack", secret="s").verify(request(body, signed(int(NOW), body=body)))
    assert result == Verified(None, event)


@pytest.mark.parametrize(("content_type", "event"), [
    ("application/x-www-form-urlencoded; charset=iso-8859-1", "/deployé"),
    ("application/x-www-form-urlencoded", "/deploy\ufffd"),  # not UTF-8, and no label says
])
def test_a_commands_name_is_read_in_the_forms_charset_as_its_payload_is(
        content_type: str, event: str) -> None:
    from hookrunner.payload import parse_body

    body = b"command=%2Fdeploy%E9&text=x"
    headers = {**signed(int(NOW), body=body), "Content-Type": content_type}
    result = make("slack", secret="s").verify(request(body, headers))
    assert result.event == event
    if "charset" in content_type:
        assert parse_body(body, content_type)["command"] == event

"""shopify, pagerduty, linear, sentry and zendesk."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from hookrunner.errors import ConfigError, VerifyError
from hookrunner.verify.base import Verified

from .conftest import NOW, b64mac, hexmac, make, request

BODY = b'{"event":{"id":"01EV","event_type":"incident.triggered"},"type":"zen:event-type:x"}'

# go-pagerduty's webhookv3 test vector (github.com/PagerDuty/go-pagerduty,
# webhookv3/webhookv3_test.go): the secret is used as is, not base64-decoded.
PD_SECRET = "lDQHScfUeXUKaQRNF+8XIiDKZ7XX3itBAYzwU0TARw8lJqRnkKl2iB1anSb0Z+IK"
PD_BODY = (
    '{"event":{"id":"01BWDWL3NYY7LUFPZCC28QUCMK","event_type":"incident.priority_updated",'
    '"resource_type":"incident","occurred_at":"2021-04-26T17:36:27.458Z","agent":{"html_url":'
    '"https://acme.pagerduty.com/users/PLH1HKV","id":"PLH1HKV","self":'
    '"https://api.pagerduty.com/users/PLH1HKV","summary":"Tenex Engineer","type":'
    '"user_reference"},"client":null,"data":{"id":"PGR0VU2","type":"incident","self":'
    '"https://api.pagerduty.com/incidents/PGR0VU2","html_url":'
    '"https://acme.pagerduty.com/incidents/PGR0VU2","number":2,"status":"triggered","title":'
    '"A little bump in the road","service":{"html_url":'
    '"https://acme.pagerduty.com/services/PF9KMXH","id":"PF9KMXH","self":'
    '"https://api.pagerduty.com/services/PF9KMXH","summary":"API Service","type":'
    '"service_reference"},"assignees":[{"html_url":"https://acme.pagerduty.com/users/PTUXL6G",'
    '"id":"PTUXL6G","self":"https://api.pagerduty.com/users/PTUXL6G","summary":"User 123",'
    '"type":"user_reference"}],"escalation_policy":{"html_url":'
    '"https://acme.pagerduty.com/escalation_policies/PUS0KTE","id":"PUS0KTE","self":'
    '"https://api.pagerduty.com/escalation_policies/PUS0KTE","summary":"Default","type":'
    '"escalation_policy_reference"},"teams":[{"html_url":'
    '"https://acme.pagerduty.com/teams/PFCVPS0","id":"PFCVPS0","self":'
    '"https://api.pagerduty.com/teams/PFCVPS0","summary":"Engineering","type":'
    '"team_reference"}],"priority":{"html_url":'
    '"https://acme.pagerduty.com/account/incident_priorities","id":"PSO75BM","self":'
    '"https://api.pagerduty.com/priorities/PSO75BM","summary":"P1","type":'
    '"priority_reference"},"urgency":"high","conference_bridge":{"conference_number":1000,'
    '"conference_url":"https://example.com"},"resolve_reason":null}}}'
)
PD_SIGNATURE = "v1=0c0b9495b893a39e70d1fea2fe11fbe0a825f88b9f67846f6cc07dd2bc5476cd"
PD_WRONG = "v1=7020c8a7ec668a9b7012bc3dd82e483394b038f4230acc6785efbf2a7d8bcaf5"


def test_pagerduty_published_vector() -> None:
    verifier = make("pagerduty", secret=PD_SECRET)
    result = verifier.verify(request(PD_BODY, {"X-PagerDuty-Signature": PD_SIGNATURE}))
    assert result == Verified("01BWDWL3NYY7LUFPZCC28QUCMK", "incident.priority_updated")
    with pytest.raises(VerifyError, match="signature mismatch"):
        verifier.verify(request(PD_BODY, {"X-PagerDuty-Signature": PD_WRONG}))


def test_pagerduty_any_of_several_signatures() -> None:
    header = f"{PD_WRONG}, v2=abc,{PD_SIGNATURE}"
    verifier = make("pagerduty", secret=PD_SECRET)
    assert verifier.verify(request(PD_BODY, {"X-PagerDuty-Signature": header})).event == (
        "incident.priority_updated"
    )


def test_pagerduty_prefers_the_delivery_header() -> None:
    headers = {"X-PagerDuty-Signature": "v1=" + hexmac("s", BODY), "X-Webhook-Id": "w-1"}
    assert make("pagerduty", secret="s").verify(request(BODY, headers)) == Verified(
        "w-1", "incident.triggered"
    )


def test_pagerduty_without_v1_entries_is_malformed() -> None:
    with pytest.raises(VerifyError, match="malformed signature header"):
        make("pagerduty", secret="s").verify(
            request(BODY, {"X-PagerDuty-Signature": "v2=" + hexmac("s", BODY)})
        )


SIMPLE = [
    ("shopify", "X-Shopify-Hmac-Sha256", "base64",
     {"X-Shopify-Webhook-Id": "sh-1", "X-Shopify-Topic": "orders/create"},
     Verified("sh-1", "orders/create")),
    ("linear", "Linear-Signature", "hex",
     {"Linear-Delivery": "li-1", "Linear-Event": "Issue"}, Verified("li-1", "Issue")),
    ("sentry", "Sentry-Hook-Signature", "hex",
     {"Request-ID": "se-1", "Sentry-Hook-Resource": "issue"}, Verified("se-1", "issue")),
]


@pytest.mark.parametrize(("name", "header", "encoding", "ids", "expected"), SIMPLE)
def test_body_signers(
    name: str, header: str, encoding: str, ids: dict[str, str], expected: Verified
) -> None:
    def sign(secret: str, body: bytes) -> str:
        return b64mac(secret, body) if encoding == "base64" else hexmac(secret, body)

    verifier = make(name, secret=["old", "s"])
    assert verifier.verify(request(BODY, {header: sign("s", BODY), **ids})) == expected
    assert verifier.secret_headers == (header,)
    for headers, body in [
        ({header: sign("s", BODY)}, BODY + b"\n"),  # tampered body
        ({header: sign("wrong", BODY)}, BODY),  # wrong secret
        ({header: "not a signature"}, BODY),
    ]:
        with pytest.raises(VerifyError, match="signature mismatch"):
            verifier.verify(request(body, headers))
    with pytest.raises(VerifyError, match=f"missing header {header}"):
        verifier.verify(request(BODY, ids))


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _zendesk(ts: float, secret: str = "z", body: bytes = BODY) -> dict[str, str]:
    stamp = _iso(ts)
    return {
        "X-Zendesk-Webhook-Signature": b64mac(secret, stamp.encode() + body),
        "X-Zendesk-Webhook-Signature-Timestamp": stamp,
        "X-Zendesk-Webhook-Id": "01F1KRFQ6BG29CNWFR60NK5FNY",
        "X-Zendesk-Webhook-Invocation-Id": "8350205582",
    }


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        (_zendesk(NOW), BODY, None),
        (_zendesk(NOW - 299), BODY, None),
        (_zendesk(NOW, body=BODY), BODY + b"x", "signature mismatch"),
        (_zendesk(NOW, secret="other"), BODY, "signature mismatch"),
        (_zendesk(NOW - 301), BODY, "timestamp outside tolerance"),
        (_zendesk(NOW + 301), BODY, "timestamp outside tolerance"),
        ({**_zendesk(NOW), "X-Zendesk-Webhook-Signature-Timestamp": "1700000000"}, BODY,
         "invalid timestamp"),
        ({"X-Zendesk-Webhook-Signature": "x"}, BODY,
         "missing header X-Zendesk-Webhook-Signature-Timestamp"),
    ],
)
def test_zendesk(headers: dict[str, str], body: bytes, reason: str | None) -> None:
    verifier = make("zendesk", secret="z")
    if reason is None:
        # The invocation id, not the webhook id (the same on every request), is the delivery.
        assert verifier.verify(request(body, headers)) == Verified(
            "8350205582", "zen:event-type:x"
        )
    else:
        with pytest.raises(VerifyError) as info:
            verifier.verify(request(body, headers))
        assert info.value.reason == reason


def test_zendesk_tolerance_option() -> None:
    verifier = make("zendesk", secret="z", tolerance="1h")
    assert verifier.verify(request(BODY, _zendesk(NOW - 3000))).delivery_id == "8350205582"
    with pytest.raises(ConfigError):
        make("zendesk", secret="z", tolerance="-1")


def _linear_body(sent_ms: object) -> bytes:
    return json.dumps({"action": "create", "type": "Issue", "webhookTimestamp": sent_ms}).encode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (_linear_body(NOW * 1000), None),
        (_linear_body(str(int(NOW * 1000) - 59_000)), None),  # a string of digits too
        (_linear_body(NOW * 1000 - 61_000), "timestamp outside tolerance"),  # a replay
        (_linear_body(NOW * 1000 + 61_000), "timestamp outside tolerance"),
        (_linear_body(None), "missing timestamp field webhookTimestamp"),
        (b'{"type": "Issue", "webhookTimestamp": NaN}', "missing timestamp field"),
        (b'{"type": "Issue", "webhookTimestamp": Infinity}', "missing timestamp field"),
        (b'{"type": "Issue"}', "missing timestamp field"),
    ],
)
def test_linear_with_a_tolerance_refuses_a_body_sent_outside_it(body: bytes, reason: str | None) -> None:
    verifier = make("linear", secret="s", tolerance="1m")
    signed = request(body, {"Linear-Signature": hexmac("s", body), "Linear-Delivery": "li-2"})
    if reason is None:
        assert verifier.verify(signed) == Verified("li-2", None)
    else:
        with pytest.raises(VerifyError, match=reason):
            verifier.verify(signed)
    # Without one (the default), as before: Linear's body is checked by its signature only.
    if b"webhookTimestamp" in body and reason and "outside" in reason:
        assert make("linear", secret="s").verify(signed).delivery_id == "li-2"


def test_tolerance_is_an_option_only_of_senders_whose_body_says_when_it_was_sent() -> None:
    with pytest.raises(ConfigError, match="tolerance"):
        make("sentry", secret="s", tolerance="1m")
    with pytest.raises(ConfigError, match="tolerance"):
        make("linear", secret="s", tolerance="0s")

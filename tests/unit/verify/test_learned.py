"""`learned()` reads the delivery id and event type without checking: what dry runs use."""

from __future__ import annotations

import json

import pytest

from hookrunner.verify import VERIFIERS
from hookrunner.verify.base import Headers, SignedRequest


def _make(name: str) -> object:
    return VERIFIERS[name]({"secret": "s"} if name != "none" else {}, lambda v, key="secret": [b"s"])


@pytest.mark.parametrize(
    ("name", "headers", "body", "delivery_id", "event"),
    [
        ("github", {"X-GitHub-Event": "push", "X-GitHub-Delivery": "g-1"}, b"{}", "g-1", "push"),
        ("gitlab", {"X-Gitlab-Event": "Push Hook", "Idempotency-Key": "k"}, b"{}", "k", "Push Hook"),
        ("stripe", {}, json.dumps({"id": "evt_1", "type": "invoice.paid"}).encode(), "evt_1",
         "invoice.paid"),
        ("standard", {"webhook-id": "msg_1"}, b"{}", "msg_1", None),
        ("none", {"X-GitHub-Event": "push"}, b"{}", None, None),
    ],
)
def test_learned_reads_ids_without_a_signature(
    name: str, headers: dict[str, str], body: bytes, delivery_id: str | None, event: str | None
) -> None:
    verifier = _make(name)
    learned = verifier.learned(SignedRequest(headers=Headers(headers.items()), body=body))  # type: ignore[attr-defined]
    assert (learned.delivery_id, learned.event) == (delivery_id, event)


def test_every_verifier_can_describe_a_request_without_checking_it() -> None:
    for name in VERIFIERS:
        options = {"username": "u", "password": "p"} if name == "basic" else (
            {} if name == "none" else {"secret": "s"})
        if name == "hmac":
            options["header"] = "X-Sig"
        verifier = VERIFIERS[name](options, lambda v, key="secret": [b"s"])
        learned = verifier.learned(SignedRequest(headers=Headers(), body=b"not json"))
        assert learned.delivery_id is None or isinstance(learned.delivery_id, str), name


def test_ids_and_events_are_read_as_the_payload_is() -> None:
    """JSON labelled ISO-8859-1 that is not UTF-8 is decoded so (as the payload is): it lost
    its id and event type (a resend ran again). A header's UTF-8 bytes, which the server
    reads as latin-1, are its text (`dé-☃`, stored and logged garbled before)."""
    body = json.dumps({"id": "evt_ü", "type": "charge.succeeded", "n": "Jürgen"},
                      ensure_ascii=False).encode("latin-1")
    for label, learned_id in (("application/json; charset=iso-8859-1", "evt_ü"),
                              ("application/json", None)):  # not UTF-8, not labelled: not JSON
        learned = _make("stripe").learned(SignedRequest(  # type: ignore[attr-defined]
            headers=Headers([("Content-Type", label)]), body=body))
        assert learned.delivery_id == learned_id
    wire = "dé-☃".encode().decode("latin-1")  # what the HTTP server hands over
    learned = _make("github").learned(SignedRequest(  # type: ignore[attr-defined]
        headers=Headers([("X-GitHub-Delivery", wire), ("X-GitHub-Event", "pu\xe9sh")]), body=b"{}"))
    assert (learned.delivery_id, learned.event) == ("dé-☃", "pu\xe9sh")  # latin-1 text stays


@pytest.mark.parametrize(("name", "source"), [
    ("github", "its X-GitHub-Event header"),
    ("gitea", "its X-Gitea-Event or X-Forgejo-Event or X-Gogs-Event header"),
    ("stripe", "the body's `type`"),
    ("pagerduty", "the body's `event.event_type`"),
    ("jira", "the body's `webhookEvent`"),
    ("standard", None), ("twilio", None), ("none", None),
])
def test_a_verifier_says_where_it_reads_the_event_type(name: str, source: str | None) -> None:
    """For `test`'s note on a null `event`: it told a Standard Webhooks or Twilio hook, which
    has no event type, to add a header, and a Stripe one, whose type is in the body."""
    assert getattr(_make(name), "event_source", None) == source

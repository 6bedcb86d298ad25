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

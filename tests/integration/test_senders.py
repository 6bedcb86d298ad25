"""Every sender's scheme against one real `hookrunner serve`: each hook is configured with a
rotated secret list (old and new), and requests are signed by `tests.signers`, which computes
the HMACs itself, independently of `hookrunner.verify`.

valid -> 202 (with either secret), tampered or wrong secret -> 401, stale or future timestamp
-> 401, the same delivery again -> 200 duplicate; the log names each refusal's reason and
never a secret.
"""

from __future__ import annotations

import base64
import itertools
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from tests import signers
from tests.serverproc import Server

TWILIO_PUBLIC_URL = "https://hooks.example.com/hooks/twilio"
STALE = 600  # seconds: twice the default 5 minute tolerance
GENERIC_401 = {"error": "verification failed"}


@dataclass(frozen=True)
class Sender:
    hook: str
    verifier: str
    sign: signers.Signer
    options: str = ""  # extra YAML options of the verifier, one per line
    timestamped: bool = False
    delivery_id: bool = True  # the sender names its delivery, so a replay is a duplicate
    signs_body: bool = True  # False: a shared token; only the wrong secret can be tested
    form: bool = False
    whsec: bool = False  # Standard Webhooks secrets are `whsec_` + base64
    secret_key: str = "secret"


SENDERS = [
    Sender("github", "github", signers.github),
    Sender("github-sha1", "github", signers.github_sha1),
    Sender("gitlab", "gitlab", signers.gitlab, signs_body=False),
    Sender("gitea", "gitea", signers.gitea),
    Sender("forgejo", "gitea", signers.forgejo),
    Sender("gogs", "gitea", signers.gogs),
    Sender("bitbucket", "bitbucket", signers.bitbucket),
    Sender("jira", "jira", signers.jira),
    Sender("stripe", "stripe", signers.stripe, timestamped=True),
    Sender("slack", "slack", signers.slack, timestamped=True),
    Sender("standard", "standard", signers.standard, timestamped=True, whsec=True),
    Sender("svix", "standard", signers.svix, timestamped=True, whsec=True),
    Sender("shopify", "shopify", signers.shopify),
    Sender("pagerduty", "pagerduty", signers.pagerduty),
    Sender("linear", "linear", signers.linear),
    Sender("sentry", "sentry", signers.sentry),
    Sender("zendesk", "zendesk", signers.zendesk, timestamped=True),
    Sender("twilio", "twilio", signers.twilio(TWILIO_PUBLIC_URL), form=True,
           options=f"url: {TWILIO_PUBLIC_URL}"),
    Sender("grafana", "grafana", signers.grafana, delivery_id=False),
    Sender("grafana-blank", "grafana", signers.grafana_blank_header, delivery_id=False),
    Sender("grafana-ts", "grafana", signers.grafana_ts, timestamped=True, delivery_id=False,
           options="timestamp_header: X-Grafana-Alerting-Timestamp\ntolerance: 5m"),
    Sender("hmac", "hmac", signers.hmac_sha512_b64, delivery_id=False,
           options='header: X-Signature\nalgorithm: sha512\nencoding: base64\nprefix: "sha512="'),
    Sender("hmac-ts", "hmac", signers.hmac_ts, timestamped=True, delivery_id=False,
           options="header: X-Signature\ntimestamp_header: X-Timestamp"),
    Sender("token", "token", signers.token, delivery_id=False, signs_body=False),
    Sender("basic", "basic", signers.basic, delivery_id=False, signs_body=False,
           options="username: hookrunner", secret_key="password"),
]
BY_ID = {s.hook: s for s in SENDERS}
TIMESTAMPED = [s for s in SENDERS if s.timestamped]
WITH_DELIVERY_ID = [s for s in SENDERS if s.delivery_id]

_counter = itertools.count()


def _env_name(sender: Sender, which: str) -> str:
    return f"SECRET_{sender.hook.upper().replace('-', '_')}_{which}"


def _make_secret(sender: Sender) -> str:
    raw = secrets.token_bytes(24)
    if sender.whsec:
        return "whsec_" + base64.b64encode(raw).decode()
    return "s3cr3t-" + raw.hex()


# Fixed for the module: secrets per sender, old and new.
SECRETS = {s.hook: (_make_secret(s), _make_secret(s)) for s in SENDERS}


def _rules() -> str:
    lines = ["hooks:"]
    for s in SENDERS:
        old, new = _env_name(s, "OLD"), _env_name(s, "NEW")
        lines += [f"  {s.hook}:", "    verify:", f"      {s.verifier}:",
                  f"        {s.secret_key}: [{{env: {old}}}, {{env: {new}}}]"]
        lines += [f"        {opt}" for opt in s.options.splitlines()]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("senders")
    (root / "rules").mkdir()
    (root / "rules" / "senders.yaml").write_text(_rules())
    env = {_env_name(s, w): SECRETS[s.hook][i] for s in SENDERS for i, w in enumerate(("OLD", "NEW"))}
    srv = Server(root / "rules", root / "data", root, env=env).start()
    yield srv
    srv.stop()


def _body(sender: Sender, delivery: str) -> bytes:
    """A body carrying the delivery id where senders put it (Stripe `id`, Slack `event_id`)."""
    n = next(_counter)
    if sender.form:
        return urlencode({"MessageSid": delivery, "Body": f"hello {n}", "From": "+15550100"}).encode()
    return json.dumps({"id": delivery, "event_id": delivery, "type": "test.event", "seq": n,
                       "event": {"id": delivery, "event_type": "incident.triggered"}}).encode()


def _tamper(body: bytes) -> bytes:
    return body.replace(b"hello", b"HELLO") if b"hello" in body else body.replace(b'"seq": ', b'"seq": 1')


def _post(server: Server, sender: Sender, *, secret: str | None = None, ts: float | None = None,
          delivery: str | None = None, body: bytes | None = None,
          tamper: bool = False) -> httpx.Response:
    delivery = delivery or f"{sender.hook}-{secrets.token_hex(8)}"
    body = body if body is not None else _body(sender, delivery)
    stamp = int(time.time() if ts is None else ts)
    headers = sender.sign(secret or SECRETS[sender.hook][1], body, stamp, delivery)
    sent = _tamper(body) if tamper else body
    return httpx.post(f"{server.url}/hooks/{sender.hook}", content=sent, headers=headers, timeout=30)


def _ids(senders: list[Sender]) -> list[str]:
    return [s.hook for s in senders]


@pytest.mark.parametrize("sender", SENDERS, ids=_ids(SENDERS))
def test_a_request_signed_with_either_rotated_secret_is_accepted(server: Server, sender: Sender) -> None:
    old, new = SECRETS[sender.hook]
    for secret in (old, new):
        r = _post(server, sender, secret=secret)
        assert r.status_code == 202, (sender.hook, r.text)
        assert r.json()["delivery_id"].startswith("dlv")


@pytest.mark.parametrize("sender", SENDERS, ids=_ids(SENDERS))
def test_a_tampered_body_or_wrong_secret_is_refused_generically(server: Server, sender: Sender) -> None:
    wrong = _make_secret(sender)
    r = _post(server, sender, secret=wrong)
    assert r.status_code == 401 and r.json() == GENERIC_401
    if sender.signs_body:
        r = _post(server, sender, tamper=True)
        assert r.status_code == 401 and r.json() == GENERIC_401


@pytest.mark.parametrize("sender", SENDERS, ids=_ids(SENDERS))
def test_a_request_without_any_signature_is_refused(server: Server, sender: Sender) -> None:
    r = httpx.post(f"{server.url}/hooks/{sender.hook}", content=_body(sender, "x"),
                   headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 401 and r.json() == GENERIC_401


@pytest.mark.parametrize("sender", TIMESTAMPED, ids=_ids(TIMESTAMPED))
def test_a_stale_or_future_timestamp_is_refused(server: Server, sender: Sender) -> None:
    now = time.time()
    assert _post(server, sender, ts=now - STALE).status_code == 401
    assert _post(server, sender, ts=now + STALE).status_code == 401
    # Inside the window on either side it passes: the window is not off by a sign.
    assert _post(server, sender, ts=now - 60).status_code == 202
    assert _post(server, sender, ts=now + 60).status_code == 202


@pytest.mark.parametrize("sender", WITH_DELIVERY_ID, ids=_ids(WITH_DELIVERY_ID))
def test_a_replayed_delivery_is_answered_as_a_duplicate(server: Server, sender: Sender) -> None:
    delivery = f"{sender.hook}-replay-{secrets.token_hex(6)}"
    body = _body(sender, delivery)
    first = _post(server, sender, delivery=delivery, body=body)
    assert first.status_code == 202, first.text
    # The very same request again (an attacker replaying a captured one inside the window),
    # and a fresh signature by the old secret over the same delivery (a sender's retry).
    again = _post(server, sender, delivery=delivery, body=body)
    retry = _post(server, sender, delivery=delivery, body=body, secret=SECRETS[sender.hook][0])
    for r in (again, retry):
        assert r.status_code == 200, r.text
        assert r.json() == {"duplicate": True, "delivery_id": first.json()["delivery_id"],
                            "runs": first.json()["runs"],
                            "status_url": f"/api/deliveries/{first.json()['delivery_id']}"}


def test_a_forged_request_never_marks_a_delivery_id_as_seen(server: Server) -> None:
    sender = BY_ID["github"]
    delivery = f"forged-{secrets.token_hex(6)}"
    assert _post(server, sender, delivery=delivery, secret="forged").status_code == 401
    assert _post(server, sender, delivery=delivery).status_code == 202


def test_twilio_json_body_signs_the_url_with_its_body_hash(tmp_path: Path, server: Server) -> None:
    """JSON bodies: Twilio adds bodySHA256 to the query and signs the URL; the body hash binds
    the body, so a changed body fails even though the URL signature holds."""
    body = json.dumps({"CallSid": "CA1", "seq": next(_counter)}).encode()
    url = signers.twilio_json_url(TWILIO_PUBLIC_URL, body)
    headers = {"Content-Type": "application/json",
               "X-Twilio-Signature": signers.twilio_signature(SECRETS["twilio"][0], url, b"")}
    local = f"{server.url}/hooks/twilio?{url.partition('?')[2]}"
    assert httpx.post(local, content=body, headers=headers, timeout=30).status_code == 202
    tampered = body.replace(b"CA1", b"CA2")
    assert httpx.post(local, content=tampered, headers=headers, timeout=30).status_code == 401


def test_refusals_are_logged_with_their_reason_and_no_secret_appears(server: Server) -> None:
    _post(server, BY_ID["github"], secret="not-the-secret")
    _post(server, BY_ID["stripe"], ts=time.time() - STALE)
    httpx.post(f"{server.url}/hooks/slack", content=b"{}", timeout=30)
    log = server.output()
    assert "reason=\"signature mismatch\"" in log
    assert "reason=\"timestamp outside tolerance\"" in log
    assert "reason=\"missing header X-Slack-Signature\"" in log
    for old, new in SECRETS.values():
        for secret in (old, new):
            assert secret not in log
            assert secret.removeprefix("whsec_") not in log


def test_no_secret_or_token_is_stored_with_a_delivery(server: Server) -> None:
    """Token and Basic senders carry the secret itself in a header: it is redacted before the
    delivery is journaled, so neither the API nor the database files hold it."""
    for hook in ("gitlab", "token", "basic"):
        r = _post(server, BY_ID[hook])
        assert r.status_code == 202
        with server.admin() as c:
            doc = c.get(r.json()["status_url"]).json()
        assert SECRETS[hook][1] not in json.dumps(doc)
        assert "[redacted]" in json.dumps(doc["headers"])
    basic_header = signers.basic(SECRETS["basic"][1], b"", 0, "")["Authorization"].encode()
    for path in server.data.iterdir():
        if path.is_file():
            raw = path.read_bytes()
            assert basic_header not in raw, path
            for old, new in SECRETS.values():
                assert old.encode() not in raw and new.encode() not in raw, path


def test_slacks_url_verification_is_answered_with_its_challenge_and_not_journaled(
        server: Server) -> None:
    """Slack sends `url_verification` when a Request URL is set and sends nothing else until
    it gets the challenge back; a forged one gets a 401, as any forged request."""
    sender = BY_ID["slack"]
    body = json.dumps({"token": "x", "challenge": "3eZbrw1aBm2rZgRN",
                       "type": "url_verification"}).encode()
    forged = _post(server, sender, body=body, secret="forged")
    assert forged.status_code == 401 and "3eZbrw1aBm2rZgRN" not in forged.text
    with server.admin() as c:
        before = c.get("/api/deliveries?hook=slack&limit=1000").json()
    r = _post(server, sender, body=body)
    assert r.status_code == 200 and r.json() == {"challenge": "3eZbrw1aBm2rZgRN"}
    assert r.headers["content-type"].startswith("application/json")
    with server.admin() as c:
        assert c.get("/api/deliveries?hook=slack&limit=1000").json() == before
    assert "delivery.handshake" in server.output()


def test_a_slash_commands_ssl_check_is_answered_and_not_journaled(server: Server) -> None:
    sender = BY_ID["slack"]
    body = b"ssl_check=1&token=x"
    with server.admin() as c:
        before = c.get("/api/deliveries?hook=slack&limit=1000").json()
    assert _post(server, sender, body=body, secret="forged").status_code == 401
    r = _post(server, sender, body=body)
    assert r.status_code == 200 and r.json() == {}
    with server.admin() as c:
        assert c.get("/api/deliveries?hook=slack&limit=1000").json() == before


def test_a_sender_id_or_event_no_store_can_hold_is_kept_not_a_500(server: Server) -> None:
    """Stripe's id and type are read from the body by the verifier: sent as a form (as
    `curl -d` does), no JSON check saw their `\\ud800` or `\\u0000`, and the delivery was a
    500. The id is kept as a digest (dedup still holds), the event with U+FFFD."""
    sender = BY_ID["stripe"]
    body = b'{"id": "evt_\\ud800", "type": "charge.\\u0000x", "seq": 1}'
    headers = {**sender.sign(SECRETS["stripe"][1], body, int(time.time()), "-"),
               "Content-Type": "application/x-www-form-urlencoded"}
    first = httpx.post(f"{server.url}/hooks/stripe", content=body, headers=headers, timeout=30)
    assert first.status_code == 202, first.text
    with server.admin() as c:
        doc = c.get(f"/api/deliveries/{first.json()['delivery_id']}").json()
    assert doc["dedup_key"].startswith("sha256:") and doc["event"] == "charge.\ufffdx", doc
    again = httpx.post(f"{server.url}/hooks/stripe", content=body, headers=headers, timeout=30)
    assert again.status_code == 200 and again.json()["duplicate"], again.text

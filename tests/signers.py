"""Sign a request the way each sender does, written from the senders' documentation.

Independent of `hookrunner.verify`: every HMAC is computed here with `hmac`/`hashlib`, so a
bug in the production verifiers cannot hide behind the same bug in the test's signer.
Each signer takes (secret, body, timestamp, delivery id) and returns the headers to send.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import parse_qsl

Signer = Callable[[str, bytes, int, str], dict[str, str]]


def _hex(secret: bytes, message: bytes, digest: str = "sha256") -> str:
    return hmac.new(secret, message, digest).hexdigest()


def _b64(secret: bytes, message: bytes, digest: str = "sha256") -> str:
    return base64.b64encode(hmac.new(secret, message, digest).digest()).decode()


JSON = {"Content-Type": "application/json"}


def github(secret: str, body: bytes, ts: int, delivery: str) -> dict[str, str]:
    return {**JSON, "X-GitHub-Event": "push", "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": "sha256=" + _hex(secret.encode(), body)}


def github_sha1(secret: str, body: bytes, ts: int, delivery: str) -> dict[str, str]:
    """GitHub Enterprise before 3.x: only the legacy SHA-1 header."""
    return {**JSON, "X-GitHub-Event": "push", "X-GitHub-Delivery": delivery,
            "X-Hub-Signature": "sha1=" + _hex(secret.encode(), body, "sha1")}


def gitlab(secret: str, body: bytes, ts: int, delivery: str) -> dict[str, str]:
    return {**JSON, "X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": secret,
            "Idempotency-Key": delivery}


def _forge(name: str) -> Signer:
    def sign(secret: str, body: bytes, ts: int, delivery: str) -> dict[str, str]:
        return {**JSON, f"X-{name}-Event": "push", f"X-{name}-Delivery": delivery,
                f"X-{name}-Signature": _hex(secret.encode(), body)}

    return sign


gitea, forgejo, gogs = _forge("Gitea"), _forge("Forgejo"), _forge("Gogs")


def bitbucket(secret: str, body: bytes, ts: int, delivery: str) -> dict[str, str]:
    return {**JSON, "X-Event-Key": "repo:push", "X-Request-UUID": delivery,
            "X-Hub-Signature": "sha256=" + _hex(secret.encode(), body)}


def jira(secret: str, body: bytes, ts: int, delivery: str) -> dict[str, str]:
    return {**JSON, "X-Atlassian-Webhook-Identifier": delivery,
            "X-Hub-Signature": "sha256=" + _hex(secret.encode(), body)}


def stripe(secret: str, body: bytes, ts: int, delivery: str) -> dict[str, str]:
    """The delivery id is the event's `id` in the body (see `stripe_body`)."""
    sig = _hex(secret.encode(), f"{ts}.".encode() + body)
    return {**JSON, "Stripe-Signature": f"t={ts},v1={sig},v0=ignored"}


def slack(secret: str, body: bytes, ts: int, delivery: str) -> dict[str, str]:
    sig = _hex(secret.encode(), f"v0:{ts}:".encode() + body)
    return {**JSON, "X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": "v0=" + sig}


def _standard(prefix: str) -> Signer:
    def sign(secret: str, body: bytes, ts: int, delivery: str) -> dict[str, str]:
        key = base64.b64decode(secret.removeprefix("whsec_"))
        sig = _b64(key, f"{delivery}.{ts}.".encode() + body)
        # A list, as senders send while rotating: an unknown version and a wrong v1 first.
        return {**JSON, f"{prefix}-id": delivery, f"{prefix}-timestamp": str(ts),
                f"{prefix}-signature": f"v1a,AAAA v1,{_b64(b'other', body)} v1,{sig}"}

    return sign


standard, svix = _standard("webhook"), _standard("svix")


def shopify(secret: str, body: bytes, ts: int, delivery: str) -> dict[str, str]:
    return {**JSON, "X-Shopify-Topic": "orders/create", "X-Shopify-Webhook-Id": delivery,
            "X-Shopify-Hmac-Sha256": _b64(secret.encode(), body)}


def pagerduty(secret: str, body: bytes, ts: int, delivery: str) -> dict[str, str]:
    other = _hex(b"a-rotated-out-secret", body)
    return {**JSON, "X-Webhook-Id": delivery,
            "X-PagerDuty-Signature": f"v1={other},v1={_hex(secret.encode(), body)}"}


def linear(secret: str, body: bytes, ts: int, delivery: str) -> dict[str, str]:
    return {**JSON, "Linear-Event": "Issue", "Linear-Delivery": delivery,
            "Linear-Signature": _hex(secret.encode(), body)}


def sentry(secret: str, body: bytes, ts: int, delivery: str) -> dict[str, str]:
    return {**JSON, "Sentry-Hook-Resource": "issue", "Request-ID": delivery,
            "Sentry-Hook-Signature": _hex(secret.encode(), body)}


def zendesk(secret: str, body: bytes, ts: int, delivery: str) -> dict[str, str]:
    stamp = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {**JSON, "X-Zendesk-Webhook-Id": "same-for-every-request",
            "X-Zendesk-Webhook-Invocation-Id": delivery,
            "X-Zendesk-Webhook-Signature-Timestamp": stamp,
            "X-Zendesk-Webhook-Signature": _b64(secret.encode(), stamp.encode() + body)}


def twilio_signature(secret: str, url: str, body: bytes) -> str:
    """Twilio's scheme: the URL, then every form key+value with keys sorted, HMAC-SHA1."""
    params = sorted(parse_qsl(body.decode(), keep_blank_values=True))
    data = url + "".join(k + v for k, v in params)
    return _b64(secret.encode(), data.encode(), "sha1")


def twilio_json_url(url: str, body: bytes) -> str:
    """For JSON bodies Twilio puts the body's SHA-256 in the query and signs the URL alone."""
    return f"{url}?bodySHA256={hashlib.sha256(body).hexdigest()}"


def grafana(secret: str, body: bytes, ts: int, delivery: str) -> dict[str, str]:
    return {**JSON, "X-Grafana-Alerting-Signature": _hex(secret.encode(), body)}


def grafana_blank_header(secret: str, body: bytes, ts: int, delivery: str) -> dict[str, str]:
    """A contact point whose "Header" field was left blank: grafana/alerting's own default."""
    return {**JSON, "X-Grafana-Alert-Signature": _hex(secret.encode(), body)}


def grafana_ts(secret: str, body: bytes, ts: int, delivery: str) -> dict[str, str]:
    return {**JSON, "X-Grafana-Alerting-Timestamp": str(ts),
            "X-Grafana-Alerting-Signature": _hex(secret.encode(), f"{ts}:".encode() + body)}


def hmac_sha512_b64(secret: str, body: bytes, ts: int, delivery: str) -> dict[str, str]:
    """The generic `hmac` verifier as configured in the tests: sha512, base64, a prefix."""
    return {**JSON, "X-Signature": "sha512=" + _b64(secret.encode(), body, "sha512")}


def hmac_ts(secret: str, body: bytes, ts: int, delivery: str) -> dict[str, str]:
    return {**JSON, "X-Timestamp": str(ts),
            "X-Signature": _hex(secret.encode(), f"{ts}.".encode() + body)}


def token(secret: str, body: bytes, ts: int, delivery: str) -> dict[str, str]:
    return {**JSON, "Authorization": f"Bearer {secret}"}


def basic(secret: str, body: bytes, ts: int, delivery: str) -> dict[str, str]:
    creds = base64.b64encode(f"hookrunner:{secret}".encode()).decode()
    return {**JSON, "Authorization": f"Basic {creds}"}


def twilio(public_url: str) -> Signer:
    """Twilio signs the URL it posts to (configured as the hook's `url`) and the form fields."""

    def sign(secret: str, body: bytes, ts: int, delivery: str) -> dict[str, str]:
        return {"Content-Type": "application/x-www-form-urlencoded",
                "I-Twilio-Idempotency-Token": delivery,
                "X-Twilio-Signature": twilio_signature(secret, public_url, body)}

    return sign

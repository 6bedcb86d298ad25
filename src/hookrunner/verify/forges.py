"""Code forges: GitLab (shared token), Gitea/Forgejo/Gogs, Bitbucket and Jira (body HMAC)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from hookrunner.errors import VerifyError
from hookrunner.verify import crypto
from hookrunner.verify.base import SecretSource, SignedRequest, Verified, check_options, register
from hookrunner.verify.bodysig import BodySignature, register_body_signature

GITLAB_TOKEN = "X-Gitlab-Token"


@dataclass(frozen=True)
class GitLabVerifier:
    """GitLab sends the configured secret token as is; there is no signature over the body."""

    secrets: tuple[bytes, ...]
    secret_headers: tuple[str, ...] = (GITLAB_TOKEN,)
    event_source: ClassVar[str] = "its X-Gitlab-Event header"  # (for `test`'s note)

    def verify(self, request: SignedRequest) -> Verified:
        token = crypto.require_header(request.headers, GITLAB_TOKEN)
        if not crypto.constant_time_in(crypto.header_bytes(token), self.secrets):
            raise VerifyError("token mismatch")
        return self.learned(request)

    def learned(self, request: SignedRequest) -> Verified:
        """The delivery id and event type, read without checking (dry runs use it too)."""
        # Idempotency-Key is the same across retries of one delivery (GitLab 17.4+). The older
        # X-Gitlab-Event-UUID is shared by recursive webhooks, so it is not a delivery id.
        return Verified(
            delivery_id=crypto.optional_header(request.headers, "Idempotency-Key"),
            event=crypto.optional_header(request.headers, "X-Gitlab-Event"),
        )


@register("gitlab")
def gitlab(options: Mapping[str, Any], secrets: SecretSource) -> GitLabVerifier:
    check_options(options, ("secret",), required=("secret",))
    return GitLabVerifier(tuple(crypto.option_secrets(options, secrets)))


# Gitea and its forks sign the same way under their own names; Gitea may also send an
# Authorization header configured on the webhook.
register_body_signature(
    "gitea",
    BodySignature(
        signature_headers=("X-Gitea-Signature", "X-Forgejo-Signature", "X-Gogs-Signature"),
        id_headers=("X-Gitea-Delivery", "X-Forgejo-Delivery", "X-Gogs-Delivery"),
        event_headers=("X-Gitea-Event", "X-Forgejo-Event", "X-Gogs-Event"),
        other_secret_headers=("Authorization",),
        signs_form_payload=True,
    ),
)

# Bitbucket Cloud names the delivery X-Request-UUID; Bitbucket Data Center X-Request-Id.
register_body_signature(
    "bitbucket",
    BodySignature(
        signature_headers=("X-Hub-Signature",),
        prefix="sha256=",
        id_headers=("X-Request-UUID", "X-Request-Id"),
        event_headers=("X-Event-Key",),
    ),
)

# Jira has no event header: the type is the body's `webhookEvent` (e.g. jira:issue_created).
register_body_signature(
    "jira",
    BodySignature(
        signature_headers=("X-Hub-Signature",),
        prefix="sha256=",
        id_headers=("X-Atlassian-Webhook-Identifier",),
        event_field=("webhookEvent",),
    ),
)

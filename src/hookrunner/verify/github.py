"""GitHub: HMAC of the raw body in X-Hub-Signature-256 (`sha256=<hex>`).

The legacy SHA-1 header X-Hub-Signature is checked only when the SHA-256 one is absent (GitHub
Enterprise Server before 3.x, and some GitHub-compatible senders).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from hookrunner.verify import crypto
from hookrunner.verify.base import SecretSource, SignedRequest, Verified, check_options, register

SIGNATURE_256 = "X-Hub-Signature-256"
SIGNATURE_1 = "X-Hub-Signature"


@dataclass(frozen=True)
class GitHubVerifier:
    secrets: tuple[bytes, ...]
    secret_headers: tuple[str, ...] = (SIGNATURE_256, SIGNATURE_1)
    event_source: ClassVar[str] = "its X-GitHub-Event header"  # (for `test`'s note)

    def verify(self, request: SignedRequest) -> Verified:
        name, value = crypto.first_header(request.headers, (SIGNATURE_256, SIGNATURE_1))
        algorithm, signature = crypto.split_prefixed(
            value, ("sha256",) if name == SIGNATURE_256 else ("sha1",)
        )
        crypto.require_signature(self.secrets, request.body, [signature], algorithm=algorithm)
        return self.learned(request)

    def learned(self, request: SignedRequest) -> Verified:
        """The delivery id and event type, read without checking (dry runs use it too)."""
        return Verified(
            delivery_id=crypto.optional_header(request.headers, "X-GitHub-Delivery"),
            event=crypto.optional_header(request.headers, "X-GitHub-Event"),
        )


@register("github")
def github(options: Mapping[str, Any], secrets: SecretSource) -> GitHubVerifier:
    check_options(options, ("secret",), required=("secret",))
    return GitHubVerifier(tuple(crypto.option_secrets(options, secrets)))

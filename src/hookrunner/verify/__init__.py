"""Request verifiers by sender. Importing this package fills `VERIFIERS`."""

from __future__ import annotations

# Imported for their side effect: each module registers its verifiers.
from hookrunner.verify import (  # noqa: F401
    forges,
    generic,
    github,
    grafana,
    saas,
    slack,
    standard,
    stripe,
    twilio,
)
from hookrunner.verify.base import VERIFIERS, Verified, Verifier, register
from hookrunner.verify.secrets import is_literal, resolve_secret, secret_files

__all__ = ["VERIFIERS", "Verified", "Verifier", "is_literal", "register", "resolve_secret",
           "secret_files"]

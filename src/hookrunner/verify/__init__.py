"""Request verifiers by sender. Importing this package fills `VERIFIERS`."""

from __future__ import annotations

from hookrunner.verify import generic, github  # noqa: F401  (registers the verifiers)
from hookrunner.verify.base import VERIFIERS, Verified, Verifier, register
from hookrunner.verify.secrets import is_literal, resolve_secret

__all__ = ["VERIFIERS", "Verified", "Verifier", "is_literal", "register", "resolve_secret"]

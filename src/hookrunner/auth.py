"""The admin token: from HOOKRUNNER_ADMIN_TOKEN, or generated once into <data>/admin-token.

Generating (rather than leaving the API open, or refusing to start) keeps `make run` one
command; the token is written to a 0600 file and never logged.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
from pathlib import Path

from hookrunner.private import private_dir

TOKEN_FILE = "admin-token"
COOKIE = "hookrunner_session"


def admin_token(configured: str, data_dir: Path) -> tuple[str, Path | None]:
    """The token, and the file it was read from or written to (None when configured)."""
    # A trailing newline or space (a Kubernetes Secret, an EnvironmentFile) can never arrive
    # in an Authorization header (HTTP trims it): kept, it locked everyone out, unlogged.
    path = data_dir / TOKEN_FILE
    if configured.strip():
        return configured.strip(), None
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token, path
        path.unlink()  # empty (e.g. a crash between create and write): never a valid token
    private_dir(data_dir)
    token = secrets.token_urlsafe(24)
    # Written whole aside, then linked in place (which fails if one is there): a server
    # starting at the same moment never reads this file empty (and removes it as such).
    aside = path.with_name(f".{TOKEN_FILE}.{os.getpid()}")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        os.link(aside, path)
    except FileExistsError:  # the other one's came first: both use it
        token = path.read_text().strip()
    finally:  # a full disk too: leave no half-written file behind
        aside.unlink(missing_ok=True)
    return token, path


def forget_stale_token(configured: str, data_dir: Path) -> None:
    """A token generated before one was configured: `cat`-ing the file would hand out a token
    the server refuses. Removed by the server that holds the data dir, never by one about to
    be refused (it would remove the running server's file)."""
    path = data_dir / TOKEN_FILE
    if configured.strip():
        with contextlib.suppress(OSError):
            if path.read_text().strip() != configured.strip():
                path.unlink()


def bearer_ok(authorization: str | None, token: str) -> bool:
    if not token or not authorization:
        return False
    scheme, _, credentials = authorization.partition(" ")
    # The scheme is case-insensitive (RFC 7235 2.1): `bearer tok` is as good as `Bearer tok`.
    if scheme.lower() != "bearer":
        return False
    # No .strip(): it would remove characters (e.g. U+00A0) that HTTP itself keeps.
    given = credentials.strip(" \t")
    try:
        # The header's own bytes (Starlette decoded them as latin-1): a client sends a
        # non-ASCII token as UTF-8, as the token is compared.
        raw = given.encode("latin-1")
    except UnicodeEncodeError:
        raw = given.encode()
    return hmac.compare_digest(raw, token.encode())

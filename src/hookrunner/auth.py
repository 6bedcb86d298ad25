"""The admin token: from HOOKRUNNER_ADMIN_TOKEN, or generated once into <data>/admin-token.

Generating (rather than leaving the API open, or refusing to start) keeps `make run` one
command; the token is written to a 0600 file and never logged.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import os
import secrets
import tempfile
import time
from pathlib import Path

from hookrunner.private import private_dir

TOKEN_FILE = "admin-token"
ASIDE_PREFIX = f".{TOKEN_FILE}."  # a token being written (admin_token); a crash may leave one
ASIDE_STALE = 60.0  # seconds after which such a file is a crash's leftover
NO_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV)  # vfat, some FUSE/SMB
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
    # Written whole aside (a name of its own, 0600), then linked in place, which fails if one
    # is there: a server starting at the same moment never reads this file empty (and
    # removes it as such). Where the file system has no hard links, created in place.
    fd, aside = tempfile.mkstemp(prefix=ASIDE_PREFIX, dir=data_dir)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        os.link(aside, path)
    except FileExistsError:  # the other one's came first: both use it
        token = path.read_text().strip()
    except OSError as exc:
        if exc.errno not in NO_LINKS:
            raise
        token = _write_in_place(path, token)
    finally:  # a full disk too: leave no half-written file behind
        with contextlib.suppress(FileNotFoundError):
            os.unlink(aside)
    return token, path


def _write_in_place(path: Path, token: str) -> str:
    """Without hard links (not race-free: one starting at the same moment may read it empty)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # the other one's came first: both use it
        return path.read_text().strip()
    try:
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
    except OSError:
        path.unlink(missing_ok=True)
        raise
    return token


def forget_stale_token(configured: str, data_dir: Path) -> None:
    """A token generated before one was configured: `cat`-ing the file would hand out a token
    the server refuses. Removed by the server that holds the data dir, never by one about to
    be refused (it would remove the running server's file)."""
    path = data_dir / TOKEN_FILE
    for left in data_dir.glob(ASIDE_PREFIX + "*"):  # a crash while one was written, a while
        with contextlib.suppress(OSError):           # ago (not one being written now)
            if time.time() - left.stat().st_mtime > ASIDE_STALE:
                left.unlink()
    if configured.strip():
        with contextlib.suppress(OSError):
            if path.read_text().strip() != configured.strip():
                path.unlink()


def bearer_given(authorization: str | None) -> bool:
    """Whether the header holds a bearer token, a try at the admin token. Another scheme is
    none: a proxy's own Basic auth (nginx's auth_basic forwards it) is no wrong token."""
    return authorization is not None and authorization.partition(" ")[0].lower() == "bearer"


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

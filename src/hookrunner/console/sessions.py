"""Console sessions: a random id in an HttpOnly cookie, kept in this process's memory.

In memory on purpose: nothing about a session is worth persisting, logging out really ends
it, and a restart simply asks for the token again. With several nodes behind one address,
each node has its own sessions (use sticky routing, or log in per node).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from hookrunner.auth import COOKIE

IDLE_TIMEOUT = 12 * 3600.0  # seconds without a request before a session ends
MAX_AGE = 7 * 24 * 3600.0  # a session ends this long after login, used or not
MAX_SESSIONS = 1000  # the oldest are dropped past this, so logins cannot exhaust memory


def cookie_ids(headers: Iterable[str]) -> list[str]:
    """Every value of the session cookie in these `Cookie` headers, in order. A browser sends
    two where another app on the host (or this one, served at the root before) set one with
    a wider `Path`; a parser keeping one value per name kept that one, and the login looped."""
    return [value.strip() for header in headers for chunk in header.split(";")
            for name, sep, value in [chunk.partition("=")] if sep and name.strip() == COOKIE]


@dataclass
class Session:
    id: str
    csrf: str
    created: float
    seen: float


class Sessions:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._by_id: dict[str, Session] = {}

    def create(self) -> Session:
        now = self._clock()
        self._expire(now)
        while len(self._by_id) >= MAX_SESSIONS:
            del self._by_id[next(iter(self._by_id))]  # dicts keep insertion order: oldest first
        s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now, now)
        self._by_id[s.id] = s
        return s

    def get(self, session_id: str | None) -> Session | None:
        """The live session with that id (touching it), or None."""
        if not session_id:
            return None
        s = self._by_id.get(session_id)
        now = self._clock()
        if s is None or not self._alive(s, now):
            self._by_id.pop(session_id, None)
            return None
        s.seen = now
        return s

    def live(self, ids: Iterable[str]) -> Session | None:
        """The first of these ids that is a live session (touching it), or None."""
        return next((s for i in ids if (s := self.get(i)) is not None), None)

    def csrf_ok(self, session_id: str | None, token: str | None) -> bool:
        s = self.get(session_id)
        return s is not None and bool(token) and hmac.compare_digest(s.csrf.encode(), (token or "").encode())

    def end(self, session_id: str | None) -> None:
        if session_id:
            self._by_id.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._by_id)

    def _alive(self, s: Session, now: float) -> bool:
        return now - s.seen < IDLE_TIMEOUT and now - s.created < MAX_AGE

    def _expire(self, now: float) -> None:
        for sid in [sid for sid, s in self._by_id.items() if not self._alive(s, now)]:
            del self._by_id[sid]

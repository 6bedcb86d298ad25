"""What every console handler needs: the gateway, the session, the shared page context."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request

from hookrunner.console.present import ago
from hookrunner.console.sessions import Session, Sessions, cookie_ids
from hookrunner.gateway import Gateway


def gateway(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


def prefix(request: Request) -> str:
    """`--path-prefix`, which starts every URL the console writes ("" at the root)."""
    return gateway(request).settings.path_prefix


def sessions(request: Request) -> Sessions:
    s: Sessions = request.app.state.console_sessions
    return s


def session(request: Request) -> Session | None:
    """The live session among the session cookies sent, if any (sessions.cookie_ids)."""
    return sessions(request).live(cookie_ids(request.headers.getlist("cookie")))


def session_id(request: Request) -> str | None:
    s = session(request)
    return s.id if s is not None else None


def base(request: Request, nav: str) -> dict[str, Any]:
    """The layout's context: active tab, CSRF token, rules health, clock."""
    s = session(request)
    rules = gateway(request).rules
    now = time.time()
    return {
        "nav": nav,
        "root": prefix(request),
        "csrf": s.csrf if s is not None else "",
        "logged_in": s is not None,
        "reload_failed": bool(rules.errors),
        "now": now,
        "ago": lambda ts: ago(ts, now),
    }

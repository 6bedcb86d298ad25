"""The web console, served at `/` next to the admin API (same token, or a login session).

`routes` go into the app; `install(app)` gives the auth middleware the session check and the
login redirect it consults.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Route

from hookrunner.console import forms, once, pages, static
from hookrunner.console.pages import store_unavailable
from hookrunner.console.sessions import Sessions, cookie_ids

__all__ = ["install", "routes", "store_unavailable"]


routes: list[BaseRoute] = [
    Route("/", pages.deliveries_page),
    Route("/fragments/deliveries", pages.deliveries_rows),
    Route("/deliveries/{id}", pages.delivery_page),
    Route("/deliveries/{id}/replay", forms.replay, methods=["POST"]),
    Route("/runs/{id}", pages.run_page),
    Route("/runs/{id}/cancel", forms.cancel, methods=["POST"]),
    Route("/rules", pages.rules_page),
    Route("/login", forms.login_page, methods=["GET", "POST"]),
    Route("/logout", forms.logout, methods=["POST"]),
    Route("/static/{name}", static.serve),
]


def install(app: Starlette) -> None:
    sessions = Sessions()
    app.state.console_sessions = sessions
    app.state.console_replays = once.Once()  # a double click on Replay replays once
    # Given the request's `Cookie` headers (AdminAuth): whether one holds a live session.
    app.state.session_ok = lambda headers: sessions.live(cookie_ids(headers)) is not None
    app.state.login_redirect = forms.login_redirect

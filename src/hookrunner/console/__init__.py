"""The web console, served at `/` next to the admin API (same token, or a login session).

`routes` go into the app; `install(app)` gives the auth middleware the session check and the
login redirect it consults.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from hookrunner.console import forms, pages
from hookrunner.console.pages import store_unavailable
from hookrunner.console.render import STATIC
from hookrunner.console.sessions import Sessions

__all__ = ["install", "routes", "store_unavailable"]


class _Files(StaticFiles):
    """StaticFiles, minus its path normalisation's one surprise: `/static/app.js/` served
    the file (no URL outside the console's own names should answer 200)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        if scope["path"].endswith("/"):
            raise HTTPException(status_code=404)
        return await super().get_response(path, scope)


routes: list[BaseRoute] = [
    Route("/", pages.deliveries_page),
    Route("/fragments/deliveries", pages.deliveries_rows),
    Route("/deliveries/{id}", pages.delivery_page),
    Route("/deliveries/{id}/replay", forms.replay, methods=["POST"]),
    Route("/runs/{id}", pages.run_page),
    Route("/runs/{id}/cancel", forms.cancel, methods=["POST"]),
    Route("/rules", pages.rules_page),
    Route("/login", forms.login_form, methods=["GET"]),
    Route("/login", forms.login, methods=["POST"]),
    Route("/logout", forms.logout, methods=["POST"]),
    Mount("/static", app=_Files(directory=STATIC), name="static"),
]


def install(app: Starlette) -> None:
    sessions = Sessions()
    app.state.console_sessions = sessions
    app.state.session_ok = sessions.valid
    app.state.login_redirect = forms.login_redirect

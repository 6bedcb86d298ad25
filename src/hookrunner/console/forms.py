"""The console's POSTs: login, logout, replay, cancel. Each checks the CSRF token (or a valid
bearer token: a non-browser caller), and replay/cancel call what the API calls."""

from __future__ import annotations

import hmac
import logging
import time
from urllib.parse import parse_qs, quote, unquote, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from hookrunner import clientip
from hookrunner.auth import COOKIE, bearer_ok
from hookrunner.console import once
from hookrunner.console.context import base, gateway, prefix, session, session_id, sessions
from hookrunner.console.pages import delivery_page
from hookrunner.console.render import SECURITY_HEADERS, page
from hookrunner.console.sessions import cookie_ids
from hookrunner.logs import Throttled, event
from hookrunner.ratelimit import retry_after
from hookrunner.replay import ReplayError, replay_delivery, replayed

MAX_FORM = 16 * 1024  # bytes; the console's forms are a token and a field or two
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


FORM_TYPE = "application/x-www-form-urlencoded"


class FormError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


async def read_form(request: Request) -> dict[str, str]:
    """A small url-encoded form (first value of each field)."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind not in ("", FORM_TYPE):
        # (A multipart or JSON body read as url-encoded lost its fields: the right token,
        # sent so, was "not the admin token", and a try counted.)
        raise FormError(415, f"The form must be sent url-encoded ({FORM_TYPE}), not {kind[:60]}.")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise FormError(413, "form too large")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise FormError(400, "unreadable form") from None
    return {k: v[0] for k, v in fields.items()}


def same_origin(request: Request) -> bool:
    """A browser's Origin (when sent) must name this host, and its Sec-Fetch-Site must not
    say another site sent the form: second guards beside the CSRF token."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        return False
    origin = request.headers.get("origin")
    if not origin:
        return True
    return urlsplit(origin).netloc in (request.headers.get("host", ""), public_host(request))


def _peer(request: Request) -> str:
    return request.client.host if request.client else _forwarded_by_worker(request)


def _forwarded(request: Request) -> tuple[str, str]:
    return clientip.forwarded_origin(_peer(request), gateway(request).trusted,
                                     request.headers.getlist("x-forwarded-proto"),
                                     request.headers.getlist("x-forwarded-host"))


def public_host(request: Request) -> str:
    """The host the browser used: `X-Forwarded-Host` from a --trusted-proxy (one that
    rewrites Host, as nginx does by default), else Host."""
    return _forwarded(request)[1] or request.headers.get("host", "")


def public_scheme(request: Request) -> str:
    """https where a --trusted-proxy terminated TLS (`X-Forwarded-Proto`), else as received."""
    return _forwarded(request)[0] or request.url.scheme


def client_address(request: Request) -> str:
    """The browser's address, behind a --trusted-proxy too (as hooks see it)."""
    hops = request.headers.getlist("x-forwarded-for")
    if request.client is None:  # forwarded by an HTTP worker, which appended the peer
        hops = hops[:-1]
    trusted = gateway(request).trusted
    return clientip.client_ip(_peer(request), hops, trusted)


def safe_next(target: str | None, root: str) -> str:
    """Only a path of the console: never `//host` or `https://...` (no open redirect), nor,
    under a path prefix (`root`), a path of another app on the host. The default: `root/`."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return root + "/"
    path = unquote(target.split("?", 1)[0]).replace("\\", "/")  # browsers read `\` as `/`
    if root and (not (path + "/").startswith(root + "/") or {".", ".."} & set(path.split("/"))):
        return root + "/"
    return target


def login_redirect(request: Request) -> Response:
    """To the login form, and from there back: to this page, or for a form sent without a
    session (a button pressed after a restart) to the page the form was on."""
    root = prefix(request)
    target = root + request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET":
        referer = urlsplit(request.headers.get("referer", ""))
        same = referer.netloc in (request.headers.get("host", ""), public_host(request))
        target = safe_next((referer.path + (f"?{referer.query}" if referer.query else ""))
                           if same else "", root)
    return RedirectResponse(f"{root}/login?next={quote(target, safe='')}", status_code=303,
                            headers=SECURITY_HEADERS)


def refused(request: Request, status: int, message: str) -> Response:
    return page("error.html", status, **base(request, ""), title="Refused", message=message)


async def checked_form(request: Request) -> dict[str, str]:
    """The form of a console POST, once its origin and CSRF token (or bearer token) check out."""
    form = await read_form(request)
    if bearer_ok(request.headers.get("authorization"), request.app.state.admin_token):
        return form
    token = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
    if not same_origin(request) or not sessions(request).csrf_ok(session_id(request), token):
        raise FormError(403, "This form is stale or came from another page: reload and try again.")
    return form


def login_form(request: Request) -> Response:
    target = safe_next(request.query_params.get("next"), prefix(request))
    if session(request) is not None:
        return RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)
    return page("login.html", **base(request, "login"), next=target, error="")


# Guessing the admin token, at the login form or as a bearer token anywhere, counted together
# per address: 20 wrong tries at once, then one a second. While an address must wait, its
# tries are not judged at all (a right one would tell a guesser it was right); a right token
# costs no try.
GUESS_RATE, GUESS_BURST = 1.0, 20


def _guess_key(client: str) -> tuple[str, str]:
    return ("admin-token", clientip.bucket(client))


def guess_wait(request: Request, client: str) -> float:
    """Seconds before `client` may try the admin token again (0: now)."""
    return gateway(request).limiter.waiting(_guess_key(client), GUESS_RATE, time.time())


def wrong_guess(request: Request, client: str) -> None:
    gateway(request).limiter.take(_guess_key(client), GUESS_RATE, GUESS_BURST, time.time())


async def login_page(request: Request) -> Response:
    """`/login`, one route for both methods: the `Allow` of a 405 there lists both (two
    routes of one path answered `Allow: GET, HEAD`, though a POST logs in)."""
    if request.method == "POST":
        return await login(request)
    return login_form(request)


async def login(request: Request) -> Response:
    try:
        form = await read_form(request)
    except FormError as exc:
        return refused(request, exc.status, exc.message)
    target = safe_next(form.get("next"), prefix(request))
    client = client_address(request)
    if not same_origin(request):
        origin, here = request.headers.get("origin", "-"), public_host(request)
        _login_refused_log(client=client, reason="another origin", origin=origin, host=here)
        return refused(request, 403, f"Log in from this server's own login page: the form came "
                       f"from {origin}, and this server is {here}. (Behind a proxy that "
                       "rewrites Host: have it send X-Forwarded-Host with the port the browser "
                       "used, and list it in --trusted-proxy.)")
    token: str = request.app.state.admin_token
    given = form.get("token", "").strip()
    delay = guess_wait(request, client)
    if delay > 0:
        _login_refused_log(client=client, reason="too many tries")
        wait = retry_after(delay)
        answer = page("login.html", 429, **base(request, "login"), next=target,
                      error=f"Too many tries: wait {wait} s.")
        answer.headers["Retry-After"] = wait
        return answer
    if not given or not hmac.compare_digest(given.encode(), token.encode()):
        wrong_guess(request, client)
        _login_refused_log(client=client, reason="wrong token")
        return page("login.html", 401, **base(request, "login"), next=target,
                    error="That is not the admin token.")
    s = sessions(request).create()
    event("console.login", client=client)
    response = RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)
    # The form's own page was https (its Origin says so, checked above) behind a proxy that
    # sends no X-Forwarded-Proto: the cookie is Secure all the same.
    https = public_scheme(request) == "https" or \
        request.headers.get("origin", "").lower().startswith("https://")
    response.set_cookie(COOKIE, s.id, httponly=True, samesite="strict", path=prefix(request) or "/",
                        secure=https)
    return response


# A guesser would write a line per try: one a second, with a count (naming the last client).
# Per reason (three of them): a line's count is of refusals for that reason, not of any.
_login_refused_log = Throttled("console.login_refused", logging.WARNING, per="reason")


async def logout(request: Request) -> Response:
    try:
        await checked_form(request)
    except FormError as exc:
        return refused(request, exc.status, exc.message)
    for sid in cookie_ids(request.headers.getlist("cookie")):  # each one this browser holds
        sessions(request).end(sid)
    root = prefix(request)
    response = RedirectResponse(f"{root}/login", status_code=303, headers=SECURITY_HEADERS)
    response.delete_cookie(COOKIE, path=root or "/", httponly=True, samesite="strict")
    return response


async def replay(request: Request) -> Response:
    try:
        await checked_form(request)
    except FormError as exc:
        return refused(request, exc.status, exc.message)
    s = session(request)
    if s is None:  # a script with the bearer token: each POST replays, as the API's does
        return await _replay(request)
    replays: once.Once = request.app.state.console_replays
    return await replays.run((s.id, request.path_params["id"]), lambda: _replay(request), _again)


def _again(location: str) -> Response:
    """Replay pressed twice: to the first press's runs, saying it was not replayed twice."""
    return RedirectResponse(f"{location}&again=1", status_code=303, headers=SECURITY_HEADERS)


async def _replay(request: Request) -> Response:
    gw = gateway(request)
    delivery_id = request.path_params["id"]
    if gw.rules.current is None:
        return await delivery_page(request, error="No rules are loaded: nothing to replay against.",
                                   status_code=503)
    try:
        answer = await replay_delivery(gw.store, gw.rules.current, delivery_id,
                                       gw.settings.default_timeout, gw.dispatcher)
    except ReplayError as exc:
        return await delivery_page(request, error=f"Replay refused: {exc}",
                                   status_code=503 if exc.full else 409)
    replayed(gw, answer, via="console")
    ids = ",".join(answer["runs"])
    erred = ",".join(m["rule"] for m in answer["matches"] if m.get("error") is not None)
    gone = ",".join(answer["no_longer_matched"])
    return RedirectResponse(f"{prefix(request)}/deliveries/{quote(delivery_id)}?replayed={quote(ids)}"
                            + (f"&erred={quote(erred)}" if erred else "")
                            + (f"&unmatched={quote(gone)}" if gone else ""), status_code=303,
                            headers=SECURITY_HEADERS)


async def cancel(request: Request) -> Response:
    try:
        await checked_form(request)
    except FormError as exc:
        return refused(request, exc.status, exc.message)
    gw = gateway(request)
    run_id = request.path_params["id"]
    if gw.dispatcher is not None:
        status = await gw.dispatcher.request_cancel(run_id)
    else:
        status = await gw.store.request_cancel(run_id, time.time())
    if status is None:
        return refused(request, 404, "No run with that id.")
    event("console.cancel", run_id=run_id, status=status)
    return RedirectResponse(f"{prefix(request)}/runs/{quote(run_id)}", status_code=303,
                            headers=SECURITY_HEADERS)


def _forwarded_by_worker(request: Request) -> str:
    """No peer address: the request came over the main process's private Unix socket, so
    an HTTP worker of this server forwarded it and appended the client's address last."""
    hops = request.headers.getlist("x-forwarded-for")
    return hops[-1].rsplit(",", 1)[-1].strip() if hops else ""

"""`create_app(settings) -> Starlette`: routes, auth, and the lifespan that opens the store,
loads the rules and starts the dispatcher."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hookrunner import api, console, flocks, gctune, servedrules
from hookrunner.auth import admin_token, bearer_given, bearer_ok, forget_stale_token
from hookrunner.clientip import parse_networks
from hookrunner.console.forms import client_address, guess_wait, wrong_guess
from hookrunner.dispatch import EXIT_IDENTITY_LOST, Dispatcher
from hookrunner.errors import StartupRefused, StoreUnavailable
from hookrunner.gateway import Gateway
from hookrunner.hooklane import Admission, Parts
from hookrunner.ingest import accept, accept_body, admit, out_of_memory
from hookrunner.logs import Throttled, event
from hookrunner.metrics import Metrics
from hookrunner.pathprefix import strip
from hookrunner.preflight import data_dir_shared, lost_store, postgres_target, reach_postgres
from hookrunner.private import open_to_others, private_dir
from hookrunner.ratelimit import retry_after
from hookrunner.rawhttp import Answer, ClientGone, answer_parts, error, send_answer
from hookrunner.reload import LiveRules
from hookrunner.settings import POSTGRES_SCHEMES, Settings, unknown_variables
from hookrunner.shared import RELOAD_SIGNAL, Shared, ask_supervisor_to_reload
from hookrunner.store import open_store
from hookrunner.upstream import Upstream, forwardable
from hookrunner.workerqueue import WorkerQueue

MIN_ADMIN_TOKEN = 16  # characters of a chosen admin token below which the start warns
PUBLIC_PREFIXES = ("/hooks/", "/healthz", "/readyz", "/metrics", "/login", "/static/")


class AdminAuth:
    """Bearer token (or the console's session cookie) for everything but hooks and probes.

    A plain ASGI middleware: hook requests pass straight through at no cost."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        if not _routed(scope):
            # A path nothing serves is a 404 with or without the token (it said "admin token
            # required" to a sender whose URL had a slash too many, `//hooks/github`).
            said_not_found(scope)
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        state = request.app.state
        token: str = state.admin_token
        checker = getattr(state, "session_ok", None)
        # The cookie reads the API (the console's scripts do) but never changes anything
        # there: the console's own POSTs check a CSRF token, the API's do not.
        cookie_may = request.method in ("GET", "HEAD") or not scope["path"].startswith("/api/")
        response: Response
        authorizations = request.headers.getlist("authorization")
        if len(authorizations) > 1:
            # Which one counted was the order's doing (a proxy adding its own, say): the
            # first, right or wrong, and a wrong first was a guess counted.
            response = JSONResponse({"error": "more than one Authorization header: send one"},
                                    status_code=400, headers=_PRIVATE_HEADERS)
            await response(scope, receive, _unread_body_closes(scope, send))
            return
        authorization = authorizations[0] if authorizations else None
        bearer = bearer_given(authorization)
        # A bearer token is a try at the admin token, counted with the login form's (a right
        # one costs nothing); while this address must wait, no try is judged.
        client = client_address(request) if bearer else ""
        if bearer and (delay := guess_wait(request, client)) > 0:
            wait = retry_after(delay)
            _token_refused_log(client=client, reason="too many tries")
            response = JSONResponse(
                {"error": f"too many wrong admin tokens from this address: wait {wait} s"},
                status_code=429, headers={"Retry-After": wait, **_PRIVATE_HEADERS})
            await response(scope, receive, _unread_body_closes(scope, send))
            return
        if bearer_ok(authorization, token) or (
            checker is not None and cookie_may and checker(request.headers.getlist("cookie"))
        ):
            await self.app(scope, receive, send if not scope["path"].startswith("/api/")
                           else _private_answer(send))
            return
        if bearer:
            wrong_guess(request, client)
            _token_refused_log(client=client, reason="wrong token")
        login = getattr(state, "login_redirect", None)
        # A browser (it asks for HTML, and sent no bearer token: a proxy's Basic auth may come
        # with it) is shown the login form; a script or a client that sent a wrong token hears
        # 401, as the API answers.
        # A console button pressed after the session ended (a restart) is a POST: back to the
        # login form too, then to the page it was on.
        if (login is not None and not scope["path"].startswith("/api/")
                and request.method in ("GET", "POST") and not bearer
                and "text/html" in request.headers.get("accept", "")):
            response = login(request)
        else:
            response = JSONResponse({"error": "admin token required"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer", **_PRIVATE_HEADERS})
        await response(scope, receive, _unread_body_closes(scope, send))


def _expects(scope: Scope) -> bool:
    """Whether the request was sent with `Expect:` (100-continue): its client sends the body
    only once asked for it."""
    return any(k == b"expect" for k, _ in scope["headers"])


def _unread_body_closes(scope: Scope, send: Send) -> Send:
    """`send` for a refusal made before the body was read. With `Expect: 100-continue` the
    client sends no body after it, so the connection closes: the next request on it was read
    as that body, and waited for the rest until the 408 (as hooks' answers, see `hook`)."""
    if not _expects(scope):
        return send

    async def closing(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []),
                                               (b"connection", b"close")]}
        await send(message)

    return closing


def _routed(scope: Scope) -> bool:
    """Whether a route of the app serves this path (with any method)."""
    app = scope.get("app")
    routes: list[BaseRoute] = getattr(getattr(app, "router", None), "routes", [])
    return not routes or any(route.matches(scope)[0] != Match.NONE for route in routes)


# A sender posting to a path nothing serves (a base URL with a slash too many): said, at
# most a line a second.
_not_found_log = Throttled("http.not_found", logging.WARNING)
MAX_LOGGED_PATH = 512
SENDING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def said_not_found(scope: Scope, metrics: Metrics | None = None) -> None:
    """Log a request that sends something (POST, PUT, PATCH, DELETE) to a path nothing
    serves (a sender's URL that is wrong), with its path as sent: `/hook%73/gh` is refused
    for its escape, and its decoded form would read as a hook's. `metrics`: count one under
    `/hooks/` as a request to an unknown hook (`/hooks/gh/`, a sender's trailing slash), which
    is alerted on. (Not a probe's GET, HEAD or `OPTIONS *`: a line a second of those.)"""
    if scope["method"] not in SENDING:
        return
    raw: bytes = scope.get("raw_path") or scope["path"].encode()
    path = raw.split(b"?", 1)[0].decode("latin-1")
    if metrics is not None and scope["path"].startswith("/hooks/"):
        metrics.unknown_hooks.inc()
    _not_found_log(method=scope["method"], path=path[:MAX_LOGGED_PATH])

# A guess at the admin token over the API, as the console's login form logs its own: a line
# a second per reason at most, with a count (naming the last client).
_token_refused_log = Throttled("admin.token_refused", logging.WARNING, per="reason")

_PRIVATE_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
_PRIVATE = [(k.lower().encode(), v.encode()) for k, v in _PRIVATE_HEADERS.items()]


def _private_answer(send: Send) -> Send:
    """The admin API's answers hold payloads and logs (and a session cookie can read them, as
    the console's pages): never cached, never sniffed into another type."""
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            names = {k.lower() for k, _ in message.get("headers", [])}
            extra = [(k, v) for k, v in _PRIVATE if k not in names]
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)
    return wrapped


async def http_error(request: Request, exc: Exception) -> Response:
    """Routing errors (no such path, wrong method) answer JSON like every other error."""
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def store_unavailable(request: Request, exc: Exception) -> Response:
    """The store cannot be reached (a database outage, a held lock), on any page or API call:
    503 with Retry-After, as a hook answers; a browser gets the console's page saying so."""
    if "text/html" in request.headers.get("accept", "") and not request.url.path.startswith("/api/"):
        return console.store_unavailable(request)
    return JSONResponse({"error": "store unavailable"}, status_code=503,
                        headers={"Retry-After": "5"})


async def internal_error(request: Request, exc: Exception) -> Response:
    """A bug answers JSON like every other error, without details (they are in the log)."""
    return JSONResponse({"error": "internal error"}, status_code=500)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


SERVER_BUSY_TIMEOUT = 3.0  # seconds; see create_app
READY_TIMEOUT = 2.0  # seconds: a probe hears "unreachable" before a typical 3 s timeout
STORE_CLOSE_WAIT = 15.0  # seconds: closing a store that does not answer (a frozen database)


def _where(error: str, rules_dir: Path) -> str:
    """`rules/a.yaml:12: message` -> `rules/a.yaml:12`; an error of no file (the directory
    emptied, not listable): the directory. (Not the message: it may quote a rule's text.)"""
    head, sep, _ = error.partition(": ")
    if sep and re.fullmatch(r".+:\d+", head):
        return head
    if head == str(rules_dir) or "the rules directory" in head:
        return f"{rules_dir} (see the log)"
    return "--root (see the log)" if head.startswith("--root ") else "(see the log)"


_PINGS: set[asyncio.Future[bool]] = set()  # readiness pings still running past the answer


def _settled(ping: asyncio.Future[bool]) -> None:
    _PINGS.discard(ping)
    if not ping.cancelled():
        ping.exception()  # retrieved: no "exception was never retrieved" at exit


async def readyz(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    # Not wait_for: it waits for the cancelled ping to end, and psycopg spends up to 10 s
    # more cancelling a query to a server that hangs (12 s for /readyz). The ping goes on by
    # itself (bounded by the pool's timeout), kept referenced until it ends.
    ping = asyncio.ensure_future(gw.store.ping())
    done, _ = await asyncio.wait({ping}, timeout=READY_TIMEOUT)
    if not done:
        _PINGS.add(ping)
        ping.add_done_callback(_settled)
    store_ok = ping in done and not ping.cancelled() and ping.exception() is None \
        and bool(ping.result())
    rules = gw.rules
    trouble = None if store_ok else getattr(gw.store, "trouble", None)
    doc: dict[str, Any] = {
        "store": "ok" if store_ok else f"unreachable ({trouble})" if trouble else "unreachable",
        "rules": "loaded" if rules.current is not None else "not loaded",
        "rules_loaded_at": rules.loaded_at,
        # The same on every node that serves the same rules files: compare them (a node
        # with other rules matches and renders the deliveries it accepts by those).
        "rules_digest": rules.current.digest if rules.current is not None else None,
        "last_reload": "failed" if rules.errors else "ok",
        # Where each error is, not its message: /readyz needs no token, and a message quotes
        # the rules' text (a template, a literal header value). The log and the console
        # have the messages.
        "reload_errors": [_where(e, rules.rules_dir) for e in rules.errors],
    }
    unavailable = rules.current.unavailable if rules.current is not None else {}
    if unavailable:  # answered 503; the other hooks serve, so the server stays ready
        doc["unavailable_hooks"] = {h: _where(why, rules.rules_dir)
                                    for h, why in unavailable.items()}
    # Stopping (a SIGTERM, or its node name taken over by another server): it takes no more
    # work, so a load balancer should send it none.
    stopping = bool(getattr(gw.dispatcher, "stopping", False))
    if stopping:
        doc["stopping"] = True
    # No run can start (the data dir's disk is full): deliveries are still stored, and run
    # once there is room, but this node should get no more work meanwhile.
    no_room: str | None = getattr(gw.dispatcher, "no_room", None)
    if no_room is not None:
        doc["runs"] = no_room
    failed_task: str | None = getattr(gw.dispatcher, "failed_task", None)
    if failed_task is not None:  # a bug: nothing is claimed here any more
        doc["runs"] = f"not running: {failed_task} (see the log's dispatcher.task_failed)"
    ready = (store_ok and rules.current is not None and not stopping and no_room is None
             and failed_task is None)
    return JSONResponse(doc, status_code=200 if ready else 503)


async def metrics(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    return Response(gw.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


HOOKS = "/hooks/"
SHORT_KEEP = 24 * 3600.0  # a --keep below a day is warned about (senders redeliver for days)


async def _unreachable(request: Request) -> Response:
    raise RuntimeError("/hooks/{id} is answered by App.__call__")


class App(Starlette):
    """Starlette, except that `/hooks/{id}` goes straight to the accept path (plain ASGI,
    see rawhttp): it is the path under load, and the rest of the stack costs as much as
    the work. Admin auth does not apply there; every other path is routed as usual, or,
    in an extra HTTP worker process, forwarded to the main process (`upstream`)."""

    upstream: Upstream | None = None
    # The main process of `--http-workers`: every request it gets was forwarded by a worker,
    # which answers hooks itself; a hook path here came by another way (a proxy's rewrite).
    hooks_elsewhere = False
    hook_lane: HookLane | None = None  # hooks answered by the HTTP protocol (httpproto)
    path_prefix = ""  # --path-prefix: taken off a path that still has it (pathprefix)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if self.path_prefix and (path := strip(scope["path"], self.path_prefix)) != scope["path"]:
                # `raw_path` stays as sent: a worker forwards that, and the main process
                # takes the prefix off once, as here.
                scope = {**scope, "path": path}
            if not forwardable(scope):
                # Not found, in every process alike, and no token is judged (a worker
                # answering such a path itself judged tries with a limit of its own).
                said_not_found(scope, self.state.gateway.metrics)
                await send_answer(send, error(404, "Not Found"), head=scope["method"] == "HEAD")
                return
            if scope["path"].startswith(HOOKS):
                hook_id = scope["path"][len(HOOKS):]
                if self.hooks_elsewhere:
                    await send_answer(send, error(404, "Not Found"), head=scope["method"] == "HEAD")
                    return
                if hook_id and "/" not in hook_id:
                    await _hook(scope, receive, send, self.state.gateway, hook_id)
                    return
                # `/hooks/`, `/hooks/gh/`: no hook's path, and a sender's URL that is wrong.
                said_not_found(scope, self.state.gateway.metrics)
                await send_answer(send, error(404, "Not Found"), head=scope["method"] == "HEAD")
                return
            elif self.upstream is not None:
                await self.upstream(scope, receive, send)
                return
        # A client gone (or its body unparsable) while a form is read: no one to answer.
        with contextlib.suppress(ClientDisconnect):
            await super().__call__(scope, receive, send)


class HookLane:
    """The accept path as httpproto's hook lane calls it: the head's checks, then the rest
    once the whole body is in."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def admit(self, scope: dict[str, Any], hook_id: str, length: int) -> Admission | None:
        ruleset = self.gw.rules.current
        hook = ruleset.hooks.get(hook_id) if ruleset is not None else None
        if hook is None or length > hook.max_body:
            return None
        try:
            admitted = admit(scope, self.gw, hook_id)
        except Exception:
            logging.getLogger("hookrunner").exception("http.internal_error")
            admitted = error(500, "internal error")
        if isinstance(admitted, Answer):
            return Admission(refusal=(admitted.status, *answer_parts(admitted)))
        return Admission(admitted=(scope, admitted, hook_id))

    async def answer(self, admitted: Any, body: bytes) -> Parts:
        scope, checked, hook_id = admitted
        try:
            answer = await accept_body(scope, checked, body, self.gw, hook_id, None)
            return (answer.status, *answer_parts(answer))
        except Exception:
            logging.getLogger("hookrunner").exception("http.internal_error")
            return (500, *answer_parts(error(500, "internal error")))

    def out_of_memory(self, admitted: Any) -> Parts:
        return (503, *answer_parts(out_of_memory(admitted[2])))


async def _hook(scope: Scope, receive: Receive, send: Send, gw: Gateway, hook_id: str) -> None:
    started = False

    async def tracked(message: Message) -> None:
        nonlocal started
        started = True
        await send(message)

    head = scope["method"] == "HEAD"
    # `Expect: 100-continue` and answered before its body was asked for (a 413 on the
    # declared length, a 404): the client sends no body, and the next request on the
    # connection was read as that body, swallowed. Such an answer closes the connection.
    expects = _expects(scope)
    body_read = not expects

    async def reading() -> Message:
        nonlocal body_read
        message = await receive()
        body_read = body_read or not message.get("more_body", False)
        return message

    try:
        answer = await accept(scope, reading if expects else receive, gw, hook_id)
        if not body_read:
            answer = dataclasses.replace(answer, headers={**answer.headers, "Connection": "close"})
        await send_answer(tracked, answer, head=head)
    except ClientGone:
        return
    except Exception:
        logging.getLogger("hookrunner").exception("http.internal_error")
        if not started:
            await send_answer(send, error(500, "internal error"), head=head)


def _data_dir(settings: Settings, worker: bool = False) -> None:
    """Create --data private, or warn when the operator's own lets others in (once: the
    main process says it, not each HTTP worker too)."""
    if settings.data.exists() and not worker:
        mode = open_to_others(settings.data)
        if mode is not None:
            event("server.data_dir_not_private", logging.WARNING, path=str(settings.data),
                  mode=f"{mode:04o}", hint="it holds payloads and logs: chmod 700 it")
    private_dir(settings.data)
    private_dir(settings.logs_dir)
    if not settings.db:
        lost = lost_store(Path(settings.store_url), settings.logs_dir, settings.data)
        if lost is not None:
            raise StartupRefused(lost)


def _record_rules(settings: Settings) -> None:
    """Tell the shell's `replay` and `explain --delivery` which rules this server serves
    (hookrunner.servedrules), and `replay` its default timeout. Without the record they read
    their own --rules and HOOKRUNNER_DEFAULT_TIMEOUT, as before."""
    try:
        servedrules.record(settings.data, settings.rules, settings.root, settings.default_timeout)
    except OSError as exc:
        event("server.rules_unrecorded", logging.WARNING, path=str(settings.data / servedrules.FILE),
              error=exc.strerror or str(exc),
              then="`hookrunner replay` from a shell needs --rules (the server's directory)")


def refuse(app: Starlette, reason: str) -> None:
    """Report why the server does not start, once: uvicorn's own account of the failed
    lifespan (a traceback) is then silenced (commands._QuietRefusal)."""
    app.state.refused = reason
    event("server.refused", logging.ERROR, reason=reason)


def create_app(settings: Settings, shared: Shared | None = None, worker: bool = False) -> App:
    """The app of one process. `shared` when the server runs `--http-workers` processes:
    the main one (dispatcher, console, API) or, with `worker`, an extra one that accepts
    hooks and forwards everything else to the main one (see multiproc)."""
    metrics_ = Metrics(summed=shared is not None)
    rules = LiveRules(settings.rules, settings.root,
                      on_result=None if worker else metrics_.rules_loaded, quiet=worker,
                      copy=Path(shared.upstream).with_name("rules-copy") if shared else None)
    # A sender gives up after ~10 s (GitHub): a write that waits for another process's lock
    # (a CLI command) answers 503 with Retry-After well before that.
    store = open_store(settings.store_url, write_lock=shared is not None,
                       busy_timeout=SERVER_BUSY_TIMEOUT, save_lost=not worker)
    gw = Gateway(settings=settings, store=store, rules=rules, metrics=metrics_,
                 trusted=parse_networks(settings.trusted_proxy))

    async def _open_store() -> None:
        _data_dir(settings, worker)
        if settings.db.startswith(POSTGRES_SCHEMES):
            await reach_postgres(settings.db, need_schema=False)
        # The identity first: opening the store migrates its schema, which must not change
        # under an older server still running on it (a deploy that starts the new one early).
        if not worker:
            await _lock_data_dir()
            _record_rules(settings)
        try:
            if not worker and not await store.lock_node(settings.node):
                await store.close()
                where = f"node name {settings.node!r}" if settings.db else f"--data {settings.data}"
                raise StartupRefused(f"another server is running with this {where}; "
                                     "stop it first (or give this one its own)")
            await store.open()
        except StoreUnavailable as exc:
            with contextlib.suppress(Exception):
                await store.close()  # and so the lock: a failed start must not hold the identity
            raise StartupRefused(f"cannot open the store: {exc}") from None
        if worker:
            assert shared is not None
            gw.dispatcher = WorkerQueue(settings, store, shared)
        else:
            forget_stale_token(settings.admin_token, settings.data)

    data_lock: list[IO[str]] = []  # held while serving: one server per --data, either store

    async def _lock_data_dir() -> None:
        try:
            file = flocks.open_lock(settings.data_lock)
        except OSError as exc:
            raise StartupRefused(f"cannot open {settings.data_lock}: {exc.strerror or exc}") from None
        try:
            taken = await flocks.take(file)
        except OSError as exc:  # ENOLCK: a network file system without locking
            file.close()
            raise StartupRefused(f"cannot lock {settings.data_lock}: {exc.strerror or exc}") from None
        if not taken:
            file.close()
            raise StartupRefused(data_dir_shared(settings))
        data_lock.append(file)

    def _unlock_data_dir() -> None:
        while data_lock:
            data_lock.pop().close()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            await _open_store()
        except StartupRefused as exc:
            _unlock_data_dir()
            refuse(app_, str(exc))
            raise
        except BaseException:
            _unlock_data_dir()
            raise
        dispatcher: Dispatcher | None = None
        rules.reload()
        gctune.for_serving()
        if not worker:
            gw.dispatcher = dispatcher = Dispatcher(
                settings, store, metrics_, budget=shared.budget if shared else None,
                wake_fd=shared.wake_r if shared else None)

            def identity_lost() -> None:
                if gw.shut_down is not None:
                    gw.shut_down(EXIT_IDENTITY_LOST)

            dispatcher.on_identity_lost = identity_lost
            try:
                await dispatcher.start()
            except BaseException as exc:
                await store.close()  # and so the lock: a failed start must not hold the identity
                _unlock_data_dir()
                if isinstance(exc, StoreUnavailable):  # recording the runs a crash left
                    why = f"cannot settle the runs left running: {exc}"
                    refuse(app_, why)
                    raise StartupRefused(why) from None
                raise
            if gw.stopping:
                # Stopped while the store opened (a long migration): there was no dispatcher
                # to tell then, and one must not start actions now.
                dispatcher.begin_stop()
        watcher = asyncio.create_task(rules.watch(), name="hookrunner-rules-watch")
        loop = asyncio.get_running_loop()
        # Only a loop in the main thread can take signals (TestClient runs the app in another
        # thread); there the file watcher still reloads, SIGHUP just is not wired.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            if shared is None:
                loop.add_signal_handler(signal.SIGHUP, rules.request_reload)
            else:
                loop.add_signal_handler(RELOAD_SIGNAL, rules.request_reload)
                loop.add_signal_handler(signal.SIGHUP, ask_supervisor_to_reload)
        if worker:
            event("server.http_worker_started", node=settings.node, pid=os.getpid())
        else:
            scheme = "https" if settings.ssl_certfile else "http"
            host = f"[{settings.host}]" if ":" in settings.host else settings.host
            event("server.started", node=settings.node, listen=f"{scheme}://{host}:{settings.port}",
                  workers=settings.workers,
                  http_workers=settings.http_workers,
                  # Where the data is, never a password.
                  store=f"postgresql://{postgres_target(settings.db)}" if settings.db
                  else str(settings.store_url),
                  rules=str(settings.rules.absolute()), root=str(settings.root.absolute()),
                  path_prefix=settings.path_prefix or None)
            if shared is not None:
                shared.announce_ready()
            if settings.keep and settings.keep < SHORT_KEEP:
                event("server.keep_short", logging.WARNING, keep_seconds=settings.keep,
                      hint="dedup forgets a delivery once it is pruned: a sender's redelivery "
                           "after that runs the rules again (Stripe retries for 3 days)")
            for name, meant in unknown_variables(settings.environ, settings.pass_env):
                event("server.unknown_variable", logging.WARNING, variable=name,
                      hint=(f"no setting reads it: did you mean {meant}?" if meant else
                            "no setting reads it (the README's Commands section lists them)"))
            unset = [n for n in settings.pass_env if n not in settings.environ]
            if unset:  # a typo, or a variable the unit's EnvironmentFile does not set
                event("server.pass_env_unset", logging.WARNING, names=",".join(unset),
                      hint="--pass-env names a variable this server's environment does not have")
        try:
            yield
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGHUP)
                loop.remove_signal_handler(RELOAD_SIGNAL)
                # Not its default action (death) while running actions drain: a reload
                # asked for during a stop must not cut their grace period short.
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if dispatcher is not None:
                await dispatcher.stop()
            if app_.upstream is not None:
                await app_.upstream.aclose()
            try:  # bounded: a database that does not answer must not keep the process alive
                async with asyncio.timeout(STORE_CLOSE_WAIT):
                    await store.close()
            except TimeoutError:
                event("store.close_timed_out", logging.WARNING, seconds=STORE_CLOSE_WAIT)
            _unlock_data_dir()
            event("server.http_worker_stopped" if worker else "server.stopped", node=settings.node)

    routes: list[BaseRoute] = [
        # Never reached for /hooks/{id} itself (App takes it first); kept so that routing
        # around it answers as before (other methods get 405).
        Route("/hooks/{hook_id}", _unreachable, methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        *api.routes,
        *console.routes,
    ]
    app = app_ = App(routes=routes, lifespan=lifespan, middleware=[Middleware(AdminAuth)],
                     exception_handlers={HTTPException: http_error, StoreUnavailable: store_unavailable,
                                         Exception: internal_error})
    # No slash redirects: `/hooks/gh/` would answer 307 to a Location built from the client's
    # Host header. An unknown path is a 404 like any other (the console links exact paths).
    app.router.redirect_slashes = False
    app.path_prefix = settings.path_prefix
    if worker:
        assert shared is not None
        app.upstream = Upstream(shared.upstream, tls=bool(settings.ssl_certfile))
    elif shared is not None:
        app.hooks_elsewhere = True
    if not app.hooks_elsewhere:
        app.hook_lane = HookLane(gw)
    token, token_file = admin_token(settings.admin_token, settings.data)
    if token_file is not None and not worker and settings.db:
        # Every node makes its own: behind a balancer every other API call is a 401.
        event("server.admin_token_per_node", logging.WARNING, file=str(token_file),
              hint="nodes sharing a database need one token: set the same "
                   "HOOKRUNNER_ADMIN_TOKEN on every node")
    elif token_file is not None and not worker:  # the main process says it once
        event("server.admin_token", logging.INFO, file=str(token_file),
              hint="set HOOKRUNNER_ADMIN_TOKEN to choose it")
    elif len(token) < MIN_ADMIN_TOKEN and not worker:
        # Guesses are throttled per address (console.forms), not across addresses.
        event("server.admin_token_short", logging.WARNING, length=len(token),
              hint=f"HOOKRUNNER_ADMIN_TOKEN has fewer than {MIN_ADMIN_TOKEN} characters: "
                   "use a long random one (openssl rand -base64 24)")
    app.state.admin_token = token
    app.state.gateway = gw
    console.install(app)
    return app

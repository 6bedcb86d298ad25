"""The admin API under /api/: deliveries, runs, logs, cancel, replay (bearer token)."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from hookrunner.errors import StoreUnavailable
from hookrunner.gateway import Gateway
from hookrunner.ingest import QUEUE_FULL_RETRY_AFTER
from hookrunner.payload import SHOWN_DEPTH, as_received, deeper_than, form_json_hint
from hookrunner.redact import redact_spec, shown_key
from hookrunner.replay import ReplayError, replay_delivery, replayed
from hookrunner.runlog import chunks, opened
from hookrunner.store.base import RUN_STATUSES, TERMINAL, Delivery, Finish, Run
from hookrunner.verify.base import Headers
from hookrunner.waiting import waiting_for

MAX_LIMIT = 1000
DEFAULT_LIMIT = 50  # a listing without ?limit=
STREAM_POLL = 0.25  # seconds between looks at a growing log file
STREAM_WAIT_MAX = 1.0  # seconds between looks at a run waiting to start, at most
# Run log answers one process sends at once: each holds a file, a read and a socket's
# buffer, and a followed one reads the store (1,000 readers of a 10 MiB log slowed hook
# answers to 4-7 s and grew the server by ~300 MB). Past it: 503 with Retry-After.
MAX_LOG_STREAMS = 64
LOG_STREAMS_RETRY_AFTER = "5"  # seconds


def _gw(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


def _limit(request: Request, default: int = DEFAULT_LIMIT) -> int:
    """`?limit=` (checked by _unknown_params: a whole number of at least 1), at most MAX_LIMIT."""
    given = request.query_params.get("limit", str(default)).lstrip("0")
    return min(int(given), MAX_LIMIT) if len(given) <= 6 else MAX_LIMIT


def _err(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _odd_params(request: Request, known: tuple[str, ...]) -> JSONResponse | None:
    """A 400 for a parameter the endpoint does not take (`?status=failed` on deliveries, or
    a paging parameter, silently gave the unfiltered first page), or one given twice (which
    of them would count?)."""
    unknown = sorted(set(request.query_params) - set(known))
    if unknown:
        takes = f"takes {', '.join(known)}" if known else "takes no parameters"
        return _err(400, f"unknown parameter {unknown[0]!r}; this endpoint {takes}")
    repeated = sorted(k for k in known if len(request.query_params.getlist(k)) > 1)
    if repeated:
        return _err(400, f"{repeated[0]} is given more than once")
    return None


def _unknown_params(request: Request, known: tuple[str, ...]) -> JSONResponse | None:
    """`_odd_params`, and a listing's filters and limit checked."""
    if (refused := _odd_params(request, known)) is not None:
        return refused
    # An empty filter (`?status=$S` with S unset) matched nothing: "no runs" was a lie.
    empty = sorted(k for k, v in request.query_params.multi_items() if not v.strip())
    if empty:
        unset = f"the default, {DEFAULT_LIMIT}" if empty[0] == "limit" else "no filter by it"
        return _err(400, f"{empty[0]} is empty: leave it out for {unset}")
    limit = request.query_params.get("limit")
    if limit is not None and not (limit.isascii() and limit.isdigit() and limit.strip("0")):
        return _err(400, f"limit must be a whole number of at least 1 (at most {MAX_LIMIT} "
                         f"are listed), got {limit[:20]!r}")
    return None


def delivery_json(d: Delivery, full: bool = True) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": d.id, "hook": d.hook, "received_at": d.received_at, "event": d.event,
        "client_ip": d.client_ip, "dedup_key": d.dedup_key, "runs": d.run_ids,
        "matched": [m.get("rule") for m in d.matches if m.get("matched")],
        # The verifier that checked it (`none` too); null where stored before it was kept.
        "verifier": d.verifier,
    }
    if full:
        doc["headers"] = d.headers
        doc["query"] = d.query
        doc["matches"] = d.matches
        # JSON sent as a form (`curl -d` without a Content-Type), why its rules found nothing.
        if (hint := form_json_hint(d.body, Headers(d.headers).get("content-type"))) is not None:
            doc["hint"] = hint
        # As the rules saw it: `curl -d '{...}'` sends a form, whatever it looks like.
        kind, value = as_received(d.body, Headers(d.headers).get("content-type"))
        if kind == "binary":
            doc["payload_base64"] = base64.b64encode(d.body).decode()
        elif kind in ("json", "form") and deeper_than(value, SHOWN_DEPTH):
            doc["payload"] = d.body.decode("utf-8", "replace")  # JSON writers give up there
        else:
            doc["payload"] = value
    return doc


def _next(ids: list[str], limit: int) -> str | None:
    """A listing's cursor for its next page (its last id), where one more than `limit` was
    found: a full last page has none."""
    return ids[limit - 1] if len(ids) > limit else None


def _gone_cursor(what: str, before: str) -> JSONResponse:
    return _err(400, f"before: no {what} {before[:80]!r} is stored (an id from a listing's "
                     f"`next`; it may have been removed by --keep since)")


async def list_deliveries(request: Request) -> Response:
    if (refused := _unknown_params(request, ("hook", "limit", "before"))) is not None:
        return refused
    store, limit, before = _gw(request).store, _limit(request), request.query_params.get("before")
    ds = await store.list_deliveries(request.query_params.get("hook"), limit + 1, before=before)
    if not ds and before is not None and await store.get_delivery(before) is None:
        return _gone_cursor("delivery", before)
    return JSONResponse({"deliveries": [delivery_json(d, full=False) for d in ds[:limit]],
                         "next": _next([d.id for d in ds], limit)})


async def get_delivery(request: Request) -> Response:
    if (refused := _odd_params(request, ())) is not None:
        return refused
    d = await _gw(request).store.get_delivery(request.path_params["id"])
    if d is None:
        return _err(404, "no such delivery")
    return JSONResponse(delivery_json(d))


async def replay(request: Request) -> Response:
    if (refused := _odd_params(request, ("rule",))) is not None:
        return refused
    if request.query_params.get("rule", "x").strip() == "":
        return _err(400, "rule is empty: leave it out to replay every rule")
    if (too_big := await _whole_request(request)) is not None:
        return too_big
    gw = _gw(request)
    if gw.rules.current is None:
        return _err(503, "no rules loaded")
    try:
        answer = await replay_delivery(gw.store, gw.rules.current, request.path_params["id"],
                                       gw.settings.default_timeout, gw.dispatcher,
                                       rule=request.query_params.get("rule"))
    except ReplayError as exc:
        if exc.full:
            return _err(503, str(exc), headers={"Retry-After": QUEUE_FULL_RETRY_AFTER})
        return _err(404 if exc.not_found else 409, str(exc))
    replayed(gw, answer, via="api")
    return JSONResponse(answer, status_code=202)


async def list_runs(request: Request) -> Response:
    known = ("status", "rule", "delivery", "limit", "before")
    if (refused := _unknown_params(request, known)) is not None:
        return refused
    status = request.query_params.get("status")
    if status and status not in RUN_STATUSES:
        return _err(400, f"status must be one of {', '.join(RUN_STATUSES)}")
    store, limit, before = _gw(request).store, _limit(request), request.query_params.get("before")
    runs = await store.list_runs(
        status=status, limit=limit + 1, delivery_id=request.query_params.get("delivery"),
        rule=request.query_params.get("rule"), before=before)
    if not runs and before is not None and await store.get_run(before) is None:
        return _gone_cursor("run", before)
    return JSONResponse({"runs": [_run_json(r) for r in runs[:limit]],
                         "next": _next([r.id for r in runs], limit)})


def _run_json(run: Run) -> dict[str, Any]:
    """A run as the API shows it: secret-looking values of its action redacted."""
    doc = run.to_json()
    doc["spec"] = redact_spec(run.spec, run.action)
    doc["concurrency_key"] = shown_key(run.concurrency_key, run.spec)
    return doc


UNRECORDED_NOTE = ("this attempt has ended, but the store refuses to record its result (see "
                   "/readyz); it is written as soon as the store takes writes again")


def unrecorded(gw: Gateway, run: Run) -> Finish | None:
    """How the run's running attempt ended on this node, while the store refuses to write
    that result but still reads (a full disk, a lock). Only for the attempt the store holds
    as running, by this node: another's takeover is not this node's outcome."""
    ended = gw.dispatcher.unrecorded(run.id) if gw.dispatcher is not None else None
    if (ended is None or run.status != "running" or ended.attempt != run.attempt
            or ended.node != run.lease_owner):
        return None
    return ended


async def get_run(request: Request) -> Response:
    if (refused := _odd_params(request, ())) is not None:
        return refused
    gw = _gw(request)
    run = await gw.store.get_run(request.path_params["id"])
    if run is None:
        return _err(404, "no such run")
    doc = _run_json(run)
    doc["attempts"] = [a.__dict__ for a in await gw.store.attempts(run.id)]
    if (ended := unrecorded(gw, run)) is not None:
        doc["unrecorded"] = {"status": ended.outcome, "exit_code": ended.exit_code,
                             "finished_at": ended.finished_at, "reason": ended.reason,
                             "retry_at": ended.retry_at, "note": UNRECORDED_NOTE}
    if run.status == "queued":
        running = await gw.store.list_runs(status="running", limit=MAX_LIMIT)
        ahead = await gw.store.list_runs(status="queued", limit=MAX_LIMIT, before=run.id) \
            if run.concurrency_key is not None else []
        doc["waiting"] = waiting_for(run, running, time.time(), ahead)
    return JSONResponse(doc)


class _Slot:
    """One of the process's MAX_LOG_STREAMS places for sending a log (`Gateway.log_streams`),
    taken when the answer starts sending one: a follower waiting for a queued run holds none
    (64 CI jobs following their `202`'s runs locked every other reader out, the console too)."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.held = False

    def take(self) -> bool:
        """Whether it is held now (taken if one was free). No await in it: a thousand
        requests at once cannot all pass the look."""
        if not self.held and self.gw.log_streams < MAX_LOG_STREAMS:
            self.gw.log_streams += 1
            self.held = True
        return self.held

    async def wait(self) -> None:
        """Until it is held (an answer already begun cannot turn into a 503)."""
        while not self.take():
            await asyncio.sleep(STREAM_POLL)

    def give(self) -> None:
        if self.held:
            self.gw.log_streams -= 1
            self.held = False


class _CountedStream(StreamingResponse):
    """A run log's answer, whose slot is given back when it ends, however it ends (sent
    whole, the client gone, an error)."""

    def __init__(self, slot: _Slot, content: AsyncIterator[bytes], **kw: Any) -> None:
        super().__init__(content, media_type="text/plain; charset=utf-8", **kw)
        self.slot = slot

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slot.give()


async def run_log(request: Request) -> Response:
    """The output of an attempt (default: the run's current one), from at most
    MAX_LOG_STREAMS answers sending one at once per process."""
    if (refused := _odd_params(request, ("attempt",))) is not None:
        return refused
    gw = _gw(request)
    slot = _Slot(gw)
    answer: Response | None = None
    try:
        answer = await _run_log(request, gw, slot)
    finally:
        if not isinstance(answer, _CountedStream):  # (a 404, an error: its slot not kept)
            slot.give()
    return answer


def _no_slot() -> JSONResponse:
    return _err(503, f"{MAX_LOG_STREAMS} run logs are being sent by this server process "
                f"already, the most at once: retry in {LOG_STREAMS_RETRY_AFTER} s",
                headers={"Retry-After": LOG_STREAMS_RETRY_AFTER})


async def _run_log(request: Request, gw: Gateway, slot: _Slot) -> Response:
    """A run not started yet is waited for, then followed like a running one; a running
    attempt streams until it ends (live from this node's file; from another node, once its
    log is stored). An ended attempt answers at once. The wait lasts while the client stays
    connected (Starlette cancels the stream when it leaves), and ends when the server stops:
    a queued run will not start before it restarts. An answer that would send at once and
    finds no free slot is a 503; one that waits takes its slot when it starts sending
    (waiting for one then, if need be)."""
    asked = request.query_params.get("attempt")
    if asked is not None and not (asked.isascii() and asked.isdigit() and len(asked) <= 9):
        return _err(400, f"attempt must be a whole number (attempts count from 1), got "
                         f"{asked[:20]!r}")
    run = await gw.store.get_run(request.path_params["id"])
    if run is None:
        return _err(404, "no such run")
    attempt = int(asked) if asked else run.attempt
    if asked and not 1 <= attempt <= run.attempt:
        return _err(404, f"no attempt {attempt} of this run")
    if request.method == "HEAD":
        # The head alone, at once: the body's stream ran (a followed run's until it ended)
        # with nothing sent, holding one of the MAX_LOG_STREAMS places and the connection.
        head = Response(media_type="text/plain; charset=utf-8",
                        headers={"X-Accel-Buffering": "no"} if _under_way(run, attempt) else None)
        del head.headers["content-length"]  # (not known before it is sent: not 0)
        return head
    if _under_way(run, attempt):
        if _log_here(gw, run.id, attempt) and not slot.take():
            return _no_slot()
        # nginx buffers a proxied answer by default: a followed log came all at once, at
        # the run's end. This header turns that off for this answer alone.
        return _CountedStream(slot, _stream(gw, run.id, attempt, slot),
                              headers={"X-Accel-Buffering": "no"})
    if not slot.take():
        return _no_slot()
    where, f = await opened(gw.store, gw.settings.log_path(run.id, attempt), run.id, attempt)
    return _CountedStream(slot, chunks(where, f))


def _log_here(gw: Gateway, run_id: str, attempt: int) -> bool:
    """Whether a running attempt's log is on this node to follow (in memory or its file)."""
    live = gw.dispatcher.live_log(run_id, attempt) if gw.dispatcher is not None else None
    return attempt > 0 and (live is not None or gw.settings.log_path(run_id, attempt).exists())


def _under_way(run: Run, attempt: int) -> bool:
    """Not started yet (attempt 0, still queued), or that attempt is running."""
    if attempt == 0:
        return run.status not in TERMINAL
    return run.status == "running" and run.attempt == attempt


async def _stream(gw: Gateway, run_id: str, attempt: int, slot: _Slot) -> AsyncIterator[bytes]:
    """Wait for the attempt to start (attempt 0: the run's first), then follow it, holding
    a slot from then on. A store outage meanwhile is waited out, the store asked again as
    for a queued run: the answer's status is sent, and an error now cut it off (with a
    traceback in the server's log)."""
    pause = STREAM_POLL
    while True:
        ended = None
        try:
            run = await gw.store.get_run(run_id)
            if run is None:
                return
            if attempt == 0 and run.attempt > 0:
                attempt = run.attempt
            if not _under_way(run, attempt):
                await slot.wait()
                ended = await opened(gw.store, gw.settings.log_path(run_id, attempt), run_id,
                                     attempt)
        except StoreUnavailable:
            pass  # as if still under way: its file is followed where it runs here
        if ended is not None:
            # Ended (or canceled / skipped before it started): what is stored, if anything.
            async for chunk in chunks(*ended):
                yield chunk
            return
        # A young run's log is still in memory: followed, it goes to its file now.
        if _log_here(gw, run_id, attempt):
            await slot.wait()
            try:
                path = gw.settings.log_path(run_id, attempt)
                async for chunk in _follow(gw, run_id, attempt, path):
                    yield chunk
                return
            except FileNotFoundError:  # removed meanwhile: its record holds it (next look)
                slot.give()
        # Queued, or running elsewhere (or just claimed here, its log not open yet). A server
        # shutting down starts nothing more: end rather than hold up its exit.
        if getattr(gw.dispatcher, "stopping", False):
            return
        await asyncio.sleep(pause)
        pause = min(pause * 1.5, STREAM_WAIT_MAX)  # a long queue: one look a second per client


async def _follow(gw: Gateway, run_id: str, attempt: int, path: Any) -> AsyncIterator[bytes]:
    with open(path, "rb") as f:
        while True:
            chunk = f.read(65536)
            if chunk:
                yield chunk
                continue
            if not await _still_under_way(gw, run_id, attempt):
                rest = f.read()
                if rest:
                    yield rest
                return
            await asyncio.sleep(STREAM_POLL)


async def _still_under_way(gw: Gateway, run_id: str, attempt: int) -> bool:
    """Whether a followed attempt goes on. In a store outage, this node's word: it goes on
    while it runs here (its output goes on into the file), not once it ended here (its
    result waits for the store) or was stopped (its lease lost); where this process runs
    no work (--http-workers), the store is asked again at the next look."""
    try:
        run = await gw.store.get_run(run_id)
    except StoreUnavailable:
        if (dispatcher := gw.dispatcher) is None:
            return True
        ended = dispatcher.unrecorded(run_id)
        return dispatcher.live_log(run_id, attempt) is not None and (
            ended is None or ended.attempt != attempt)
    return run is not None and _under_way(run, attempt)


MAX_ACTION_BODY = 64 * 1024  # cancel and replay take no body: a little is let through


async def _whole_request(request: Request) -> JSONResponse | None:
    """Read (and drop) the request's body before acting: one that turns out not to parse
    (a bad chunk) is answered 400, and the route, told the client left, must not have acted
    (ClientDisconnect, which the app lets end the request quietly). A 413 past the bound."""
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_ACTION_BODY:
            return _err(413, f"this endpoint takes no body (at most {MAX_ACTION_BODY} bytes)")
    return None


async def cancel(request: Request) -> Response:
    if (refused := _odd_params(request, ())) is not None:
        return refused
    if (refused := await _whole_request(request)) is not None:
        return refused
    gw = _gw(request)
    run_id = request.path_params["id"]
    if gw.dispatcher is not None:
        status = await gw.dispatcher.request_cancel(run_id)
    else:
        status = await gw.store.request_cancel(run_id, 0)
    if status is None:
        return _err(404, "no such run")
    return JSONResponse({"id": run_id, "status": status}, status_code=202)


routes = [
    Route("/api/deliveries", list_deliveries),
    Route("/api/deliveries/{id}", get_delivery),
    Route("/api/deliveries/{id}/replay", replay, methods=["POST"]),
    Route("/api/runs", list_runs),
    Route("/api/runs/{id}", get_run),
    Route("/api/runs/{id}/log", run_log),
    Route("/api/runs/{id}/cancel", cancel, methods=["POST"]),
]

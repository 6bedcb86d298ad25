"""The accept path: request -> verify (raw bytes) -> parse -> match -> journal -> 202.

The only place that turns a request into a delivery. It does no action work: it answers
as soon as the delivery and its runs are committed.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import re
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.datastructures import URL
from starlette.types import Receive, Scope

from hookrunner import bounds, clientip, hops
from hookrunner.errors import StoreUnavailable, TemplateError, VerifyError
from hookrunner.gateway import Gateway
from hookrunner.ids import new_id
from hookrunner.logs import Throttled, event
from hookrunner.offload import OFFLOAD
from hookrunner.payload import (
    PayloadError,
    as_storable,
    body_labels,
    form_json_hint,
    parse_body,
    unstorable,
)
from hookrunner.ratelimit import retry_after
from hookrunner.rawhttp import (
    Answer,
    ClientGone,
    TooLarge,
    disconnected,
    error,
    headers_of,
    query_pairs,
    read_body,
)
from hookrunner.redact import HIDDEN_KEY, HIDDEN_PATHS, redact_pairs
from hookrunner.rules.match import build_scope, concurrency_key, evaluate, render_action
from hookrunner.rules.model import Hook, Rule, Ruleset
from hookrunner.store.base import NewDelivery, NewRun
from hookrunner.templating import null_parts_fail, reads_secret
from hookrunner.units import parse_duration
from hookrunner.verify.base import Headers, SignedRequest, Verified

T = TypeVar("T")
MAX_DEDUP_KEY = 200  # longer sender ids are stored as their sha256, so a 10 KB header is harmless
MAX_WAIT = 300.0  # seconds a ?wait= may hold a request open
STOP_POLL = 0.25  # seconds between a ?wait's looks at whether a stop has begun
STORE_RETRY_AFTER = "5"
QUEUE_FULL_RETRY_AFTER = "5"  # seconds; the queue drains at --workers runs at a time
MAX_LOGGED_ID = 100  # characters of an unknown hook id logged (the client's text)


def _dedup_key(hook: Hook, verified: Verified, scope: dict[str, Any], body: bytes = b"",
               content_type: str | None = None) -> str | None:
    """The delivery's key for duplicates: the hook's `dedup` template, else (and where that
    fails or renders empty, e.g. GitHub's `ping` has no `head_commit`) the sender's id.
    `body` and `content_type` only give a failure's log line its hint (form_json_hint)."""
    key: Any = None
    hidden = False
    if hook.dedup is not None:
        # Stored and shown (API, console, logs): one read from a secret is kept as a digest.
        hidden = hook.dedup_reads_secret
        try:
            with null_parts_fail():
                key = hook.dedup.render(scope)
        except TemplateError as exc:
            _dedup_failed_log(hook=hook.id, error="(hidden: the template reads a secret header "
                              "or query value)" if hidden else str(exc),
                              hint=form_json_hint(body, content_type))
    if key is None or key in ("", [], {}) or key is False or (
            isinstance(key, str) and hook.dedup is not None and _only_literal(key, hook.dedup.source)):
        key, hidden = verified.delivery_id, False  # nothing of the event's own
    if key is None or key == "":
        return None
    # JSON's spelling for what is not text (`true`, not Python's `True`).
    text = key if isinstance(key, str) else json.dumps(key, sort_keys=True, default=str)
    # A sender's id read from the body (Stripe's `id`, in a form a JSON check never saw) may
    # hold a NUL or a lone surrogate: kept as a digest, where it failed the delivery (a 500).
    # (One that looks like a digest is made one too: it must not match a digest's key.)
    if len(text) > MAX_DEDUP_KEY or hidden or unstorable(text) or text.startswith(DIGEST):
        text = DIGEST + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return text


DIGEST = "sha256:"
_JINJA_PARTS = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)


@functools.lru_cache(maxsize=256)
def _literal_text(source: str) -> str:
    """A template's own text, without its `{{ }}` (and blocks) or any whitespace."""
    return "".join(_JINJA_PARTS.sub("", source).split())


def _only_literal(key: str, source: str) -> bool:
    """Whether a rendered key holds nothing but the template's own text: each `{{ }}` gave
    empty text or spaces (`{{ payload.a }}-{{ payload.b }}` as `-`). Not for a template with
    `{% %}` blocks, whose own text is no one fixed string."""
    return "{%" not in source and "".join(key.split()) == _literal_text(source)


_dedup_failed_log = Throttled("delivery.dedup_template_failed", logging.WARNING, per="hook")


def _key_made_of_hidden(rule: Rule, hidden: list[list[Any]]) -> bool:
    from hookrunner.actions import RUNNERS  # imports (registers) every runner; not at the top

    made_of = getattr(RUNNERS[rule.action_kind], "implicit_key_fields", None)
    return made_of is None or any(path[:1] and path[0] in made_of for path in hidden)


def _new_run(
    rule: Rule, delivery_id: str, scope: dict[str, Any], now: float, default_timeout: float,
    secret: frozenset[str] = frozenset(),
) -> NewRun:
    """Render the rule's action for this delivery. A template error is an error of that run:
    the run is journaled with the error and fails when it is dispatched.

    A template reading a secret-named header or query value, or one of `secret` (the hook's
    verifier headers), may render the secret: its place in the spec is listed under
    HIDDEN_PATHS for the API and console to hide (redact.redact_spec), and its error, which
    may quote the value, is stored without the message."""
    spec: dict[str, Any]
    key: str | None = None
    reads = [r for r in rule.request_reads if reads_secret(r.keys, secret)]
    try:
        spec = render_action(rule, scope)
        key, implicit = concurrency_key(rule, scope, spec)
        hidden = [list(r.path) for r in reads if r.path is not None]
        if hidden:
            spec[HIDDEN_PATHS] = hidden
        # The concurrency key shows as [redacted] where its template read a secret, or where
        # the action made it from values of its spec (terraform's dir and workspace) that are.
        if any(r.path is None for r in reads) or (implicit and key is not None and hidden
                                                   and _key_made_of_hidden(rule, hidden)):
            spec[HIDDEN_KEY] = True
    except TemplateError as exc:
        message = str(exc)
        if any(r.source == exc.source for r in reads):
            message = (f"in {exc.source!r}: the message is hidden, since this template reads a "
                       "secret header or query value (`hookrunner test` shows it)")
        spec = {"render_error": message}
    except Exception as exc:  # a bug here must cost this run, not the accepted delivery
        event("run.render_internal_error", logging.ERROR, rule=rule.name,
              error=f"{type(exc).__name__}: {exc}")
        spec = {"render_error": f"internal error while rendering: {type(exc).__name__}"}
    retry = rule.retry
    return NewRun(
        id=new_id("run"), delivery_id=delivery_id, rule=rule.name, action=rule.action_kind,
        spec=spec, concurrency_key=key,
        policy=rule.concurrency.policy if rule.concurrency else "queue",
        timeout=rule.timeout if rule.timeout is not None else default_timeout,
        max_attempts=retry.attempts, backoff=retry.backoff, max_backoff=retry.max_backoff,
        retry_on=retry.on, created_at=now,
    )


Planned = tuple[list[dict[str, Any]], list[NewRun]]  # the stored explanations, the runs


def plan_runs(
    ruleset: Ruleset, hook_id: str, scope: dict[str, Any], delivery_id: str, now: float,
    default_timeout: float,
) -> Planned:
    """Match the hook's rules and render a run per matching rule (used by ingest and replay).
    The explanations are returned as stored: with secret header and query values hidden."""
    token = bounds.start_delivery()
    try:
        results = evaluate(ruleset, hook_id, scope)
        hook = ruleset.hooks.get(hook_id)
        secret = hook.secret_header_names if hook is not None else frozenset()
        runs = [_new_run(r.rule, delivery_id, scope, now, default_timeout, secret)
                for r in results if r.matched]
    finally:
        bounds.end_delivery(token)
    return [r.to_json(secret) for r in results], runs


# A full queue refuses every delivery for a while: one line a second per hook says so, with a
# count (hooks are configured names, so their number is bounded).
_queue_full_log = Throttled("delivery.rejected", logging.WARNING, per="hook")
# So are a flood's rate-limited requests (the line names the last client refused), and
# deliveries refused while the store is down (a full disk: a line per request before).
_store_down_log = Throttled("delivery.store_unavailable", logging.ERROR, per="hook")
_rate_limited_log = Throttled("delivery.rejected", logging.WARNING, per="hook")


def _hook_and_reason(fields: dict[str, Any]) -> tuple[Any, str]:
    """A verifier's reason without what it quotes (`signature mismatch (URL checked: ...)`):
    a fixed few per hook, so a flood of forgeries cannot hide a sender's own problem."""
    return fields.get("hook"), str(fields.get("reason", "")).split(" (", 1)[0]


def _hook_and_kind(fields: dict[str, Any]) -> tuple[Any, str]:
    """A body's refusal without what it quotes (`body is not valid JSON: Expecting ...`,
    `unsupported content type 'image/png'`): its kind, one of a fixed few."""
    return fields.get("hook"), re.split(r"[:'(]", str(fields.get("reason", "")), maxsplit=1)[0]


# A body refused for its size, and one refused for what it holds: apart, and the latter per
# kind (bad JSON, an encoding, a content type), so that one kind never hides another.
_too_large_log = Throttled("delivery.rejected", logging.WARNING, per="hook")
_body_refused_log = Throttled("delivery.rejected", logging.WARNING, per=_hook_and_kind)


# Any client can send these as fast as it can (a hook's id is no secret): a line a second
# per hook and reason, naming the last one's client, with a count (one each was ~6,000
# lines a second, past journald's default rate limit, which then drops every line).
_unverified_log = Throttled("delivery.rejected", logging.WARNING, per=_hook_and_reason)
_address_refused_log = Throttled("delivery.rejected", logging.WARNING, per="hook")
_request_refused_log = Throttled("delivery.rejected", logging.WARNING, per="hook")

# Refused while no rules are loaded: one line a second in all (a hook id is the client's here).
_no_rules_log = Throttled("delivery.no_rules", logging.ERROR)
_unavailable_log = Throttled("delivery.hook_unavailable", logging.ERROR, per="hook")
_loop_log = Throttled("delivery.rejected", logging.WARNING, per="hook")
UNAVAILABLE_RETRY_AFTER = "60"  # seconds: its secret comes with a restart, not in a moment
# A sender still posting to a renamed hook (webhook logs "hook not found"): one line a second
# in all, naming the last id asked for (the client's, so cut short).
_unknown_hook_log = Throttled("delivery.rejected", logging.WARNING)
# A rule whose `when` errs (the stored explanation's error: secrets hidden), once a minute per
# rule (rule names are configured, so bounded).
_condition_error_log = Throttled("rule.condition_error", logging.WARNING, every=60.0, per="rule")


def report_condition_errors(gw: Gateway, matches: list[dict[str, Any]], delivery_id: str,
                            hook_id: str | None = None, body: bytes = b"",
                            headers: Headers | None = None) -> None:
    """A `when` with a typo never matches: say so (log, metric), for a delivery or a replay;
    with a hint where the body was JSON sent as a form (payload.form_json_hint)."""
    for explained in matches:
        if explained.get("error") is not None:
            gw.metrics.condition_errors.labels(explained["rule"]).inc()
            content_type = headers.get("content-type") if headers is not None else None
            ruleset = gw.rules.current
            source = None if ruleset is None else ruleset.rule_sources.get(explained["rule"])
            _condition_error_log(rule=explained["rule"], hook=hook_id, delivery_id=delivery_id,
                                 at=None if source is None else str(source),
                                 error=explained["error"],
                                 hint=form_json_hint(body, content_type))


ACCEPT_WAIT = 8.0  # seconds a delivery's write is waited for: within a sender's usual 10 s
_LATE: set[asyncio.Future[Any]] = set()  # writes answered 503 that go on (kept referenced)


def _late_write(gw: Gateway, writing: asyncio.Future[Any], hook_id: str, delivery_id: str,
                reserved: int, runs: int) -> None:
    """A delivery's write its sender was answered 503 for, while it goes on: its queue
    reservation settled, and, should it go through, said (its runs run; a resend is a
    duplicate where the sender gives an id, else it runs again)."""
    _LATE.add(writing)

    def ended(task: asyncio.Future[Any]) -> None:
        _LATE.discard(task)
        committed = 0
        if not task.cancelled() and task.exception() is None:
            result = task.result()
            committed = 0 if result.duplicate else runs
            if not result.duplicate:
                event("delivery.accepted_late", logging.WARNING, hook=hook_id,
                      delivery_id=delivery_id, runs=runs,
                      note="stored after its sender was answered 503 (the store did not "
                           "answer in time): its runs run")
        if gw.dispatcher is not None:
            gw.dispatcher.accepted(committed, reserved)

    writing.add_done_callback(ended)


def _client_of(scope: Scope, gw: Gateway, headers: Headers | None = None) -> str:
    client = scope.get("client")
    peer = client[0] if client else ""
    if not gw.trusted:
        return clientip.plain(peer)
    forwarded = (headers or headers_of(scope)).get_all("x-forwarded-for")
    return clientip.client_ip(peer, forwarded, gw.trusted)


def _bad_request(gw: Gateway, scope: Scope, hook_id: str, status: int, why: str,
                 headers: dict[str, str] | None = None) -> Answer:
    """A request refused for its method or query (a sender set up wrong, refused for ever):
    counted and said, as every other refusal of a known hook is."""
    gw.metrics.deliveries.labels(hook_id, "rejected_request").inc()
    _request_refused_log(hook=hook_id, reason=why, client=_client_of(scope, gw))
    return error(status, why, headers=headers)


def _queue_full(gw: Gateway, hook_id: str, ip: str) -> Answer:
    gw.metrics.deliveries.labels(hook_id, "rejected_queue_full").inc()
    _queue_full_log(hook=hook_id, reason="queue full", queued=gw.dispatcher.queued
                    if gw.dispatcher is not None else None, max_queued=gw.settings.max_queued,
                    client=ip)
    return error(503, "queue full", headers={"Retry-After": QUEUE_FULL_RETRY_AFTER})


async def _unless_ended(waiting: Coroutine[Any, Any, T], receive: Receive | None,
                        gw: Gateway) -> T | None:
    """`waiting`'s result; ClientGone as soon as the client leaves (a `?wait` polled the store
    until its end, up to 5 minutes, for a client long gone); None at a stop's deadline."""
    wait = asyncio.ensure_future(waiting)
    gone = asyncio.ensure_future(disconnected(receive)) if receive is not None else None
    late = asyncio.ensure_future(_stop_deadline(gw))
    try:
        await asyncio.wait({wait, late, *([gone] if gone else [])},
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        for other in (gone, late):
            if other is not None:
                other.cancel()
        if not wait.done():
            wait.cancel()
    if wait.done() and not wait.cancelled():
        return wait.result()
    if gone is not None and gone.done():
        raise ClientGone
    return None


async def _stop_deadline(gw: Gateway) -> None:
    """Returns once a stop has lasted the grace and 2 s more: by then the runs have ended or
    been canceled, and a wait still going is stuck on a store that does not answer. Before
    uvicorn's cut-off (grace + 5 s), which cancels it into a 500 for a journaled delivery."""
    while gw.answer_by is None or time.monotonic() < gw.answer_by:
        await asyncio.sleep(STOP_POLL if gw.answer_by is None
                            else max(0.01, gw.answer_by - time.monotonic()))


@dataclass(slots=True)
class Admitted:
    """A request to a hook that passed every check made before its body is read."""

    hook: Hook
    ruleset: Ruleset
    headers: Headers
    sent_query: list[tuple[str, str]]
    query: dict[str, str]
    wait: float
    ip: str
    now: float


def admit(scope: Scope, gw: Gateway, hook_id: str) -> Admitted | Answer:
    """The checks made on a request's head, before its body is read: hook, method, query,
    address, rate and queue room. An Answer is a refusal."""
    ruleset = gw.rules.current
    hook = ruleset.hooks.get(hook_id) if ruleset else None
    if hook is None or ruleset is None:
        if gw.rules.degraded:  # the other processes serve it (reload.LiveRules._load_copy)
            return error(503, "rules not loaded in this process; retry",
                         headers={"Retry-After": STORE_RETRY_AFTER})
        if ruleset is None:
            # Started with rules files that do not load: whether this hook exists is not
            # known, and a 404 tells senders it does not (some then stop sending). A 503
            # asks them to retry, and the delivery arrives once the files are fixed.
            _no_rules_log(hook=hook_id[:MAX_LOGGED_ID], client=_client_of(scope, gw))
            return error(503, "no rules are loaded (the rules files have errors; see "
                              "/readyz); retry", headers={"Retry-After": STORE_RETRY_AFTER})
        gw.metrics.unknown_hooks.inc()
        # (Its client says which sender still posts to a renamed or removed hook.)
        _unknown_hook_log(hook=hook_id[:MAX_LOGGED_ID], reason="unknown hook",
                          client=_client_of(scope, gw))
        return error(404, f"unknown hook {hook_id[:MAX_LOGGED_ID]!r}")  # (the client's text)
    m = gw.metrics.deliveries
    if scope["method"] != "POST":
        return _bad_request(gw, scope, hook_id, 405, "use POST", {"Allow": "POST"})
    sent_query = query_pairs(scope)
    if any("\x00" in name or "\x00" in value for name, value in sent_query):
        # `%00`: PostgreSQL text cannot hold NUL, so the delivery could not be journaled.
        return _bad_request(gw, scope, hook_id, 400, "the query string holds a NUL character "
                                                     "(%00), which cannot be stored")
    query = dict(sent_query)  # a repeated name keeps its last value (as Starlette)
    wait = 0.0
    if "wait" in query:
        if sum(name == "wait" for name, _ in sent_query) > 1:  # which one was meant?
            return _bad_request(gw, scope, hook_id, 400, "wait: given more than once")
        try:
            wait = min(parse_duration(query["wait"]), MAX_WAIT)
        except ValueError as exc:
            return _bad_request(gw, scope, hook_id, 400, f"wait: {exc}")

    headers = headers_of(scope)
    ip = _client_of(scope, gw, headers)
    if not clientip.allowed(ip, hook.allow_ips):
        _address_refused_log(hook=hook_id, reason="address not allowed", client=ip)
        m.labels(hook_id, "rejected_address").inc()
        return error(403, "address not allowed")
    if (hops_ := hops.too_many(headers)) is not None:
        # A rule's http action posting to a hook that leads back to it: refused before it is
        # journaled, or each delivery would make another for ever (hookrunner.hops).
        m.labels(hook_id, "rejected_loop").inc()
        _loop_log(hook=hook_id, reason="loop detected", hops=hops_, client=ip)
        return error(508, f"loop detected: {hops.HEADER} {hops_} (this request is the end of "
                          f"more than {hops.MAX_HOPS} hookrunner http actions in a row; a rule "
                          "posts to a hook that leads back to it)")
    if hook.unavailable is not None:
        # Its secret could not be read when the rules loaded: a 503 asks the sender to retry,
        # and the delivery arrives once it can be verified (reload.LiveRules._load). (After
        # the address check: an address not allowed learns nothing of the hook's state.)
        m.labels(hook_id, "rejected_unavailable").inc()
        _unavailable_log(hook=hook_id, reason="its secret could not be read when the rules "
                                              "loaded (see rules.hook_unavailable)", client=ip)
        return error(503, "this hook is unavailable: its secret could not be read when the "
                          "rules loaded (see /readyz); retry",
                     headers={"Retry-After": UNAVAILABLE_RETRY_AFTER})

    now = time.time()
    if hook.rate_limit is not None:
        rl = hook.rate_limit
        delay = gw.limiter.take((hook_id, clientip.bucket(ip) if rl.per_client else ""),
                                rl.rate, rl.burst, now)
        if delay > 0:
            m.labels(hook_id, "rejected_rate").inc()
            _rate_limited_log(hook=hook_id, reason="rate limited", client=ip)
            return error(429, "rate limited", headers={"Retry-After": retry_after(delay)})

    # Backpressure before journaling: past --max-queued nothing new is accepted, so nothing
    # accepted is ever dropped. This early check spares reading the body of a full queue;
    # the exact one (a reservation) is made once the delivery's runs are known.
    if gw.dispatcher is not None and gw.dispatcher.queued >= gw.settings.max_queued:
        return _queue_full(gw, hook_id, ip)
    return Admitted(hook, ruleset, headers, sent_query, query, wait, ip, now)


def out_of_memory(hook_id: str) -> Answer:
    """Large bodies at once past the process's memory, before anything is journaled: a
    sender retries a 503 (GitHub does not retry a 500), and the others' deliveries go on.
    (Past the journal, a MemoryError is an internal error like any other: the delivery is
    stored, and a 503 would have it sent again.)"""
    event("delivery.rejected", logging.WARNING, hook=hook_id, reason="out of memory")
    return error(503, "out of memory: try again later", headers={"Retry-After": "5"})


async def accept(scope: Scope, receive: Receive, gw: Gateway, hook_id: str) -> Answer:
    """The answer to one request to `/hooks/{hook_id}` (plain ASGI: see rawhttp)."""
    admitted = admit(scope, gw, hook_id)
    if isinstance(admitted, Answer):
        return admitted
    hook = admitted.hook
    try:
        body = await read_body(receive, admitted.headers.get("content-length"), hook.max_body)
    except MemoryError:
        return out_of_memory(hook_id)
    except TooLarge:
        gw.metrics.deliveries.labels(hook_id, "rejected_too_large").inc()
        _too_large_log(hook=hook_id, reason="body too large", client=admitted.ip)
        return error(413, f"body larger than {hook.max_body} bytes")
    return await accept_body(scope, admitted, body, gw, hook_id, receive)


def _signed_url(scope: Scope, headers: Headers, gw: Gateway) -> str:
    """The URL the sender was given, for schemes that sign it (Twilio), as Starlette builds
    it: its path under the path prefix (off by now), and behind a --trusted-proxy that
    terminated TLS the scheme and host it says (`X-Forwarded-Proto`/`-Host`, which the
    README's nginx sets), as the console believes them."""
    client = scope.get("client")
    scheme, host = clientip.forwarded_origin(client[0] if client else "", gw.trusted,
                                             headers.get_all("x-forwarded-proto"),
                                             headers.get_all("x-forwarded-host"))
    public: dict[str, Any] = {**scope, "path": gw.settings.path_prefix + scope["path"]}
    if scheme:
        public["scheme"] = scheme
    if host:
        public["headers"] = [(k, v) for k, v in scope["headers"] if k != b"host"] + \
            [(b"host", host.encode("latin-1", "replace"))]
    return str(URL(scope=public))


async def accept_body(scope: Scope, admitted: Admitted, body: bytes, gw: Gateway, hook_id: str,
                      receive: Receive | None) -> Answer:
    """The rest, once the body is read: verify, parse, match, journal. Without `receive`
    (httpproto's hook lane, which takes no `?wait`) a client leaving is not watched for."""
    hook, ruleset, headers, query = admitted.hook, admitted.ruleset, admitted.headers, admitted.query
    sent_query, wait, ip, now = admitted.sent_query, admitted.wait, admitted.ip, admitted.now
    m = gw.metrics.deliveries
    url = _signed_url(scope, headers, gw) if getattr(hook.verifier, "uses_url", False) else ""
    signed = SignedRequest(headers=headers, body=body, url=url, query=query, client_ip=ip, now=now)
    try:
        verified = hook.verifier.verify(signed)
    except VerifyError as exc:
        # The reason is logged for the operator; the sender only learns that it failed.
        _unverified_log(hook=hook_id, reason=exc.reason, client=ip)
        m.labels(hook_id, "rejected_signature").inc()
        challenge = getattr(hook.verifier, "challenge", None)
        return error(401, "verification failed",
                     headers={"WWW-Authenticate": challenge} if challenge else None)
    if verified.reply is not None:
        # A sender's set-up handshake (Slack's url_verification), not a delivery.
        event("delivery.handshake", hook=hook_id, event_type=verified.event)
        m.labels(hook_id, "handshake").inc()
        return Answer(200, dict(verified.reply))

    def decide() -> tuple[Headers, str | None, str, dict[str, Any], Planned]:
        payload = parse_body(body, *body_labels(headers))
        delivery_id = new_id("dlv")
        utf8 = headers.as_utf8()  # verified on the wire bytes; read as text from here
        # Read from the body by some verifiers (Stripe's `type`), unchecked as the id is.
        event_type = as_storable(verified.event) if verified.event is not None else None
        scope_ = build_scope(hook=hook_id, delivery_id=delivery_id, received_at=now,
                             headers=utf8, query=query, payload=payload, event=event_type,
                             client_ip=ip or None)
        planned = plan_runs(ruleset, hook_id, scope_, delivery_id, now,
                            gw.settings.default_timeout)
        return utf8, event_type, delivery_id, scope_, planned

    try:
        headers, event_type, delivery_id, scope_, (matches, runs) = \
            await OFFLOAD.run(hook_id, len(body), decide)
    except MemoryError:
        return out_of_memory(hook_id)
    except PayloadError as exc:
        m.labels(hook_id, "rejected_body").inc()
        _body_refused_log(hook=hook_id, reason=exc.message[:200], client=ip)
        return error(exc.status, exc.message)
    delivery = NewDelivery(
        id=delivery_id, hook=hook_id, received_at=now,
        headers=redact_pairs(headers.items(), hook.secret_headers), body=body,
        dedup_key=_dedup_key(hook, verified, scope_, body, headers.get("content-type")),
        event=event_type, client_ip=ip,
        matches=matches, query=redact_pairs(sent_query, hook.secret_query),
        verifier=hook.verify_kind,
    )
    # The parsed payload (hundreds of small objects) goes now, not after the commit: the
    # next deliveries' parses then reuse its memory while it is still in the CPU's caches
    # (measured: parsing a 5.4 KB push took 70-80 µs instead of 130-150 under load).
    del scope_
    reserved = 0
    if gw.dispatcher is not None:
        if not gw.dispatcher.admit(len(runs)):
            return _queue_full(gw, hook_id, ip)
        reserved = len(runs)
    committed = 0
    settled = True  # the reservation is settled here (else when a late write ends)
    try:
        if not gw.store.shared:  # SQLite's writer has its own bounds (busy timeouts)
            result = await gw.store.accept(delivery, runs)
        else:
            writing = asyncio.ensure_future(gw.store.accept(delivery, runs))
            try:
                await asyncio.wait({writing}, timeout=ACCEPT_WAIT)
            except asyncio.CancelledError:
                writing.cancel()  # (as an awaited write was, with its request)
                raise
            if not writing.done():
                # A database that does not answer at all (frozen, its kernel still
                # acknowledging) held the sender for as long as it lasted, 10 minutes and
                # more. It hears 503 in time; the write goes on, and should it go through,
                # the delivery runs.
                settled = False
                _late_write(gw, writing, hook_id, delivery_id, reserved, len(runs))
                _store_down_log(hook=hook_id, error=f"the store did not answer within "
                                                    f"{ACCEPT_WAIT:g} s")
                m.labels(hook_id, "rejected_store").inc()
                return error(503, "store not answering",
                             headers={"Retry-After": STORE_RETRY_AFTER})
            result = writing.result()
        committed = 0 if result.duplicate else len(runs)
    except StoreUnavailable as exc:
        _store_down_log(hook=hook_id, error=str(exc))
        m.labels(hook_id, "rejected_store").inc()
        return error(503, "store unavailable", headers={"Retry-After": STORE_RETRY_AFTER})
    finally:
        if gw.dispatcher is not None and settled:
            gw.dispatcher.accepted(committed, reserved)  # a reservation never leaks

    if result.duplicate:
        m.labels(hook_id, "duplicate").inc()
        # The sender's own id too, where a `dedup` template made the key (two events with
        # one key: a template on a field they share).
        own = verified.delivery_id
        event("delivery.duplicate", hook=hook_id, delivery_id=result.delivery_id,
              sender_id=delivery.dedup_key, sender_delivery=own[:MAX_DEDUP_KEY]
              if own and hook.dedup is not None and own != delivery.dedup_key else None)
        dup: dict[str, Any] = {"duplicate": True, "delivery_id": result.delivery_id,
                               "runs": result.run_ids,
                               "status_url": _status_url(gw, result.delivery_id)}
        # A `?wait` retry (its first try timed out) waits for the first one's runs: their
        # ends, not their output (a key may be guessed where the verifier signs no id).
        waited = await _waited(gw, dup, result.run_ids, wait, receive)
        if waited is not None:
            waited.doc["runs"] = [{k: v for k, v in r.items() if k != "output"}
                                  for r in waited.doc["runs"]]
        return waited or Answer(200, dup)

    gw.metrics.delivery(hook_id, "accepted").inc()
    report_condition_errors(gw, matches, delivery_id, hook_id, body, headers)  # only if stored
    event("delivery.accepted", hook=hook_id, delivery_id=delivery_id, event_type=event_type,
          sender_id=delivery.dedup_key, runs=",".join(f"{r.rule}={r.id}" for r in runs) or None)
    answer: dict[str, Any] = {
        "delivery_id": delivery_id,
        "runs": result.run_ids,
        "status_url": _status_url(gw, delivery_id),
    }
    if wait > 0 and gw.dispatcher is not None and not result.run_ids:
        return Answer(200, answer)  # no rule matched: nothing is left to wait for
    return await _waited(gw, answer, result.run_ids, wait, receive) or Answer(202, answer)


def _status_url(gw: Gateway, delivery_id: str) -> str:
    return f"{gw.settings.path_prefix}/api/deliveries/{delivery_id}"


async def _waited(gw: Gateway, answer: dict[str, Any], run_ids: list[str], wait: float,
                  receive: Receive | None) -> Answer | None:
    """`?wait`: 200 with the runs' ends once they have all ended in time, else None."""
    if wait > 0 and gw.dispatcher is not None and run_ids:
        waiting = gw.dispatcher.wait_for(run_ids, wait, lambda: gw.stopping)
        try:
            finished = await _unless_ended(waiting, receive, gw)
        except StoreUnavailable:  # the delivery is journaled: 202, never a 500 to resend on
            finished = None
        if finished is not None:
            return Answer(200, {**answer, "runs": finished})
    return None

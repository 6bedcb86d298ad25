"""The console's pages (GET): deliveries, a delivery, a run, the rules."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from hookrunner.api import unrecorded
from hookrunner.console import deliveries, present
from hookrunner.console.context import base, gateway
from hookrunner.console.once import WINDOW
from hookrunner.console.render import page
from hookrunner.gateway import Gateway
from hookrunner.payload import form_json_hint
from hookrunner.redact import redact_spec, shown_key
from hookrunner.replay import NOTE_REDACTED, reads_redacted
from hookrunner.store.base import RUN_STATUSES, TERMINAL, Run
from hookrunner.verify.base import Headers
from hookrunner.waiting import describe as describe_waiting
from hookrunner.waiting import waiting_for

LOG_PAGE_LIMIT = 2 * 1024 * 1024  # bytes of a finished run's log put in the page; the API has all
LIVE_POLL_MS = 2000  # how often the deliveries list asks for fresh rows


def not_found(request: Request, what: str) -> Response:
    return page("error.html", 404, **base(request, ""), title="Not found",
                message=f"No {what} with that id (it may have been pruned).")


def store_unavailable(request: Request) -> Response:
    """The store cannot be reached (a database outage): a page that says so, as the API's 503."""
    response = page("error.html", 503, **base(request, ""), title="Store unavailable",
                    message="The database cannot be reached right now. Hooks answer 503 with "
                            "Retry-After meanwhile; this page works again once it is back.")
    response.headers["Retry-After"] = "5"
    return response


async def deliveries_page(request: Request) -> Response:
    gw = gateway(request)
    f = deliveries.parse_filters(request.query_params)
    rows = await deliveries.rows(gw, f)
    return page("deliveries.html", **base(request, "deliveries"), filters=f,
                rows=rows[:f.limit], older=len(rows) > f.limit, hooks=deliveries.hook_choices(gw, f),
                statuses=[*RUN_STATUSES, deliveries.NO_RUNS], since_choices=deliveries.SINCE_CHOICES,
                poll_ms=LIVE_POLL_MS)


async def deliveries_rows(request: Request) -> Response:
    """Just the table body, for the list's live refresh."""
    gw = gateway(request)
    f = deliveries.parse_filters(request.query_params)
    return page("_delivery_rows.html", **base(request, "deliveries"), filters=f,
                rows=(await deliveries.rows(gw, f))[:f.limit])


async def delivery_page(request: Request, *, notice: str = "", error: str = "",
                        status_code: int = 200) -> Response:
    gw = gateway(request)
    d = await gw.store.get_delivery(request.path_params["id"])
    if d is None:
        return not_found(request, "delivery")
    runs = sorted(await gw.store.list_runs(delivery_id=d.id, limit=500), key=lambda r: r.seq)
    replayed = _replayed(request, runs)
    if replayed is not None and not notice:
        notice = (f"Replay queued {len(replayed)} run{'s' if len(replayed) != 1 else ''}."
                  if replayed else "Replay matched no rule: nothing was queued.")
        erred = _erred(request, gw)
        if erred:
            notice += (f" The condition (when) of {', '.join(erred)} could not be evaluated (the log's "
                       "rule.condition_error line says why).")
        unmatched = _erred(request, gw, "unmatched")
        if unmatched:
            notice += (f" {', '.join(unmatched)} matched it on arrival and does not now (see "
                       "the conditions below)" + (f"; {NOTE_REDACTED}." if reads_redacted(d)
                                                  else "."))
        if request.query_params.get("again"):
            notice = (f"Replay was pressed again within {WINDOW:.0f} s (a double click?): it "
                      f"replayed once. {notice} Wait {WINDOW:.0f} s to replay it once more.")
    kind, payload = present.payload_view(d.body, Headers(d.headers).get("content-type"),
                                         f"{gw.settings.path_prefix}/api/deliveries/{d.id}")
    # JSON sent as a form (`curl -d` without a Content-Type): said where the evaluation is.
    hint = form_json_hint(d.body, Headers(d.headers).get("content-type"))
    return page("delivery.html", status_code, **base(request, "deliveries"), d=d, runs=runs,
                payload_kind=kind, payload=payload, notice=notice, error=error, hint=hint,
                highlight=set(replayed or ()), rules=_rule_sources(gw),
                verifier=d.verifier or "")


def _erred(request: Request, gw: Gateway, key: str = "erred") -> list[str]:
    """The rules whose `when` erred on the replay just made (or with `unmatched`, that
    matched on arrival and not now; named in the redirect), limited to rules that exist: a
    crafted link cannot put other words on the page."""
    current = gw.rules.current
    names = {r.name for r in current.rules} if current is not None else set()
    return [n for n in request.query_params.get(key, "").split(",") if n in names]


def _replayed(request: Request, runs: list[Run]) -> list[str] | None:
    """The runs a replay just queued (named in the redirect), limited to this delivery's runs."""
    raw = request.query_params.get("replayed")
    if raw is None:
        return None
    ids = {r.id for r in runs}
    return [i for i in raw.split(",") if i in ids]


def _rule_sources(gw: Gateway) -> dict[str, str]:
    current = gw.rules.current
    if current is None:
        return {}
    return {r.name: present.source_text(r.source, gw.settings.rules) for r in current.rules}


async def run_page(request: Request) -> Response:
    gw = gateway(request)
    run = await gw.store.get_run(request.path_params["id"])
    if run is None:
        return not_found(request, "run")
    delivery = await gw.store.get_delivery(run.delivery_id)
    attempts = await gw.store.attempts(run.id)
    going = run.status not in TERMINAL  # Cancel is offered on each of its pages
    # `?attempt=N`: an earlier attempt's output, shown as the page shows output (its link
    # opened the API's raw text: terminal escapes and bidi controls as they came).
    asked = request.query_params.get("attempt", "")
    shown = int(asked) if asked.isascii() and asked.isdigit() and len(asked) < 6 else run.attempt
    if not 1 <= shown <= run.attempt:
        shown = run.attempt
    # The current attempt of a run still going is followed by the page's script; one that
    # ended (a run waiting for its retry) is shown meanwhile, until the next one starts.
    live = going and shown == run.attempt
    streaming = live and run.status == "running"
    log = "" if streaming else await _finished_log(gw, run, shown)
    waiting = None
    if run.status == "queued":
        running = await gw.store.list_runs(status="running", limit=1000)
        ahead = await gw.store.list_runs(status="queued", limit=1000, before=run.id) \
            if run.concurrency_key is not None else []
        waiting = describe_waiting(waiting_for(run, running, time.time(), ahead),
                                   present.iso_time)
    return page("run.html", **base(request, "deliveries"), run=run, delivery=delivery,
                attempts=attempts, live=live, going=going, streaming=streaming, log=log,
                key=shown_key(run.concurrency_key, run.spec),
                spec=present.pretty_json(redact_spec(run.spec, run.action)),
                outputs=present.pretty_json(redact_spec(run.outputs)) if run.outputs else "",
                duration=present.run_duration(run, time.time(), attempts), waiting=waiting,
                shown=shown, unrecorded=unrecorded(gw, run))


async def _finished_log(gw: Gateway, run: Run, attempt: int) -> str:
    if attempt < 1:
        return ""
    path = gw.settings.log_path(run.id, attempt)
    if path.exists():
        with open(path, "rb") as f:
            data = f.read(LOG_PAGE_LIMIT + 1)
        text, more = data[:LOG_PAGE_LIMIT].decode("utf-8", errors="replace"), len(data) > LOG_PAGE_LIMIT
        unit = "bytes"
    else:  # the record's copy (another node's run, one under a second): cut in the store
        text, more = await gw.store.get_log_head(run.id, attempt, LOG_PAGE_LIMIT) or ("", False)
        unit = "characters"
    if more:
        text += (f"\n… (cut at {LOG_PAGE_LIMIT} {unit}: the full log is at "
                 f"{gw.settings.path_prefix}/api/runs/{run.id}/log?attempt={attempt})")
    return text


async def rules_page(request: Request) -> Response:
    gw = gateway(request)
    live = gw.rules
    current = live.current
    base_dir = gw.settings.rules
    hooks: list[dict[str, Any]] = []
    rules: list[dict[str, Any]] = []
    if current is not None:
        for h in sorted(current.hooks.values(), key=lambda h: h.id):
            hooks.append({"id": h.id, "verify": h.verify_kind,
                          "source": present.source_text(h.source, base_dir),
                          "allow_ips": ", ".join(str(n) for n in h.allow_ips), "max_body": h.max_body,
                          "rate_limit": h.rate_limit, "unavailable": h.unavailable,
                          "rules": [r.name for r in current.rules if h.id in r.hooks],
                          "description": h.description})
        for r in current.rules:
            rules.append({"name": r.name, "hooks": ", ".join(r.hooks), "action": r.action_kind,
                          "source": present.source_text(r.source, base_dir),
                          "when": present.when_text(r.when), "timeout": r.timeout,
                          "retry": r.retry.attempts,
                          "concurrency": r.concurrency.policy if r.concurrency else "",
                          "key": (r.concurrency.key.source if r.concurrency.key is not None
                                  else "(default)") if r.concurrency else "",
                          "description": r.description})
    return page("rules.html", **base(request, "rules"), hooks=hooks, rules=rules,
                errors=live.errors, loaded=current is not None, loaded_at=live.loaded_at,
                last_attempt_at=live.last_attempt_at, rules_dir=str(base_dir),
                warnings=list(current.warnings) if current is not None else [])


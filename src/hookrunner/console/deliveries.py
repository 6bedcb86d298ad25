"""The deliveries list: filters, and the rows it shows (also served alone for live updates)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from urllib.parse import urlencode

from starlette.datastructures import QueryParams

from hookrunner.gateway import Gateway
from hookrunner.store.base import RUN_STATUSES, Delivery, Run, Store
from hookrunner.units import parse_duration

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
SCAN_LIMIT = 1000  # newest deliveries looked at when a status or time filter thins them out
RUNS_PER_ROW = 20
NO_RUNS = "none"  # status filter: deliveries that matched no rule
SINCE_CHOICES = ("15m", "1h", "6h", "24h", "7d")


@dataclass(frozen=True)
class Filters:
    hook: str = ""
    status: str = ""
    since: str = ""
    limit: int = DEFAULT_LIMIT
    problems: list[str] = field(default_factory=list)
    before: str = ""  # the page after this delivery (the "older" link); the form starts anew

    @property
    def since_seconds(self) -> float | None:
        return parse_duration(self.since) if self.since else None

    def query(self) -> str:
        return urlencode([(k, v) for k, v in (("hook", self.hook), ("status", self.status),
                                                ("since", self.since)) if v])

    def page_query(self, before: str | None = None) -> str:
        """This page's query (the live refresh's), or with `before` the next older page's."""
        cursor = self.before if before is None else before
        more = [("limit", str(self.limit))] if self.limit != DEFAULT_LIMIT else []
        more += [("before", cursor)] if cursor else []
        return "&".join(q for q in (self.query(), urlencode(more)) if q)


def parse_filters(q: QueryParams) -> Filters:
    """Filters from the query string; a bad value is dropped and reported, never an error page."""
    problems: list[str] = []
    status = q.get("status", "")
    if status and status not in (*RUN_STATUSES, NO_RUNS):
        problems.append(f"unknown status {status!r}")
        status = ""
    since = q.get("since", "").strip()
    if since:
        try:
            parse_duration(since)
        except ValueError as exc:  # (its reason: a form, or past the longest)
            problems.append(f"since: {exc}")
            since = ""
    try:
        limit = max(1, min(int(q.get("limit", DEFAULT_LIMIT)), MAX_LIMIT))
    except ValueError:
        limit = DEFAULT_LIMIT
    return Filters(q.get("hook", "").strip(), status, since, limit, problems,
                   q.get("before", "").strip())


@dataclass(frozen=True)
class Row:
    delivery: Delivery
    runs: list[Run]
    via: str | None = None  # with a run status filter: the run (of that status) it came by

    @property
    def cursor(self) -> str:
        """What the "older" link pages on after this row (see rows)."""
        return self.via or self.delivery.id

    @property
    def matched(self) -> list[str]:
        return [str(m.get("rule")) for m in self.delivery.matches if m.get("matched")]


async def rows(gw: Gateway, f: Filters) -> list[Row]:
    """The page's rows, and one more where there are more (the "older" link's sign). Pages
    go on from `f.before`: a delivery id, or with a run status filter a run id (see
    _by_run_status)."""
    if f.status and f.status != NO_RUNS:
        return await _by_run_status(gw.store, f)
    store = gw.store
    want = f.limit + 1
    since = f.since_seconds
    cutoff = time.time() - since if since is not None else None
    cursor = await store.get_delivery(f.before) if f.before else None
    if f.before and cursor is None:
        return []  # removed by --keep since its page was shown: nothing older is left either
    thinned = bool(f.status or f.since)
    found = await store.list_deliveries(f.hook or None, SCAN_LIMIT if thinned else want,
                                        before=cursor.id if cursor is not None else None)
    if cutoff is not None:
        found = [d for d in found if d.received_at >= cutoff]
    out: list[Row] = []
    for d in found:
        if f.status == NO_RUNS and d.run_ids:
            continue
        runs = await store.list_runs(delivery_id=d.id, limit=RUNS_PER_ROW) if d.run_ids else []
        out.append(Row(d, sorted(runs, key=lambda r: r.seq)))
        if len(out) >= want:
            break
    return out


async def _by_run_status(store: Store, f: Filters) -> list[Row]:
    """Deliveries in the order of their newest run with that status (newest first), however
    old the deliveries: a failed run behind a thousand newer deliveries is still found, and
    a replayed old delivery comes where its new run does. Paged by run: `f.before` is the
    run the last row came by, and a delivery with a run of that status after it was shown
    on an earlier page."""
    want = f.limit + 1
    since = f.since_seconds
    cutoff = time.time() - since if since is not None else None
    after = await store.get_run(f.before) if f.before else None
    if f.before and after is None:
        return []  # removed by --keep since its page was shown
    scanned = await store.list_runs(status=f.status, limit=SCAN_LIMIT,
                                    before=after.id if after is not None else None)
    out: list[Row] = []
    seen: set[str] = set()
    for run in scanned:  # newest first: a delivery comes by its newest run of the status
        delivery_id, via = run.delivery_id, run.id
        if delivery_id in seen:
            continue
        seen.add(delivery_id)
        d = await store.get_delivery(delivery_id)
        if d is None or (f.hook and d.hook != f.hook) or (
                cutoff is not None and d.received_at < cutoff):
            continue
        runs = await store.list_runs(delivery_id=d.id, limit=RUNS_PER_ROW)
        if after is not None and any(r.status == f.status and r.seq >= after.seq for r in runs):
            continue  # its newest such run is newer than the cursor: shown already
        out.append(Row(d, sorted(runs, key=lambda r: r.seq), via=via))
        if len(out) >= want:
            break
    return out


def hook_choices(gw: Gateway, f: Filters) -> list[str]:
    hooks = set(gw.rules.current.hooks) if gw.rules.current is not None else set()
    if f.hook:
        hooks.add(f.hook)
    return sorted(hooks)

"""Row <-> record conversion shared by the SQL backends (JSON columns, booleans)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from hookrunner import jsontext
from hookrunner.concurrency import Decision, superseded_reason
from hookrunner.redact import redact_pairs
from hookrunner.store.base import Attempt, Delivery, NewDelivery, NewRun, Run


class RowLike(Protocol):
    """sqlite3.Row and psycopg's dict rows alike."""

    def __getitem__(self, key: str, /) -> Any: ...


CANCELED_BEFORE_START = "canceled before it started"
CANCELED_BEFORE_RETRY = "canceled while waiting for its next attempt"
# An attempt that ended (failed, or its node died) after a cancel was asked for: no retry.
# (A timed-out attempt still being stopped as the cancel came said it had "ended before".)
CANCELED_INSTEAD_OF_RETRY = ("canceled by request (not retried: its attempt ended, or was being "
                             "stopped, or its node stopped, as the cancel came)")


# Listing filters: parameter name -> column (store/sql/*/queries.sql: list_runs, list_deliveries).
# A filter is a column compared for equality, or a condition with `{}` for its placeholder.
# `before` (a listing's cursor: the last id of the page before) takes what comes after that
# row in the listing's order; an id no longer stored lists nothing.
RUN_FILTERS = {"status": "r.status", "delivery_id": "r.delivery_id", "rule": "r.rule",
               "before": "r.seq < (SELECT seq FROM runs WHERE id = {})"}
DELIVERY_FILTERS = {"hook": "hook", "before": "(received_at, id) < "
                    "(SELECT received_at, id FROM deliveries WHERE id = {})"}


def listing(template: str, filters: dict[str, str], params: dict[str, Any],
            placeholder: Callable[[str], str]) -> str:
    """A listing query with a condition for each filter given and none for the others, so
    each form has a plan that uses its index (`col = :x` only where `x` is set)."""
    conds = [column.format(placeholder(name)) if "{}" in column
             else f"{column} = {placeholder(name)}"
             for name, column in filters.items() if params.get(name) is not None]
    where = f"WHERE {' AND '.join(conds)}" if conds else ""
    return template.replace("{where}", where).replace("{limit}", placeholder("limit"))


def _json(value: Any) -> Any:
    # SQLite hands back TEXT, PostgreSQL's jsonb arrives decoded.
    if type(value) is str:
        return _DECODE(value)  # (what hookrunner wrote: no BOM, no bytes to sniff)
    return json.loads(value) if isinstance(value, str | bytes) else value


_DECODE = json.JSONDecoder().decode  # json.loads' own, without its per-call checks


dumps = jsontext.encoder(separators=(",", ":"))


def delivery_params(d: NewDelivery) -> dict[str, Any]:
    return {
        "id": d.id, "hook": d.hook, "received_at": d.received_at,
        "headers": dumps(d.headers), "body": d.body,
        "dedup_key": d.dedup_key, "event": d.event, "client_ip": d.client_ip,
        "matches": dumps(d.matches), "query_params": dumps(d.query), "verifier": d.verifier,
    }


def supersede_params(decision: Decision, now: float) -> list[dict[str, Any]]:
    """The `supersede_waiting` statement's parameters, one set per newest run."""
    return [{"id": r.id, "key": r.concurrency_key, "seq": r.seq, "now": now,
             "reason": superseded_reason(r)} for r in decision.supersede]


def repoint_params(decision: Decision) -> list[dict[str, Any]]:
    """The `repoint_superseded` statement's parameters: each replace/coalesce run that starts."""
    return [{"by": r.id} for r in decision.claim if r.policy in ("replace", "coalesce")]


def run_params(r: NewRun, now: float) -> dict[str, Any]:
    created = r.created_at or now
    return {
        "id": r.id, "delivery_id": r.delivery_id, "rule": r.rule, "action": r.action,
        "spec": dumps(r.spec), "concurrency_key": r.concurrency_key, "policy": r.policy,
        "timeout": r.timeout, "max_attempts": r.max_attempts, "backoff": r.backoff,
        "max_backoff": r.max_backoff, "retry_on": dumps(list(r.retry_on)),
        "created_at": created, "next_attempt_at": created,
    }


def run_from_row(row: RowLike) -> Run:
    return Run(
        id=row["id"], seq=row["seq"], delivery_id=row["delivery_id"], rule=row["rule"],
        action=row["action"], spec=_json(row["spec"]), status=row["status"],
        attempt=row["attempt"], concurrency_key=row["concurrency_key"], policy=row["policy"],
        timeout=row["timeout"], max_attempts=row["max_attempts"], backoff=row["backoff"],
        max_backoff=row["max_backoff"], retry_on=tuple(_json(row["retry_on"])),
        created_at=row["created_at"], next_attempt_at=row["next_attempt_at"],
        started_at=row["started_at"], finished_at=row["finished_at"],
        exit_code=row["exit_code"], reason=row["reason"], outputs=_json(row["outputs"]),
        lease_owner=row["lease_owner"], lease_expires=row["lease_expires"],
        cancel_requested=bool(row["cancel_requested"]), superseded_by=row["superseded_by"],
        hook=row["hook"] or "",
    )


def delivery_from_row(row: RowLike, run_ids: list[str]) -> Delivery:
    # Redacted again as read: a delivery stored by a version that redacted fewer names (or
    # none) must not show them now that they are known to be secrets.
    return Delivery(
        id=row["id"], hook=row["hook"], received_at=row["received_at"],
        headers=redact_pairs((h[0], h[1]) for h in _json(row["headers"])),
        body=bytes(row["body"]),
        dedup_key=row["dedup_key"], event=row["event"], client_ip=row["client_ip"],
        matches=_json(row["matches"]), run_ids=run_ids, replay_of=row["replay_of"],
        query=redact_pairs((q[0], q[1]) for q in _json(row["query_params"])),
        verifier=row["verifier"],
    )


def attempt_from_row(row: RowLike) -> Attempt:
    return Attempt(
        run_id=row["run_id"], attempt=row["attempt"], node=row["node"], status=row["status"],
        exit_code=row["exit_code"], reason=row["reason"], started_at=row["started_at"],
        finished_at=row["finished_at"],
    )

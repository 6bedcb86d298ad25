"""An in-memory store for unit tests: the same semantics as the SQL backends, no durability."""

from __future__ import annotations

import asyncio
import copy
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from hookrunner.concurrency import decide, superseded_reason
from hookrunner.errors import DeliveryGone
from hookrunner.redact import HIDDEN_KEY, ended_key, ended_spec, redact_pairs
from hookrunner.store._rows import (
    CANCELED_BEFORE_RETRY,
    CANCELED_BEFORE_START,
    CANCELED_INSTEAD_OF_RETRY,
    dumps,
    repoint_params,
)
from hookrunner.store._wake import wait_event
from hookrunner.store.base import (
    LISTED_SPEC,
    RUN_STATUSES,
    TERMINAL,
    AcceptResult,
    Attempt,
    Claimed,
    Delivery,
    Finish,
    NewDelivery,
    NewRun,
    Run,
    skipped,
)


class MemoryStore:
    shared = False  # see Store.shared

    def __init__(self) -> None:
        self._deliveries: dict[str, Delivery] = {}
        self._dedup: dict[tuple[str, str], str] = {}
        self._runs: dict[str, Run] = {}
        self._attempts: dict[tuple[str, int], Attempt] = {}
        self._logs: dict[tuple[str, int], str] = {}
        self._seq = itertools.count(1)
        self._wake = asyncio.Event()

    async def open(self, migrate: bool = True) -> None:
        return None

    async def close(self) -> None:
        return None

    async def lock_node(self, node: str) -> bool:
        return True  # one process by construction

    async def ping(self) -> bool:
        return True

    async def wait_for_work(self, timeout: float) -> bool:
        return await wait_event(self._wake, timeout)

    def _copy(self, run: Run) -> Run:
        out = copy.deepcopy(run)
        out.hook = self._deliveries[run.delivery_id].hook
        return out

    def _add(self, runs: Sequence[NewRun]) -> list[str]:
        now = time.time()
        for r in runs:
            created = r.created_at or now
            self._runs[r.id] = Run(
                id=r.id, seq=next(self._seq), delivery_id=r.delivery_id, rule=r.rule,
                action=r.action, spec=copy.deepcopy(r.spec), status="queued", attempt=0,
                concurrency_key=r.concurrency_key, policy=r.policy, timeout=r.timeout,
                max_attempts=r.max_attempts, backoff=r.backoff, max_backoff=r.max_backoff,
                retry_on=tuple(r.retry_on), created_at=created, next_attempt_at=created,
            )
            self._deliveries[r.delivery_id].run_ids.append(r.id)
        return [r.id for r in runs]

    async def accept(self, delivery: NewDelivery, runs: Sequence[NewRun]) -> AcceptResult:
        if delivery.dedup_key is not None:
            seen = self._dedup.get((delivery.hook, delivery.dedup_key))
            if seen is not None:
                return AcceptResult(seen, True, list(self._deliveries[seen].run_ids))
            self._dedup[(delivery.hook, delivery.dedup_key)] = delivery.id
        self._deliveries[delivery.id] = Delivery(
            id=delivery.id, hook=delivery.hook, received_at=delivery.received_at,
            headers=redact_pairs(delivery.headers), body=delivery.body,  # as the SQL stores read
            dedup_key=delivery.dedup_key, event=delivery.event, client_ip=delivery.client_ip,
            matches=copy.deepcopy(delivery.matches), query=redact_pairs(delivery.query),
            verifier=delivery.verifier,
        )
        ids = self._add(runs)
        if ids:
            self._wake.set()
        return AcceptResult(delivery.id, False, ids)

    async def add_runs(self, runs: Sequence[NewRun]) -> None:
        if any(r.delivery_id not in self._deliveries for r in runs):
            raise DeliveryGone(runs[0].delivery_id)
        self._add(runs)
        self._wake.set()

    def _repoint(self, by: str) -> None:
        """As the SQL stores' repoint_superseded: what names a skipped run on the way to
        `by` names `by`."""
        chain, todo = set(), [by]
        while todo:
            named = todo.pop()
            for r in self._runs.values():
                if r.superseded_by == named and r.status == "skipped" and r.id not in chain:
                    chain.add(r.id)
                    todo.append(r.id)
        for r in self._runs.values():
            if r.superseded_by in chain and r.status in ("skipped", "canceled"):
                r.reason = r.reason.replace(r.superseded_by, by)
                r.superseded_by = by

    async def claim(self, node: str, limit: int, lease: float, now: float) -> Claimed:
        candidates = [
            r for r in self._runs.values() if r.status == "queued" and r.next_attempt_at <= now
        ]
        running = [r for r in self._runs.values() if r.status == "running"]
        later = [r for r in self._runs.values() if r.status == "queued"
                 and r.concurrency_key is not None and r.next_attempt_at > now]
        decision = decide(candidates, running, limit, later)
        for r, reason, superseded_by in decision.skip:
            r.status, r.reason, r.superseded_by, r.finished_at = (
                "skipped", reason, superseded_by, now,
            )
            _ended(r)
        ended = [skipped(r, why) for r, why, _ in decision.skip]
        for newest in decision.supersede:  # as the SQL stores' supersede_waiting
            for r in self._runs.values():
                if (r.status == "queued" and r.concurrency_key == newest.concurrency_key
                        and r.seq < newest.seq and r.next_attempt_at > now):
                    r.status, r.reason, r.superseded_by, r.finished_at = (
                        "skipped", superseded_reason(newest), newest.id, now)
                    _ended(r)
                    ended.append(skipped(r, r.reason))
        for r, by in decision.cancel:
            r.cancel_requested, r.superseded_by = True, by
        for params in repoint_params(decision):  # as repoint_superseded
            self._repoint(params["by"])
        for r in decision.claim:
            r.status, r.attempt, r.started_at, r.finished_at = "running", r.attempt + 1, now, None
            r.reason = ""  # the previous attempt's is in its attempt record
            r.lease_owner, r.lease_expires, r.exit_code = node, now + lease, None
            self._attempts[(r.id, r.attempt)] = Attempt(
                run_id=r.id, attempt=r.attempt, node=node, status="running",
                exit_code=None, reason="", started_at=now, finished_at=None,
            )
        return Claimed([self._copy(r) for r in decision.claim], ended)

    def _held(self, node: str, run_id: str) -> Run | None:
        r = self._runs.get(run_id)
        return r if r and r.status == "running" and r.lease_owner == node else None

    async def renew(self, node: str, run_ids: Sequence[str], lease: float, now: float) -> set[str]:
        held = set()
        for rid in run_ids:
            r = self._held(node, rid)
            if r is not None:
                r.lease_expires = now + lease
                held.add(rid)
        return held

    async def finish(self, result: Finish) -> bool:
        r = self._held(result.node, result.run_id)
        reason = result.reason
        if result.replaced_by and r is not None and r.superseded_by:  # as sqlite.py's finish_run
            reason = reason.replace(result.replaced_by, r.superseded_by)
        for a in self._attempts.values():
            if (a.run_id == result.run_id and a.node == result.node and a.status == "running"
                    and result.attempt in (None, a.attempt)):
                a.status, a.exit_code, a.reason, a.finished_at = (
                    result.outcome, result.exit_code, reason, result.finished_at,
                )
                if result.log is not None:
                    self._logs[(a.run_id, a.attempt)] = result.log
        if r is None or result.attempt not in (None, r.attempt):  # another's decision stands
            return False
        r.exit_code, r.reason, r.outputs = result.exit_code, reason, dict(result.outputs)
        r.lease_expires = None
        if result.retry_at is not None and r.cancel_requested:  # never retried (sqlite.py)
            r.status, r.finished_at = "canceled", result.finished_at
            r.reason = (f"canceled: replaced by run {r.superseded_by}" if r.superseded_by
                        else CANCELED_INSTEAD_OF_RETRY)
            _ended(r)
            self._wake.set()
            return True
        if result.outcome != "canceled" or result.retry_at is not None:
            r.superseded_by = None  # replaced only if the cancel is how it ended
        if result.retry_at is not None:
            r.status, r.next_attempt_at, r.lease_owner = "queued", result.retry_at, None
        else:
            r.status, r.finished_at = result.outcome, result.finished_at
            _ended(r)
        self._wake.set()
        return True

    async def expired(self, now: float) -> list[Run]:
        return [
            self._copy(r) for r in self._runs.values()
            if r.status == "running" and r.lease_expires is not None and r.lease_expires < now
        ]

    async def release_node(self, node: str) -> list[Run]:
        # Not shared, as SQLite: every run left running is the starting server's.
        return [self._copy(r) for r in self._runs.values() if r.status == "running"]

    async def request_cancel(self, run_id: str, now: float) -> str | None:
        r = self._runs.get(run_id)
        if r is None:
            return None
        if r.status == "queued":
            r.status, r.finished_at = "canceled", now
            r.reason = CANCELED_BEFORE_RETRY if r.attempt > 0 else CANCELED_BEFORE_START
            _ended(r)
        elif r.status == "running":
            r.cancel_requested = True
        self._wake.set()
        return r.status

    async def cancel_requests(self, node: str) -> dict[str, str | None]:
        return {
            r.id: r.superseded_by for r in self._runs.values()
            if r.status == "running" and r.lease_owner == node and r.cancel_requested
        }

    async def get_run(self, run_id: str) -> Run | None:
        r = self._runs.get(run_id)
        return self._copy(r) if r else None

    async def list_runs(
        self, status: str | None = None, limit: int = 50, delivery_id: str | None = None,
        rule: str | None = None, before: str | None = None,
    ) -> list[Run]:
        out = [
            r for r in self._runs.values()
            if (status is None or r.status == status)
            and (delivery_id is None or r.delivery_id == delivery_id)
            and (rule is None or r.rule == rule)
        ]
        if before is not None:
            cursor = self._runs.get(before)
            out = [r for r in out if cursor is not None and r.seq < cursor.seq]
        out.sort(key=lambda r: r.seq, reverse=True)
        return [_listed(self._copy(r)) for r in out[:limit]]

    async def attempts(self, run_id: str) -> list[Attempt]:
        return sorted(
            (replace(a) for a in self._attempts.values() if a.run_id == run_id),
            key=lambda a: a.attempt,
        )

    async def get_log(self, run_id: str, attempt: int) -> str | None:
        return self._logs.get((run_id, attempt))

    async def log_length(self, run_id: str, attempt: int) -> int | None:
        log = self._logs.get((run_id, attempt))
        return None if log is None else len(log)

    async def get_log_head(self, run_id: str, attempt: int, chars: int) -> tuple[str, bool] | None:
        log = self._logs.get((run_id, attempt))
        return None if log is None else (log[:chars], len(log) > chars)

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        d = self._deliveries.get(delivery_id)
        return copy.deepcopy(d) if d else None

    async def list_deliveries(self, hook: str | None = None, limit: int = 50,
                              before: str | None = None) -> list[Delivery]:
        out = [d for d in self._deliveries.values() if hook is None or d.hook == hook]
        if before is not None:
            cursor = self._deliveries.get(before)
            out = [d for d in out if cursor is not None
                   and (d.received_at, d.id) < (cursor.received_at, cursor.id)]
        out.sort(key=lambda d: (d.received_at, d.id), reverse=True)
        return [copy.deepcopy(d) for d in out[:limit]]

    async def queued(self) -> int:
        return sum(1 for r in self._runs.values() if r.status == "queued")

    async def counts(self) -> dict[str, int]:
        out = dict.fromkeys(RUN_STATUSES, 0)
        for r in self._runs.values():
            out[r.status] = out.get(r.status, 0) + 1
        return out

    async def next_due(self) -> float | None:
        due = [r.next_attempt_at for r in self._runs.values() if r.status == "queued"]
        return min(due) if due else None

    async def known_runs(self, run_ids: Sequence[str]) -> set[str]:
        return {i for i in run_ids if i in self._runs}

    async def prune(self, before: float, progress: Callable[[int], None] | None = None) -> int:
        gone = []
        for d in self._deliveries.values():
            runs = [self._runs[i] for i in d.run_ids]
            if d.received_at < before and all(
                r.status in TERMINAL and r.finished_at is not None and r.finished_at < before
                for r in runs
            ):
                gone.append(d)
        for d in gone:
            del self._deliveries[d.id]
            if d.dedup_key is not None:
                self._dedup.pop((d.hook, d.dedup_key), None)
            for rid in d.run_ids:
                del self._runs[rid]
                for key in [k for k in self._attempts if k[0] == rid]:
                    del self._attempts[key]
                    self._logs.pop(key, None)
        return len(gone)


def _listed(run: Run) -> Run:
    """As the SQL stores list it (LISTED_SPEC)."""
    size = len(dumps(run.spec))
    if size > LISTED_SPEC:
        run.spec = {"omitted_bytes": size, HIDDEN_KEY: bool(run.spec.get(HIDDEN_KEY))}
    return run


def _ended(r: Run) -> None:
    """What a run keeps once it has ended, as the SQL stores' statements that end it."""
    r.spec = ended_spec(r.spec)
    r.concurrency_key = ended_key(r.spec, r.concurrency_key)

"""What a queued run waits for, as the API, the console and `hookrunner runs` tell it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hookrunner.store.base import Run


def waiting_for(run: Run, running: Iterable[Run], now: float,
                queued: Iterable[Run] = ()) -> dict[str, Any] | None:
    """For a queued run: its retry's time, the run holding its concurrency key, or a free
    worker (with `--workers` busy, or the claim that takes it about to come). None for a run
    that is not queued. `queued`: other queued runs, in which an older run of its key waiting
    for its retry holds the key (concurrency.decide)."""
    if run.status != "queued":
        return None
    if run.next_attempt_at > now:
        return {"for": "retry", "at": run.next_attempt_at}
    if run.concurrency_key is not None:
        holder = next((r for r in running if r.concurrency_key == run.concurrency_key
                       and r.id != run.id), None)
        if holder is None and not (run.policy == "skip" and run.attempt == 0):
            holder = min((r for r in queued if r.concurrency_key == run.concurrency_key
                          and r.seq < run.seq and r.next_attempt_at > now),
                         key=lambda r: r.seq, default=None)
        if holder is not None:
            return {"for": "concurrency key", "held_by": holder.id}
    return {"for": "a free worker"}


def describe(waiting: dict[str, Any] | None, when: Any) -> str:
    """One line: `retry at 2026-11-29T17:26:04Z`, `key held by run_...`, `a free worker`."""
    if waiting is None:
        return ""
    if waiting["for"] == "retry":
        return f"retry at {when(waiting['at'])}"
    if waiting["for"] == "concurrency key":
        return f"its concurrency key, held by {waiting['held_by']}"
    return "a free worker"

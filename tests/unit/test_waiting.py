"""What a queued run waits for: a pure decision over the run and the running runs."""

from __future__ import annotations

from hookrunner.store.base import Run
from hookrunner.waiting import describe, waiting_for


def run(rid: str, status: str = "queued", key: str | None = "k", next_at: float = 0.0,
        seq: int = 1, policy: str = "queue") -> Run:
    return Run(id=rid, seq=seq, delivery_id="d", rule="r", action="shell", spec={},
               status=status, attempt=0, concurrency_key=key, policy=policy, timeout=None,
               max_attempts=1, backoff=0.0, max_backoff=0.0, retry_on=(), created_at=0.0,
               next_attempt_at=next_at)


def test_what_a_queued_run_waits_for() -> None:
    holder = run("h", status="running")
    assert waiting_for(run("q", next_at=50.0), [holder], 10.0) == {"for": "retry", "at": 50.0}
    assert waiting_for(run("q"), [holder], 10.0) == {"for": "concurrency key", "held_by": "h"}
    assert waiting_for(run("q", key="other"), [holder], 10.0) == {"for": "a free worker"}
    assert waiting_for(run("q", key=None), [holder], 10.0) == {"for": "a free worker"}
    assert waiting_for(holder, [holder], 10.0) is None
    # Under `queue` an older run waiting for its retry keeps its place: it holds the key.
    retry = run("w", next_at=50.0, seq=1)
    assert waiting_for(run("q", seq=2), [], 10.0, [retry]) == {
        "for": "concurrency key", "held_by": "w"}
    assert waiting_for(run("q", seq=2), [], 60.0, [retry]) == {"for": "a free worker"}  # due
    assert waiting_for(run("q", seq=2, key="other"), [], 10.0, [retry]) == {
        "for": "a free worker"}
    assert waiting_for(run("q", seq=2, policy="skip"), [], 10.0, [retry]) == {
        "for": "a free worker"}  # a new skip run decides only for itself
    assert describe({"for": "retry", "at": 50.0}, lambda t: f"T{t:g}") == "retry at T50"
    assert describe(None, str) == ""

"""The concurrency policies as a pure decision over (candidates, running, limit, later)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from hookrunner.concurrency import decide
from hookrunner.store.base import Run


def run(
    rid: str, seq: int, key: str | None = "k", policy: str = "queue", attempt: int = 0,
    status: str = "queued", cancel_requested: bool = False,
) -> Run:
    return Run(
        id=rid, seq=seq, delivery_id="d", rule="r", action="shell", spec={}, status=status,
        attempt=attempt, concurrency_key=key, policy=policy, timeout=None, max_attempts=1,
        backoff=0.0, max_backoff=0.0, retry_on=(), created_at=0.0, next_attempt_at=0.0,
        cancel_requested=cancel_requested,
    )


def retrying(rid: str, seq: int, key: str | None = "k", policy: str = "queue") -> Run:
    """Queued, waiting for its next attempt (not due: a store passes it as `later`)."""
    return run(rid, seq, key, policy, attempt=1)


def running(rid: str, seq: int, key: str | None = "k", policy: str = "queue", **kw: bool) -> Run:
    return run(rid, seq, key, policy, attempt=1, status="running", **kw)


@dataclass
class Case:
    name: str
    candidates: list[Run]
    running: list[Run] = field(default_factory=list)
    limit: int = 10
    claim: list[str] = field(default_factory=list)
    skip: list[tuple[str, str | None]] = field(default_factory=list)  # (id, superseded_by)
    cancel: list[tuple[str, str]] = field(default_factory=list)  # (running, replaced by)
    later: list[Run] = field(default_factory=list)  # not due: waiting for a later attempt
    supersede: list[str] = field(default_factory=list)


CASES = [
    # no key
    Case("runs without a key are all claimed in arrival order",
         [run("b", 2, None), run("a", 1, None)], claim=["a", "b"]),
    Case("the limit caps claims, oldest first",
         [run("a", 1, None), run("b", 2, None), run("c", 3, None)], limit=2, claim=["a", "b"]),
    Case("a zero limit claims nothing", [run("a", 1, None)], limit=0),
    Case("different keys do not block each other",
         [run("a", 1, "x"), run("b", 2, "y")], claim=["a", "b"]),
    # queue
    Case("queue: a free key claims its oldest run only",
         [run("a", 1), run("b", 2)], claim=["a"]),
    Case("queue: a busy key claims nothing and drops nothing",
         [run("a", 2)], [running("r", 1)]),
    Case("queue: a busy key does not block runs without a key",
         [run("a", 2), run("n", 3, None)], [running("r", 1)], claim=["n"]),
    Case("queue: a run waiting for its retry keeps its place ahead of later runs",
         [run("b", 2), run("c", 3)], later=[retrying("a", 1)]),
    Case("queue: a retry behind a due run does not hold it back",
         [run("a", 1)], later=[retrying("b", 2)], claim=["a"]),
    Case("queue: a retry holds only its own key",
         [run("b", 2, "y")], later=[retrying("a", 1, "x")], claim=["b"]),
    Case("queue: a key held by a retry takes no claim slot",
         [run("b", 2), run("n", 3, None)], limit=1, later=[retrying("a", 1)], claim=["n"]),
    Case("queue: a skip rule's retry keeps its place too",
         [run("b", 2)], later=[retrying("a", 1, policy="skip")]),
    Case("queue: a new skip run that is not due (a clock step back) holds no place",
         [run("b", 2)], later=[run("sk", 1, policy="skip")], claim=["b"]),
    # skip
    Case("skip: a new run is skipped while one runs",
         [run("a", 2, policy="skip")], [running("r", 1, policy="skip")],
         skip=[("a", None)]),
    Case("skip: a free key claims the first and skips the rest of the batch",
         [run("a", 1, policy="skip"), run("b", 2, policy="skip")],
         claim=["a"], skip=[("b", None)]),
    Case("skip: a retry waits instead of being skipped",
         [run("a", 2, policy="skip", attempt=1)], [running("r", 1, policy="skip")]),
    Case("skip: a new run decides only for itself while an older run waits for its retry",
         [run("sk", 2, policy="skip")], later=[retrying("a", 1)], claim=["sk"]),
    # (It waited through the retry's backoff, then ended skipped by a run not running.)
    Case("skip: ...also with a queued run waiting behind that retry",
         [run("b", 2), run("sk", 3, policy="skip")], later=[retrying("a", 1)], claim=["sk"]),
    Case("skip: without a claim slot nothing is skipped on a free key",
         [run("n", 1, None), run("a", 2, policy="skip"), run("b", 3, policy="skip")],
         limit=1, claim=["n"]),
    # replace
    Case("replace: the running run is canceled and the newest waits",
         [run("a", 2, policy="replace")], [running("r", 1, policy="replace")],
         cancel=[("r", "a")]),
    Case("replace: older waiting runs are superseded by the newest",
         [run("a", 2, policy="replace"), run("b", 3, policy="replace")],
         [running("r", 1, policy="replace")], skip=[("a", "b")], cancel=[("r", "b")]),
    Case("replace: a cancel already requested is not requested again",
         [run("a", 2, policy="replace")],
         [running("r", 1, policy="replace", cancel_requested=True)]),
    Case("replace: a free key claims the newest waiting run",
         [run("a", 1, policy="replace"), run("b", 2, policy="replace")],
         claim=["b"], skip=[("a", "b")]),
    Case("replace: a newer run supersedes one waiting for its retry",
         [run("b", 2, policy="replace")], later=[retrying("a", 1, policy="replace")],
         claim=["b"], supersede=["b"]),
    # coalesce
    Case("coalesce: the running run is left alone and the newest waits",
         [run("a", 2, policy="coalesce")], [running("r", 1, policy="coalesce")]),
    Case("coalesce: older waiting runs are superseded by the newest",
         [run("a", 2, policy="coalesce"), run("b", 3, policy="coalesce"),
          run("c", 4, policy="coalesce")],
         [running("r", 1, policy="coalesce")], skip=[("a", "c"), ("b", "c")]),
    Case("coalesce: a free key claims only the newest",
         [run("a", 1, policy="coalesce"), run("b", 2, policy="coalesce")],
         claim=["b"], skip=[("a", "b")]),
    Case("coalesce: the key's oldest waiting run sets its place in the claim order",
         [run("a", 1, policy="coalesce"), run("n", 2, None), run("b", 3, policy="coalesce")],
         limit=1, claim=["b"], skip=[("a", "b")]),
    Case("coalesce: a newer run supersedes one waiting for its retry",
         [run("b", 2, policy="coalesce")], later=[retrying("a", 1, policy="coalesce")],
         claim=["b"], supersede=["b"]),
    # mixed
    Case("a key's policy is its newest waiting run's",
         [run("a", 2, policy="queue"), run("b", 3, policy="coalesce")],
         [running("r", 1, policy="queue")], skip=[("a", "b")]),
    # A new skip run decides only for itself (it dropped every waiting run of its key).
    Case("mixed: a skip run does not drop a replacement that had the running run canceled",
         [run("rp", 2, policy="replace"), run("sk", 3, policy="skip")],
         [running("r", 1, policy="skip", cancel_requested=True)], skip=[("sk", None)]),
    Case("mixed: a skip run does not drop the queued runs of its key",
         [run("q2", 2), run("q3", 3), run("sk", 4, policy="skip")],
         [running("q1", 1)], skip=[("sk", None)]),
    Case("mixed: on a free key the queued run goes first and the skip run is skipped",
         [run("q", 1), run("sk", 2, policy="skip")], claim=["q"], skip=[("sk", None)]),
    Case("mixed: on a free key a skip run that came first runs, and the queued one waits",
         [run("sk", 1, policy="skip"), run("q", 2), run("sk2", 3, policy="skip")],
         claim=["sk"], skip=[("sk2", None)]),
    Case("mixed: a skip run that came first runs; older replace runs are still superseded",
         [run("sk", 1, policy="skip"), run("r1", 2, policy="replace"),
          run("r2", 3, policy="replace")], claim=["sk"], skip=[("r1", "r2")]),
    Case("mixed: without a claim slot a skip run behind a queued one waits",
         [run("n", 1, None), run("q", 2), run("sk", 3, policy="skip")], limit=1, claim=["n"]),
    Case("mixed: the replacement still replaces with a skip run arriving after it",
         [run("rp", 2, policy="replace"), run("sk", 3, policy="skip")],
         [running("r", 1, policy="skip")], skip=[("sk", None)], cancel=[("r", "rp")]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decide(case: Case) -> None:
    d = decide(case.candidates, case.running, case.limit, case.later)
    assert [r.id for r in d.claim] == case.claim
    assert sorted((r.id, sup) for r, _, sup in d.skip) == sorted(case.skip)
    assert [(r.id, by) for r, by in d.cancel] == case.cancel
    if case.supersede:
        assert [r.id for r in d.supersede] == case.supersede


def test_skip_reason_names_the_running_run() -> None:
    """A skipped run's reason says which run held its key."""
    d = decide([run("a", 2, policy="skip")], [running("r", 1, policy="skip")], 5)
    assert d.skip[0][1] == "skipped: run r was running"


def test_superseded_reason_names_the_newest_run() -> None:
    """A superseded run's reason says which newer run replaces it."""
    d = decide([run("a", 1, policy="coalesce"), run("b", 2, policy="coalesce")], [], 5)
    assert d.skip[0][1] == "skipped: superseded by run b"


def test_the_replacer_a_reason_names_is_read_back_for_the_store() -> None:
    """dispatch.named_replacer: what Finish.replaced_by carries (the store names the newest)."""
    from hookrunner.dispatch import named_replacer

    assert named_replacer("canceled: replaced by run run_1; log incomplete: x") == "run_1"
    assert named_replacer("canceled: replaced by run run_2 (interrupted: node n1 restarted)") == "run_2"
    assert named_replacer("canceled by request") is None and named_replacer("") is None

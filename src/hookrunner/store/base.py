"""The store protocol and its records. Two backends implement it (SQLite, PostgreSQL) and a
memory store serves unit tests. Times are unix seconds (float); ids are strings.

Semantics every backend keeps:
- `accept` is atomic and durable when it returns: the delivery and its runs are committed
  together, or (duplicate) nothing is written and the original delivery's id is returned.
  Dedup is on (hook, dedup_key) when dedup_key is not None.
- `claim` moves up to `limit` queued runs whose `next_attempt_at <= now` to `running`, owned
  by `node` with a lease until `now + lease`. It applies the concurrency policies (see
  `hookrunner.concurrency.decide`) against the runs that are running on *any* node, so keys
  hold cluster-wide, and commits the skips / cancel requests it decided in the same
  transaction.
- A run's lease is renewed by its node; `recover` finds running runs whose lease expired
  (their node died) and hands them back for a retry decision.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

RunStatus = Literal["queued", "running", "succeeded", "failed", "timed_out", "canceled", "skipped"]
RUN_STATUSES: tuple[str, ...] = (
    "queued", "running", "succeeded", "failed", "timed_out", "canceled", "skipped",
)
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "timed_out", "canceled", "skipped"})
Policy = Literal["queue", "skip", "replace", "coalesce"]
KNOWN_CHUNK = 500  # run ids per known_runs query
LISTED_SPEC = 65536  # bytes of a run's spec a listing carries (store/sql/*/queries.sql: list_runs)


@dataclass(frozen=True)
class NewDelivery:
    id: str
    hook: str
    received_at: float
    headers: list[tuple[str, str]]  # secrets already redacted
    body: bytes  # raw, exactly as received
    dedup_key: str | None
    event: str | None
    client_ip: str
    matches: list[dict[str, Any]]  # per-rule explanation, JSON-able (see rules.match)
    # The query parameters as sent (hookrunner's own `wait` too), secrets redacted: a replay
    # evaluates `query` with them.
    query: list[tuple[str, str]] = field(default_factory=list)
    verifier: str | None = None  # the kind that checked it (`github`, `none`), as the hook had it


@dataclass(frozen=True)
class NewRun:
    id: str
    delivery_id: str
    rule: str
    action: str  # runner kind
    spec: dict[str, Any]  # the rendered action, JSON-able
    concurrency_key: str | None = None
    policy: Policy = "queue"
    timeout: float | None = None
    max_attempts: int = 1
    backoff: float = 0.0
    max_backoff: float = 0.0
    retry_on: tuple[str, ...] = ("failed", "timed_out")
    created_at: float = 0.0


@dataclass
class Run:
    id: str
    seq: int  # arrival order (monotonic per store)
    delivery_id: str
    rule: str
    action: str
    spec: dict[str, Any]
    status: str
    attempt: int  # 1-based number of the current / last attempt; 0 = never started
    concurrency_key: str | None
    policy: str
    timeout: float | None
    max_attempts: int
    backoff: float
    max_backoff: float
    retry_on: tuple[str, ...]
    created_at: float
    next_attempt_at: float
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    reason: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)
    lease_owner: str | None = None
    lease_expires: float | None = None
    cancel_requested: bool = False
    superseded_by: str | None = None
    hook: str = ""  # of its delivery, filled by reads for display

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "delivery_id": self.delivery_id, "hook": self.hook,
            "rule": self.rule, "action": self.action, "spec": self.spec,
            "status": self.status, "attempt": self.attempt, "max_attempts": self.max_attempts,
            "exit_code": self.exit_code, "reason": self.reason, "outputs": self.outputs,
            "concurrency_key": self.concurrency_key, "policy": self.policy,
            "created_at": self.created_at, "started_at": self.started_at,
            "finished_at": self.finished_at, "next_attempt_at": self.next_attempt_at,
            "node": self.lease_owner, "cancel_requested": self.cancel_requested,
            "superseded_by": self.superseded_by,
        }


@dataclass
class Attempt:
    run_id: str
    attempt: int
    node: str
    status: str
    exit_code: int | None
    reason: str
    started_at: float
    finished_at: float | None


@dataclass
class Delivery:
    id: str
    hook: str
    received_at: float
    headers: list[tuple[str, str]]
    body: bytes
    dedup_key: str | None
    event: str | None
    client_ip: str
    matches: list[dict[str, Any]]
    run_ids: list[str] = field(default_factory=list)
    replay_of: str | None = None
    query: list[tuple[str, str]] = field(default_factory=list)  # [] for rows from before 0003
    verifier: str | None = None  # None: stored before it was (SQLite 0008, PostgreSQL 0009)


@dataclass(frozen=True)
class Skipped:
    """A run a claim ended `skipped` without starting it, and why."""

    id: str
    rule: str
    delivery_id: str
    attempt: int
    reason: str


class Claimed(list[Run]):
    """The runs a claim moved to running, as a list; `skipped`: the runs it ended `skipped`
    meanwhile (a `skip` or `coalesce` key, a `replace`/`coalesce` key's runs waiting for a
    retry), which never start and so are logged by the dispatcher that claimed (one line
    per run's end, as for a run that ran)."""

    skipped: list[Skipped]

    def __init__(self, claimed: Sequence[Run] = (), skipped: Sequence[Skipped] = ()) -> None:
        super().__init__(claimed)
        self.skipped = list(skipped)


def skipped(run: Run, reason: str) -> Skipped:
    return Skipped(run.id, run.rule, run.delivery_id, run.attempt, reason)


@dataclass(frozen=True)
class AcceptResult:
    delivery_id: str
    duplicate: bool
    run_ids: list[str]


@dataclass(frozen=True)
class Finish:
    """How an attempt ended, and what happens next (the dispatcher decided it)."""

    run_id: str
    node: str
    outcome: str  # succeeded | failed | timed_out | canceled
    exit_code: int | None
    reason: str
    outputs: dict[str, Any]
    finished_at: float
    retry_at: float | None = None  # not None: back to queued for attempt+1 at this time
    log: str | None = None  # the attempt's output, kept with its record (None: keep what is)
    # The attempt this ends (None: whichever is running): a finish sent again after its
    # first commit's answer was lost must not end the next attempt, claimed meanwhile.
    attempt: int | None = None
    # The run `reason` names as this one's replacer (`canceled: replaced by run X`): the
    # store names the one `superseded_by` holds when it writes, since a newer replacer can
    # take over between the dispatcher's read and this write.
    replaced_by: str | None = None
    # A takeover of a run whose lease expired by this time (`expired`): decided only if the
    # lease is still expired when written, since a renewal that landed between that read
    # and this write means its node still runs it. (Honoured by shared stores.)
    expired_by: float | None = None


class Store(Protocol):
    # Several nodes share it, so a run's lease decides who runs it: renewed, fenced, taken
    # over when it expires. A store of one server (SQLite: one per file) has no one to hand a
    # run to, so a lease that lapsed in an outage must not stop the run.
    shared: bool

    async def open(self, migrate: bool = True) -> None:
        """Connect, apply migrations (once, even with several nodes starting together).
        Without `migrate` (the CLI), a database a migration is missing from is refused:
        changing the schema is a server's start's work, not a listing's."""
        ...

    async def close(self) -> None: ...

    async def lock_node(self, node: str) -> bool:
        """Claim `node`'s identity until close (before `open` too, which migrates): False
        when another live server holds it.

        A server recovers its node's interrupted runs at start-up, so two servers with one
        identity (one --data dir, or one --node name on PostgreSQL) would stop each
        other's actions."""
        ...

    async def ping(self) -> bool:
        """True when the store answers; used by /readyz."""
        ...

    async def accept(self, delivery: NewDelivery, runs: Sequence[NewRun]) -> AcceptResult:
        """Journal a delivery and its runs atomically and durably (group commit allowed)."""
        ...

    async def add_runs(self, runs: Sequence[NewRun]) -> None:
        """Queue more runs for an existing delivery (replay)."""
        ...

    async def claim(self, node: str, limit: int, lease: float, now: float) -> Claimed:
        """Move runnable queued runs to running for `node`, applying concurrency policies."""
        ...

    async def renew(self, node: str, run_ids: Sequence[str], lease: float, now: float) -> set[str]:
        """Extend leases; return the ids `node` still holds (a lost one must be stopped)."""
        ...

    async def finish(self, result: Finish) -> bool:
        """Record an attempt's end: terminal status, or requeue for the next attempt. False
        where the run was not this node's to decide any more (another node decided it)."""
        ...

    async def expired(self, now: float) -> list[Run]:
        """Running runs whose lease ran out (their node died); the dispatcher decides each."""
        ...

    async def release_node(self, node: str) -> list[Run]:
        """The running runs a server starting as `node` must recover (they were interrupted):
        on PostgreSQL those `node` owns; on SQLite, which one server uses, every one."""
        ...

    async def request_cancel(self, run_id: str, now: float) -> str | None:
        """Queued: canceled at once. Running: flag it for its node. Returns the new status."""
        ...

    async def cancel_requests(self, node: str) -> dict[str, str | None]:
        """Runs owned by `node` whose cancel was requested: id -> the id of the run that
        replaces it (policy `replace`), or None (a cancel request)."""
        ...

    async def get_run(self, run_id: str) -> Run | None: ...

    async def list_runs(
        self, status: str | None = None, limit: int = 50, delivery_id: str | None = None,
        rule: str | None = None, before: str | None = None,
    ) -> list[Run]:
        """The newest runs first; with `before` (a run id), those listed after it. A rendered
        action (`spec`) of more than LISTED_SPEC bytes of JSON is `{"omitted_bytes": N}` here,
        with its hidden-key mark: `get_run` has it."""
        ...

    async def attempts(self, run_id: str) -> list[Attempt]: ...

    async def get_delivery(self, delivery_id: str) -> Delivery | None: ...

    async def list_deliveries(self, hook: str | None = None, limit: int = 50,
                              before: str | None = None) -> list[Delivery]:
        """The newest first (by time received, then id); with `before` (a delivery id), those
        listed after it."""
        ...

    async def counts(self) -> dict[str, int]:
        """Runs by status (for metrics): a scan of every run, so not too often."""
        ...

    async def queued(self) -> int:
        """Runs waiting to start (for --max-queued, twice a second): an index lookup, however
        long the history."""
        ...

    async def next_due(self) -> float | None:
        """Earliest next_attempt_at of a queued run, so the dispatcher can sleep until then."""
        ...

    async def prune(self, before: float, progress: Callable[[int], None] | None = None) -> int:
        """Delete deliveries (and their runs) finished before `before`; return how many.
        In chunks, with `progress` told the count so far after each (a first prune of a
        long history takes minutes)."""
        ...

    async def known_runs(self, run_ids: Sequence[str]) -> set[str]:
        """Those of `run_ids` the store still holds (retention keeps their run dirs)."""
        ...

    async def get_log(self, run_id: str, attempt: int) -> str | None:
        """The log of an attempt saved with its `Finish` (capped), so any node can serve it;
        None when none was saved."""
        ...

    async def log_length(self, run_id: str, attempt: int) -> int | None:
        """How many characters that saved log has (counted in the store: a log may be
        megabytes); None when none was saved."""
        ...

    async def get_log_head(self, run_id: str, attempt: int, chars: int) -> tuple[str, bool] | None:
        """That saved log's first `chars` characters, and whether it holds more; None when
        none was saved."""
        ...

    async def wait_for_work(self, timeout: float) -> bool:
        """Sleep until runs may be claimable (accept, replay, cancel, a key freed) or `timeout`.

        True when woken by such an event. Events from other processes may only be seen by
        the caller's next poll (SQLite: the CLI's writes), so callers still poll.
        """
        ...

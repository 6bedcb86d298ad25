"""Concurrency policies as one pure decision: which queued runs to claim, skip or cancel.

Every store calls `decide` inside its claim transaction with the runs that are due, the
runs that are running on any node and the runs of those keys waiting for a later attempt
(queued, not yet due), then writes the decision. Per concurrency key:

- `queue`    one run at a time, in arrival order: a run waiting for its retry keeps its
             place, the key's later runs wait until it has ended.
- `skip`     a new run ends `skipped` while another run of its key runs.
- `replace`  the running run gets a cancel request; the newest waiting run runs after it and
             older waiting runs are skipped, superseded by the newest.
- `coalesce` the running run finishes; then only the newest of the waiting runs runs, the
             others are skipped, superseded by the newest.

For `replace` and `coalesce`, "the others" include older runs waiting for a retry (queued,
not yet due): the store skips them too (`Decision.supersede`), or an old commit's retry
would run after, or even cancel, the newer one.

A key's policy is the policy of its newest waiting run (the rule that fired last decides
what happens to the runs already there), except that a new `skip` run decides only for
itself; runs without a key are always claimable. A retry (attempt > 0) is never dropped by
`skip`: it waits for the key like `queue`, and keeps its place as a `queue` run does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from hookrunner.store.base import Run

Skip = tuple[Run, str, str | None]  # (run, reason, superseded_by)
Replace = tuple[Run, str]  # (a running run to cancel, the run that replaces it)


@dataclass
class Decision:
    claim: list[Run] = field(default_factory=list)
    skip: list[Skip] = field(default_factory=list)
    cancel: list[Replace] = field(default_factory=list)
    # Newest runs of replace/coalesce keys: the store skips their key's older queued runs
    # that are not due yet (in a retry's backoff), superseded by them.
    supersede: list[Run] = field(default_factory=list)


@dataclass
class _KeyPlan:
    """What one key would do if it gets a claim slot."""

    first_seq: int
    claim: Run | None = None
    skip: list[Skip] = field(default_factory=list)  # decided regardless of the claim
    skip_if_claimed: list[Skip] = field(default_factory=list)  # only once `claim` really runs
    cancel: list[Replace] = field(default_factory=list)
    supersede: Run | None = None


def skip_reason(holder: Run) -> str:
    return f"skipped: run {holder.id} was running"


def superseded_reason(newest: Run) -> str:
    return f"skipped: superseded by run {newest.id}"


def _new_skip(run: Run) -> bool:
    return run.policy == "skip" and run.attempt == 0


def _plan_key(waiting: list[Run], running: list[Run], held_from: int | None) -> _KeyPlan:
    # A new `skip` run decides only for itself: ended while the key is busy, or by the run
    # that takes the key now. The other waiting runs go by their own newest's policy (a
    # skip run arriving must not drop queued runs, or a replacement that already had the
    # running run canceled).
    skippers = [r for r in waiting if _new_skip(r)]
    others = [r for r in waiting if not _new_skip(r)]
    if not others:
        plan = _KeyPlan(first_seq=waiting[0].seq)
        if running:
            plan.skip = [(r, skip_reason(running[0]), None) for r in skippers]
        else:
            plan.claim = skippers[0]
            plan.skip_if_claimed = [(r, skip_reason(plan.claim), None) for r in skippers[1:]]
        return plan
    plan = _plan_others(others, running, held_from)
    plan.first_seq = waiting[0].seq
    if running:
        plan.skip += [(r, skip_reason(running[0]), None) for r in skippers]
    elif skippers and (skippers[0].seq < others[0].seq or plan.claim is None):
        # A free key, and a skip run came first, or none of the others can take the key now
        # (they wait behind a run's retry): it runs, the others wait for it (a `replace`
        # among them then cancels it, as it would any running run). It waited through the
        # retry's backoff, then ended skipped by a run that had not been running.
        plan.claim = skippers[0]
        plan.skip_if_claimed = [(r, skip_reason(plan.claim), None) for r in skippers[1:]]
    elif plan.claim is not None:
        plan.skip_if_claimed += [(r, skip_reason(plan.claim), None) for r in skippers]
    return plan


def _plan_others(waiting: list[Run], running: list[Run], held_from: int | None) -> _KeyPlan:
    """The waiting runs of a key other than new `skip` runs (a skip rule's retry waits for
    the key as `queue` does). `held_from`: the seq of the key's oldest run waiting for a
    later attempt, if any."""
    plan = _KeyPlan(first_seq=waiting[0].seq)
    newest = waiting[-1]
    if newest.policy in ("replace", "coalesce"):
        # Only the newest waiting run survives, whether the key is busy or free.
        plan.skip = [(r, superseded_reason(newest), newest.id) for r in waiting[:-1]]
        plan.supersede = newest
        if running:
            if newest.policy == "replace":
                # One already being replaced is told of the newest replacer too: the one it
                # named may itself have been superseded (skipped) meanwhile.
                plan.cancel = [(r, newest.id) for r in running if not r.cancel_requested
                               or r.superseded_by not in (None, newest.id)]
        else:
            plan.claim = newest
        return plan
    # queue (a skip rule's retries, and any unknown policy: the safe default). A run waiting
    # for its retry that came first keeps its place: a migration's retry must not run after
    # the next migration.
    if not running and (held_from is None or held_from > waiting[0].seq):
        plan.claim = waiting[0]
    return plan


def _by_key(runs: Iterable[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = {}
    for r in runs:
        if r.concurrency_key is not None:
            groups.setdefault(r.concurrency_key, []).append(r)
    return groups


def _held_from(later: Iterable[Run]) -> Mapping[str, int]:
    """Per key, the seq of its oldest run waiting for a later attempt. A new `skip` run (not
    due only after a clock step back) holds no place: it decides only for itself."""
    return {key: min(r.seq for r in runs)
            for key, runs in _by_key(r for r in later if not _new_skip(r)).items()}


def decide(candidates: list[Run], running: list[Run], limit: int,
           later: Iterable[Run] = ()) -> Decision:
    """Decide one claim batch. `candidates` are queued runs due now; `running` all running
    runs; `later` queued runs of the candidates' keys that are not due yet (waiting for a
    retry: each key's oldest is enough)."""
    ordered = sorted(candidates, key=lambda r: r.seq)
    busy = _by_key(running)
    held = _held_from(later)
    plans: list[_KeyPlan] = [
        _plan_key(waiting, busy.get(key, []), held.get(key))
        for key, waiting in _by_key(ordered).items()
    ]
    free = [_KeyPlan(first_seq=r.seq, claim=r) for r in ordered if r.concurrency_key is None]
    # Claim slots go in arrival order of each key's oldest waiting run, so a key that has
    # waited longest is served first even when coalesce picks its newest run.
    decision = Decision()
    for plan in sorted(plans + free, key=lambda p: p.first_seq):
        decision.skip.extend(plan.skip)
        decision.cancel.extend(plan.cancel)
        if plan.supersede is not None:
            decision.supersede.append(plan.supersede)
        if plan.claim is not None and len(decision.claim) < limit:
            decision.claim.append(plan.claim)
            decision.skip.extend(plan.skip_if_claimed)
    decision.claim.sort(key=lambda r: r.seq)
    return decision

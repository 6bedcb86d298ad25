"""Replay: run a stored delivery again against the current rules (new runs, same delivery)."""

from __future__ import annotations

import time
from typing import Any

from hookrunner.errors import DeliveryGone, HookrunnerError
from hookrunner.gateway import Gateway, RunQueue
from hookrunner.ingest import Planned, plan_runs, report_condition_errors
from hookrunner.logs import event
from hookrunner.offload import OFFLOAD
from hookrunner.payload import PayloadError, parse_body
from hookrunner.redact import REDACTED
from hookrunner.rules.match import build_scope
from hookrunner.rules.model import Ruleset
from hookrunner.store.base import Delivery, Store
from hookrunner.verify.base import Headers


class ReplayError(HookrunnerError):
    def __init__(self, message: str, not_found: bool = False, full: bool = False,
                 of_rules: bool = False) -> None:
        super().__init__(message)
        self.not_found = not_found
        self.full = full  # --max-queued: try again later
        self.of_rules = of_rules  # what the rules say: the CLI names the directory it read


def stored_scope(delivery: Delivery) -> dict[str, Any]:
    """What the rules see of a stored delivery: its request as received (secret-looking
    headers and query values as stored, `[redacted]`). PayloadError for a body that no longer
    parses."""
    headers = Headers(delivery.headers)
    payload = parse_body(delivery.body, headers.get("content-type"))
    return build_scope(hook=delivery.hook, delivery_id=delivery.id,
                       received_at=delivery.received_at, headers=headers,
                       query=dict(delivery.query), payload=payload, event=delivery.event,
                       client_ip=delivery.client_ip or None)


async def replay_delivery(
    store: Store, ruleset: Ruleset, delivery_id: str, default_timeout: float,
    queue: RunQueue | None = None, rule: str | None = None,
) -> dict[str, Any]:
    """Queue the runs the current rules give for a stored delivery; return the JSON answer.
    With the server's `queue`, they count against --max-queued as a hook's would. `rule`:
    only that rule's run (re-running one failed action of a delivery, not all of them)."""
    delivery = await store.get_delivery(delivery_id)
    if delivery is None:
        raise ReplayError(f"no delivery {delivery_id!r}", not_found=True)
    if delivery.hook not in ruleset.hooks:
        raise ReplayError(f"hook {delivery.hook!r} is not defined in the rules (removed since, "
                          "or these are not the server's rules)", of_rules=True)
    if rule is not None and rule not in {r.name for r in ruleset.rules_for(delivery.hook)}:
        names = ", ".join(sorted(r.name for r in ruleset.rules_for(delivery.hook))) or "none"
        raise ReplayError(f"no rule {rule!r} for hook {delivery.hook!r} (its rules: {names})",
                          of_rules=True)
    now = time.time()

    def decide() -> Planned:
        scope = stored_scope(delivery)
        return plan_runs(ruleset, delivery.hook, scope, delivery.id, now, default_timeout)

    try:  # off the event loop where slow, as on arrival
        matches, runs = await OFFLOAD.run(delivery.hook, len(delivery.body), decide)
    except PayloadError as exc:
        raise ReplayError(f"stored body cannot be parsed: {exc.message}") from None
    if rule is not None:
        runs = [r for r in runs if r.rule == rule]
        matches = [m for m in matches if m.get("rule") == rule]
    # Rules that matched on arrival and do not now (changed since, or deciding on a value
    # stored redacted): a replay that queues nothing must not look like a replay that worked.
    # A rule gone from these rules is named too (renamed, or not the server's rules).
    matched_now = {m.get("rule") for m in matches if m.get("matched")}
    no_longer = sorted(str(m.get("rule")) for m in delivery.matches
                       if m.get("matched") and m.get("rule") not in matched_now
                       and (rule is None or m.get("rule") == rule))
    if runs:
        reserved = committed = 0
        if queue is not None:
            if not queue.admit(len(runs)):
                raise ReplayError("queue full (--max-queued): try again once it drains", full=True)
            reserved = len(runs)
        try:
            await store.add_runs(runs)
            committed = len(runs)
        except DeliveryGone:
            raise ReplayError(f"no delivery {delivery_id!r} (pruned meanwhile)",
                              not_found=True) from None
        finally:
            if queue is not None:
                queue.accepted(committed, reserved)
    answer: dict[str, Any] = {"delivery_id": delivery.id, "hook": delivery.hook,
                              "runs": [r.id for r in runs], "matches": matches,
                              "no_longer_matched": no_longer}
    if no_longer and reads_redacted(delivery) and any(
            _reads_request(ruleset, name) for name in no_longer):
        answer["note"] = NOTE_REDACTED
    return answer


def _reads_request(ruleset: Ruleset, name: str) -> bool:
    """Whether rule `name`'s `when` reads headers or the query (where a value may be stored
    redacted); a rule these rules lack may, for all we know."""
    rule = next((r for r in ruleset.rules if r.name == name), None)
    if rule is None:
        return True
    todo = [rule.when] if rule.when is not None else []
    while todo:
        when = todo.pop()
        if not {"headers", "query"}.isdisjoint(getattr(when.expr, "names", ())):
            return True
        todo.extend(when.children)
    return False


NOTE_REDACTED = (f"a secret-looking header or query value is stored as {REDACTED}, not as "
                 "sent: a condition on it cannot decide as it did on arrival")


def reads_redacted(delivery: Delivery) -> bool:
    """Whether the stored request holds a value stored redacted (see NOTE_REDACTED)."""
    return any(value == REDACTED for _, value in (*delivery.headers, *delivery.query))


def replayed(gw: Gateway, answer: dict[str, Any], via: str) -> None:
    """Log a replay made through the server (the API or the console), and report the `when`
    errors its matching met, as the accept path does."""
    event("delivery.replayed", delivery_id=answer["delivery_id"], via=via,
          runs=",".join(answer["runs"]) or None)
    report_condition_errors(gw, answer["matches"], answer["delivery_id"], answer["hook"])

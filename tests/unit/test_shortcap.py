"""The cap on runs at once while starts fail for want of what the node's own runs hold.
(tests/integration/test_running_short.py runs it with real processes and descriptors.)"""

from __future__ import annotations

from hookrunner.shortcap import (
    BUSY_TRIES,
    SETTLE,
    ShortCap,
    busy_retry_delay,
    fd_room,
    idle_retry_delay,
)


def test_a_failed_start_halves_what_runs_and_a_claims_worth_halves_it_once() -> None:
    cap = ShortCap(workers=32, probe_after=5.0)
    assert cap.limit(0.0) == (32, False)
    assert cap.failed(running=20, now=100.0) is True  # the shortage begins: said once
    assert cap.cap == 10
    assert cap.failed(running=19, now=100.1) is False  # the same claim's other failures
    assert cap.cap == 10
    cap.failed(running=10, now=100.0 + SETTLE)  # later, at the cap: halved again
    assert cap.cap == 5
    cap.failed(running=5, now=100.5 + SETTLE)  # within a second of that: not again
    assert cap.cap == 5
    for _ in range(20):
        cap.failed(running=0, now=200.0 + _ * SETTLE)
    assert cap.cap == 1  # never below one: something must be tried


def test_runs_that_end_and_time_without_a_failure_raise_it_back_to_workers() -> None:
    cap = ShortCap(workers=4, probe_after=5.0)
    cap.failed(running=2, now=0.0)
    assert cap.limit(1.0) == (1, False)
    assert cap.ended() is False and cap.cap == 2  # a run that started, ended
    assert cap.limit(4.9) == (2, False)
    assert cap.limit(5.0) == (3, False)  # 5 s without a failed start: one more is tried
    assert cap.limit(9.9) == (3, False)
    assert cap.limit(10.0) == (4, True)  # back at --workers: the cap is off, said once
    assert cap.cap is None and cap.limit(20.0) == (4, False) and cap.ended() is False


def test_a_long_run_holding_the_cap_does_not_hold_the_queue_past_a_probe() -> None:
    """audit: a shortage not of the node's making (another process's), gone meanwhile, held
    every queued run until the node's one long run ended, an hour for a terraform apply."""
    cap = ShortCap(workers=8, probe_after=5.0)
    cap.failed(running=1, now=0.0)
    assert cap.limit(0.5) == (1, False)  # the long run has it
    assert cap.limit(5.0) == (2, False)  # a second may start 5 s on, without any run ending
    cap.failed(running=2, now=5.1)  # still short: back to one, and 5 s more
    assert cap.limit(9.0) == (1, False) and cap.limit(10.1) == (2, False)


def test_a_run_short_while_the_node_is_busy_is_tried_every_few_seconds_then_counted() -> None:
    """review: with a run always going on the node, such a start was tried every 5 s for
    ever; after ten minutes of it the shortage is taken for a lasting one (counted tries).
    (A longer wait left runs queued on an idle node once the shortage had passed.)"""
    delays = [busy_retry_delay(n, 5.0) for n in range(BUSY_TRIES + 1)]
    assert delays[:3] == [0.0, 5.0, 5.0] and set(delays[1:BUSY_TRIES]) == {5.0}
    assert delays[BUSY_TRIES] is None and sum(d or 0.0 for d in delays) == 10 * 60 - 5


def test_runs_start_only_while_descriptors_stay_for_the_server() -> None:
    assert fd_room(limit=1024, open_fds=30) == (1024 - 128 - 30) // 3
    assert fd_room(limit=64, open_fds=24) == (64 - 16 - 24) // 3  # 8: an eighth is 8, 16 at least
    assert fd_room(limit=64, open_fds=50) == 0
    assert fd_room(limit=65536, open_fds=40) > 10_000


def test_failures_within_a_claim_never_leave_the_cap_above_what_runs() -> None:
    """audit: the cap stayed at half a claim's batch while runs ended and raised it, so the
    same runs were started and failed again at once (1,000 failed starts a second)."""
    cap = ShortCap(workers=64, probe_after=5.0)
    cap.failed(running=40, now=0.0)
    assert cap.cap == 20
    cap.failed(running=6, now=0.2)  # fewer are running than the cap: held to them
    assert cap.cap == 6


def test_a_run_short_with_nothing_of_the_nodes_going_is_tried_further_and_further_apart() -> None:
    """audit: another program's shortage of half a minute failed a whole queue for good (5
    tries 5 s apart); the 5 tries now span about two and a half minutes."""
    delays = [idle_retry_delay(n, 5.0) for n in range(5)]
    assert delays == [5.0, 10.0, 20.0, 40.0, 80.0] and sum(delays) == 155.0

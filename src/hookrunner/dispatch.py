"""claim -> run -> record -> retry, under the global --workers limit.

The dispatcher never trusts memory alone: what the store says is queued is claimed, a run
whose node died (lease expired, or this node restarted) is decided again per its retry rule.
Concurrency policies are applied inside the store's claim (cluster-wide keys).

At-least-once: a run that this node had claimed but whose action had not started when the
node died is queued again at once (it never ran); one whose action had started is retried
per its rule (as a `failed` attempt) or ends `failed` with reason `interrupted: ...`, and
whatever its processes left running is stopped first.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import functools
import logging
import os
import resource
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from hookrunner import aio, orphans, pendingresults
from hookrunner.actions import RUNNERS, ansible, process, terraform
from hookrunner.actions.base import NotStarted, RunContext, RunResult, capped_reason
from hookrunner.actions.environment import base_env
from hookrunner.actions.logfile import (
    NOTE_PREFIX,
    NOTES_ROOM,
    FileLog,
    append_whole,
    closing_note,
    end_note,
    tail,
)
from hookrunner.budget import QueueBudget
from hookrunner.errors import ActionError, StoreUnavailable
from hookrunner.logs import Throttled, event, settle_throttled
from hookrunner.metrics import Metrics
from hookrunner.payload import PayloadError, parse_body
from hookrunner.redact import (
    hidden_values,
    named_secret_values,
    passed_secret_values,
    scrub,
    scrub_tree,
)
from hookrunner.retention import prune_interval, remove_run_dirs, stale_run_dirs
from hookrunner.retry import backoff_delay, retry_delay, should_retry
from hookrunner.settings import Settings
from hookrunner.shortcap import ShortCap, busy_retry_delay, fd_room, idle_retry_delay
from hookrunner.startmarks import StartMarks, marks_path, read_marks
from hookrunner.store.base import TERMINAL, Finish, Run, Skipped, Store
from hookrunner.verify.base import Headers

POLL = 0.5  # seconds: the longest a replay written by the CLI waits to be seen (cancel:
# HOUSEKEEPING); "within a second" with room to spare
# Seconds between claims woken only by arrivals, after a claim found nothing to run: behind a
# busy key each claim reads the backlog, and a storm of deliveries had the event loop claim
# back to back (measured: 30,000-45,000 runs behind one busy key, 1,600 req/s accepted
# without the gap, 2,100 with it).
CLAIM_GAP = 0.02
RECORD_RETRY_MAX = 8.0  # seconds between tries to write a run's result, at most
RECORD_TRIES_WHEN_STOPPING = 3  # a stopping server gives up on a store that is down
NOT_STARTED_TRIES = 5  # extra attempts for a run whose process could not start (EMFILE)
NOT_STARTED_DELAY = 5.0  # seconds before such a run is tried again
NOT_STARTED = "; nothing ran: queued again"  # in such an attempt's reason
# ...ends the reason of one that failed while this node's own runs held what it lacked
# (descriptors, processes): not counted against NOT_STARTED_TRIES, since their ends free it.
NOT_STARTED_BUSY = NOT_STARTED + " (this node's own runs hold what it lacked: not counted as a try)"
# An attempt a crash cut short after its claim, before its process started (start marks).
NEVER_STARTED = " before its action started; queued again"
NO_ROOM = (errno.ENOSPC, errno.EDQUOT)
SHORT_LOG = 64 * 1024  # characters of log kept with a result the store refused whole
REFUSED_WHOLE = "[hookrunner] the store refused the whole log"
HOUSEKEEPING = 0.5  # seconds between checks for cancel requests and expired leases
# Seconds a stop waits on a store that does not answer, past the grace: a table lock or a
# frozen database kept a stopping server alive until it answered.
STORE_STOP_WAIT = 10.0
# The longest a canceled action takes to stop: an interrupt's grace, then the group's.
ACTION_STOP_WAIT = process.INTERRUPT_GRACE_MAX + process.GRACE_PERIOD + process.DRAIN_AFTER_KILL
POLL_STOPPED = 0.1  # seconds between looks at which canceled runs still stop their actions
FROZEN_AFTER = 1.0  # seconds a fencing round may come late before this process was frozen
CLAIM_RECHECK_LIMIT = 10_000  # running runs read to find those a lost claim reply leased here
RECANCEL_EVERY = 1.0  # seconds: stop() cancels its loops again while one has not ended
PRUNE_PROGRESS = 10.0  # seconds between the progress lines of a long prune
# Counting stored runs by status (hookrunner_runs_stored) scans every run: 88 ms at a million.
# The next count waits this many times as long as the last took (~1 % of a core at most).
STATS_BACKOFF = 100
STATS_MAX_WAIT = 60.0
# An outage is noticed twice a second: one line a second, with a count, is enough.
# An outage: the first line at once, then one every 10 s with how many there were.
_store_down_log = Throttled("dispatcher.store_unavailable", logging.ERROR, every=10.0)
# An error of the store that is not an outage it knows (a read-only transaction after a
# failover, a privilege taken away): the loops go on, trying again, and say it.
_loop_failed_log = Throttled("dispatcher.loop_failed", logging.ERROR, every=10.0, per="task")
LOOP_FAILING = 5  # rounds in a row after which /readyz says the node is not running work
STALL_AFTER = 2  # housekeeping rounds a renewal may be late by before it counts as a stall
# A run whose lease this node could not renew is stopped (SIGTERM) a renewal period before
# the lease expires, and another node may start it, or the next run of its key, at expiry: a
# stop's grace (5 s, 20 s for a Terraform apply) may outlast that, so what is left of the run
# is killed this share of a lease before the expiry (1.25 s of the default 15 s: room for the
# SIGKILL, the sweep of its stragglers, and some clock skew).
KILL_BEFORE_EXPIRY = 1 / 12
START_STORE_WAIT = 60.0  # seconds a start tries a shared store's settling again
T = TypeVar("T")
_start_wait_log = Throttled("dispatcher.start_waiting_for_store", logging.WARNING, every=10.0)
# Too few descriptors left to start a run and keep some for the server: once a minute.
_few_fds_log = Throttled("dispatcher.few_descriptors", logging.WARNING, every=60.0)
# A run dir retention cannot remove (or a dir it cannot list) is met every round: once a
# minute at most.
_prune_dirs_log = Throttled("store.prune_dirs_failed", logging.WARNING, every=60.0)
OUTPUT_TAIL = 4096  # bytes of output returned by ?wait=
# Seconds a run's log stays in memory before it is written to its file: most actions end
# sooner and their log goes only into the store (see hookrunner.actions.logfile).
LOG_TO_DISK_AFTER = 1.0
ENDED_KEPT = 4096  # run ids a `?wait` may look for among the lately ended (wait_for_runs)
WAIT_OUTAGE_POLL = 1.0  # seconds between a `?wait`'s reads while the store is unreachable
CANCEL_ASKED = ("canceled by request", "canceled: replaced")  # reasons of an asked-for cancel
SHUTTING_DOWN = "canceled: server shutting down"
IDENTITY_LOST = "canceled: another server took this node's name"
EXIT_IDENTITY_LOST = 4  # the server's exit status when that happened
REPLACED = "canceled: replaced by run "


async def wait_for_runs(
    store: Store, settings: Settings, run_ids: list[str], timeout: float,
    finished: asyncio.Condition | None = None, poll: float = 0.25,
    stopping: Callable[[], bool] = lambda: False, ended: Callable[[str], bool] | None = None,
) -> list[dict[str, Any]] | None:
    """Each run's status, exit code and output tail once all ended; None on timeout, and as
    soon as the server is `stopping` with a run still queued (it starts only after a
    restart: the caller answers 202 now, not a 500 when shutdown stops waiting for it).
    `finished` is notified by a dispatcher in this process, and `ended` says which runs it
    ended lately: a notice of other runs' ends reads nothing (every end woke every waiter
    to read its runs: 1,500 idle `?wait` requests kept a core busy). Runs elsewhere, and
    ends no notice tells of, are polled. A store outage is waited out within `timeout` (the
    first error gave up, though the runs went on and ended well within it)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            # Within what is left of the wait: in an outage each read waits out the store's
            # pool (5 s), and a `?wait=6s` answered after 12 s.
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.001)):
                runs = [await store.get_run(r) for r in run_ids]
            if all(r is not None and r.status in TERMINAL for r in runs):
                return [await _summary(store, settings, r) for r in runs if r is not None]
        except TimeoutError:
            return None
        except StoreUnavailable:
            left = deadline - time.monotonic()
            if left <= 0 or stopping():
                return None
            await asyncio.sleep(min(left, WAIT_OUTAGE_POLL))
            continue
        left = deadline - time.monotonic()
        if left <= 0 or (stopping() and any(r is None or r.status == "queued" for r in runs)):
            return None
        if finished is None:
            await asyncio.sleep(min(left, poll))
            continue
        async with finished:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, poll)):  # see hookrunner.aio
                    await finished.wait()
                    while ended is not None and not any(ended(r) for r in run_ids):
                        await finished.wait()  # not ours: wait on, until the poll is due


async def _summary(store: Store, settings: Settings, run: Run) -> dict[str, Any]:
    path = settings.log_path(run.id, run.attempt)
    try:
        output = tail(path, OUTPUT_TAIL) if path.exists() else None
    except OSError:  # an unreadable logs dir: the stored copy, never a 500 after the 202
        output = None
    if output is None:  # a short run's log is only in the store
        output = (await store.get_log(run.id, run.attempt) or "")[-OUTPUT_TAIL:]
    return {"id": run.id, "rule": run.rule, "status": run.status, "exit_code": run.exit_code,
            "reason": run.reason, "output": output}


def named_replacer(reason: str) -> str | None:
    """The run a `canceled: replaced by run X...` reason names (X), else None."""
    if not reason.startswith(REPLACED):
        return None
    return reason[len(REPLACED):].split(";", 1)[0].split(" ", 1)[0] or None


def _pid_list(pids: set[int]) -> str:
    return ",".join(str(p) for p in sorted(pids))


def log_tail(settings: Settings, run: Run, size: int) -> str:
    return tail(settings.log_path(run.id, run.attempt), size)  # '' while there is no log


# A refusal no attempt can change (RunResult.final), where the rule would have retried.
NOT_RETRIED = " (not retried: every attempt of this action would be refused the same)"


class Dispatcher:
    def __init__(self, settings: Settings, store: Store, metrics: Metrics,
                 budget: QueueBudget | None = None, wake_fd: int | None = None) -> None:
        """`budget` and `wake_fd` (the read end of the pipe other HTTP processes signal new
        work on) are given when this server runs several processes (hookrunner.multiproc)."""
        self.settings = settings
        self.store = store
        self.metrics = metrics
        metrics.queue_limit.set(settings.max_queued)
        metrics.workers_limit.set(settings.workers)
        self.node = settings.node
        # --root resolved once when no symlink is in its path: realpath costs a stat per path
        # component and run. Through a symlink it is resolved per run (a deploy may switch a
        # `current -> releases/N` link under a running server).
        # (`absolute()` keeps `..`, which the kernel takes after a symlink: such a root is
        # resolved per run too.)
        root = settings.root.resolve()
        self._fixed_root = root if root == settings.root.absolute() else None
        # What every action's environment keeps of the server's (fixed for the server's
        # life): picked once, not out of the whole environment per run.
        self._kept_env = base_env(settings.environ, settings.pass_env, {})
        self.budget = budget or QueueBudget()
        self._wake_fd = wake_fd
        self._active: dict[str, tuple[asyncio.Task[None], asyncio.Event]] = {}
        # Runs whose action has ended and whose result is being written: their worker slot
        # is free again (the limit is on actions running, not on store writes).
        self._recording: set[str] = set()
        self._runs: dict[str, Run] = {}  # the claimed record of each active run
        self._logs: dict[str, FileLog] = {}  # the log of each run whose action is under way
        self._marks = StartMarks(marks_path(settings.data, settings.node))
        self._cancel_reason: dict[str, str] = {}
        self._renewed: dict[str, float] = {}  # run id -> its lease's last start, monotonic
        # Run id -> when (monotonic) its processes must be gone: its lease is in doubt.
        self._stop_by: dict[str, float] = {}
        self._lost: set[str] = set()
        # Attempts that ended here whose result the store refuses for now (_record retries it):
        # the API shows it beside the stored `running` (unrecorded).
        self._loop_errors: dict[str, tuple[int, str]] = {}  # (failed rounds in a row, last)
        self._unrecorded: dict[str, Finish] = {}
        # Every attempt ended here whose result is being recorded: what a stop that gives up
        # on the store keeps for the next start (pendingresults).
        self._ending: dict[str, Finish] = {}
        self._said: set[str] = set()  # those of them whose run.finished line was given
        self._cancels = asyncio.Lock()  # one cancel request at a time (request_cancel)
        self._wake = asyncio.Event()
        self._freed = asyncio.Event()  # a worker, a key or a run freed, or stopping: claim now
        self._finished = asyncio.Condition()
        # Runs ended here and the attempt each ended, the newest last (wait_for, claim rechecks).
        self._ended_lately: dict[str, int] = {}
        self._stopping = False
        self._counting = asyncio.Lock()  # a claim and a count of the queue, one at a time
        self._drain: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # Leases cannot be renewed while the store is down, so right after an outage every
        # lease looks expired: recover others' runs only once their nodes had a lease's time
        # to renew (else a run that is alive and well would be retried or failed).
        self._store_down = False
        self._claim_unsure = False  # a claim failed: its commit may have gone through
        # Log files with a gap whose record holds more (see _attempt): removed once stored.
        self._superseded_files: dict[Path, FileLog] = {}
        # Why no run can start (the data dir's disk is full), for /readyz; None: they can.
        self.no_room: str | None = None
        # Fewer runs at once while starts fail for want of what this node's runs hold.
        self._short = ShortCap(settings.workers, probe_after=NOT_STARTED_DELAY)
        self._reachable_since = 0.0
        # When this node last renewed its leases (monotonic): a store that hangs instead of
        # failing (a frozen database) holds every node's renewals alike, so one renewal
        # late by more than STALL_AFTER rounds counts as an outage too.
        self._renewed_at = time.monotonic()
        # Whether this node held its identity at its last renewal (no takeover otherwise,
        # nor before the first).
        self._identity_ok = False
        self.identity_lost = False  # another server took this node's name while it ran
        self.on_identity_lost: Callable[[], None] | None = None  # stops the server (app)

    # -- lifecycle -------------------------------------------------------------------------

    async def _patiently(self, call: Callable[[], Awaitable[T]]) -> T:
        """A store call of the start, tried again for up to START_STORE_WAIT on a shared
        store: a table locked by hand (the pool's lock_timeout ends each wait at 5 s) or a
        database restarting beside a rolling restart is no reason to refuse the start. On
        SQLite (a full disk) the start is refused at once, as before."""
        deadline = time.monotonic() + START_STORE_WAIT
        while True:
            try:
                return await call()
            except StoreUnavailable as exc:
                if not self.store.shared or time.monotonic() >= deadline:
                    raise
                _start_wait_log(error=str(exc), hint=f"tried again for up to "
                                f"{START_STORE_WAIT:g}s before the start is refused")
                await asyncio.sleep(1.0)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        stale = await self._patiently(lambda: self.store.release_node(self.node))
        # On SQLite these may carry another node name: the same data dir, started before
        # under another host name (a container's). Their processes and start marks are found
        # under that name.
        owners = {r.lease_owner or self.node for r in stale}
        # Results a stop kept here for the store (pendingresults): those attempts ended.
        kept_files = [pendingresults.pending_path(self.settings.data, owner)
                      for owner in owners | {self.node}]
        kept: dict[tuple[str, int], pendingresults.Kept] = {}
        for path in kept_files:
            kept.update(await asyncio.to_thread(pendingresults.read, path))
        # The processes to stop: those of the attempts left running, by attempt. An attempt
        # that ended (an earlier one of the run, one whose result was kept) keeps what it
        # detached on purpose (`setsid`, a service), as its end left it (startmarks).
        runs: dict[str, set[str | tuple[str, int]]] = {owner: set() for owner in owners}
        for r in stale:
            if (r.id, r.attempt) not in kept:
                runs[r.lease_owner or self.node].add((r.id, r.attempt))
        # And what this node started before its crash that another node took over when the
        # lease ran out (PostgreSQL): no longer its runs, but still its processes, beside
        # their retries.
        runs.setdefault(self.node, set()).update(self._marks.unended)
        left = orphans.find_all(runs)
        if left:
            event("dispatcher.orphans", logging.WARNING, runs=",".join(left),
                  processes=sum(len(p) for p in left.values()))
            if stuck := await orphans.stop(runs, left):
                event("dispatcher.orphans_left", logging.ERROR, pids=_pid_list(stuck),
                      hint="they survived SIGKILL (stuck in the kernel?): check them")
        # A terraform attempt's vars file (its values, secrets too) and an ansible attempt's
        # dir (the payload in its extravars) are removed as they end; ones a SIGKILL left
        # stay no longer than this start. Every one under this --data is left over: a data
        # dir has one server, and this one has started nothing yet (its orphans are gone).
        await asyncio.to_thread(terraform.remove_left_vars, self.settings.work_dir)
        await asyncio.to_thread(ansible.remove_left_dirs, self.settings.work_dir)
        others = {owner: marks_path(self.settings.data, owner) for owner in owners - {self.node}}
        recorded = set(self._marks.recorded).union(*(read_marks(p) for p in others.values()))
        # Processes of a run still there: it started, whatever the marks say.
        recorded |= {(r.id, r.attempt) for r in stale if r.id in left}
        # Where no marks file is there at all (a data dir restored from a backup, or new: a
        # container's without a volume, on PostgreSQL), nothing tells a run that never
        # started from one that did: taken for started (retried per its rule, else failed),
        # not queued again (a deploy ran twice, its record saying it never started). Nor
        # does a log file: one is written a second into an attempt, also while it waits to
        # start (a terraform directory's lock), and a restore moves them aside.
        marked = self._marks.existed or any(p.exists() for p in others.values())
        # (Its own kept file too where no run of it is left: another node decided them.)
        for run in stale:
            if (found := kept.get((run.id, run.attempt))) is not None:
                await self._patiently(functools.partial(self._settle_kept, run, *found))
                continue
            owner = run.lease_owner or self.node
            reason = f"interrupted: node {owner} restarted" + (
                "" if owner == self.node else f" (as node {self.node})")
            await self._patiently(functools.partial(self._interrupted, run, reason,
                                                    recorded=recorded if marked else None))
        if self.store.shared:
            await self._close_taken_over({(r.id, r.attempt) for r in stale})
        else:
            # One server per SQLite data dir: other names' marks were acted on above, or are
            # stale (a container's host name changes at each start: a file each, for ever).
            # On PostgreSQL other names' marks are left alone.
            own = marks_path(self.settings.data, self.node)
            for path in self.settings.data.glob("started-*.marks*"):
                if path.name not in (own.name, own.name + ".tmp"):
                    path.unlink(missing_ok=True)
        for path in kept_files:  # each acted on above, or decided meanwhile by another node
            path.unlink(missing_ok=True)
        if not self.store.shared:  # (one server per SQLite data dir: the others are stale)
            for path in self.settings.data.glob("results-*.pending"):
                path.unlink(missing_ok=True)
        self._marks.open()  # only now: a crash during the recovery above needs them again
        before = self.budget.snapshot()
        self.budget.refresh(await self._patiently(self.store.queued), before)
        if self._wake_fd is not None:
            self._loop.add_reader(self._wake_fd, self._woken)
        self._renewed_at = time.monotonic()  # the start's own work is no stall
        self._tasks = [
            asyncio.create_task(self._claim_loop(), name="hookrunner-claim"),
            asyncio.create_task(self._housekeeping(), name="hookrunner-housekeeping"),
            asyncio.create_task(self._renewing(), name="hookrunner-renewals"),
            asyncio.create_task(self._listen(), name="hookrunner-listen"),
            asyncio.create_task(self._fencing(), name="hookrunner-fencing"),
            asyncio.create_task(self._pruning(), name="hookrunner-prune"),
        ]
        for task in self._tasks:
            task.add_done_callback(self._task_ended)

    async def _close_taken_over(self, mine: set[tuple[str, int]]) -> None:
        """The log files here of attempts another node took over while this one was down
        (their lease expired): only this node reaches them, so it closes each with the note
        of how that node ended it, as the record says. (Not `mine`: decided above.)"""
        for run_id, attempt in set(self._marks.recorded) - mine:
            path = self.settings.log_path(run_id, attempt)
            if not path.exists():
                continue
            with contextlib.suppress(StoreUnavailable):  # only a note: no reason to refuse
                ended = [a for a in await self.store.attempts(run_id) if a.attempt == attempt]
                if not ended or f"lease of node {self.node} expired" not in ended[0].reason:
                    continue  # decided here before a crash, with its own end line
                end = await asyncio.to_thread(tail, path, NOTES_ROOM)
                closing = closing_note(end, end_note(ended[0].status, ended[0].reason))
                if not end.endswith(closing):  # (a start that crashed after writing it)
                    await asyncio.to_thread(append_whole, path, closing)

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        """Said at once (it was said only at the stop: a node that claimed nothing for hours
        looked healthy meanwhile); `failed_task` makes /readyz say it too."""
        if not task.cancelled() and isinstance(error := task.exception(), Exception):
            event("dispatcher.task_failed", logging.ERROR, task=task.get_name(),
                  error=f"{type(error).__name__}: {error}",
                  then=None if self._stopping else "this node runs nothing more: restart it")

    @property
    def failed_task(self) -> str | None:
        """A background task that ended with an error while serving, or that fails round
        after round (a bug, a row it cannot read): no run is claimed, renewed or canceled
        here, so the node is not ready."""
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                return f"{task.get_name()} failed: {type(task.exception()).__name__}"
        for name, (count, error) in self._loop_errors.items():
            if count >= LOOP_FAILING:
                return f"hookrunner-{name} failing ({count} times in a row): {error}"
        return None

    def _loop_failed(self, name: str, exc: Exception) -> None:
        """An error of a loop's round that is not an outage the store knows: said (with its
        traceback, the first time in a row), counted, and tried again."""
        count = self._loop_errors.get(name, (0, ""))[0] + 1
        error = f"{type(exc).__name__}: {exc}"[:200]
        self._loop_errors[name] = (count, error)
        if count == 1:
            logging.getLogger("hookrunner").error("dispatcher.loop_failed", exc_info=exc,
                                                  extra={"fields": {"task": name}})
        else:
            _loop_failed_log(task=name, error=error, in_a_row=count)

    @property
    def stopping(self) -> bool:
        """Taking no more work: the server is shutting down."""
        return self._stopping

    def begin_stop(self, grace: float | None = None) -> None:
        """Stop taking work now, and start the drain: running runs get `grace` seconds (default
        the `grace` setting) to finish, then are canceled. Safe to call more than once."""
        self._stopping = True
        self._wake_freed()
        if self._drain is None:
            limit = grace if grace is not None else self.settings.grace
            self._drain = asyncio.create_task(self._drain_runs(limit), name="hookrunner-drain")

    def begin_stop_threadsafe(self, now: bool = False) -> None:
        """`begin_stop` from a signal handler or another thread (the server's SIGTERM);
        `now`: cancel what is running at once instead of waiting out the grace period."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.begin_stop)
            if now:
                self._loop.call_soon_threadsafe(self._cancel_running)

    async def stop(self, grace: float | None = None) -> None:
        """Stop claiming; let running runs finish up to `grace`, then cancel them cleanly.

        A drain begun by `begin_stop` (at SIGTERM, while the HTTP server still finishes its
        requests) keeps its own deadline: the grace period counts from the signal."""
        self.begin_stop(grace)
        tasks = {t.get_name(): t for t in self._tasks}
        claim = tasks.pop("hookrunner-claim", None)
        assert self._drain is not None
        await self._drain  # which waits for the claim loop to end (see _drain_runs)
        if claim is not None and not claim.done():  # stuck on a store that does not answer
            tasks[claim.get_name()] = claim
        # Cancelled again until they end: a library's own wait_for (psycopg_pool's, on a
        # connection handed over in the same step) can swallow a cancellation, as ours did
        # (hookrunner.aio), and a loop that ends only by cancellation would then run on.
        pending = set(tasks.values())
        while pending:
            for t in pending:
                t.cancel()
            _, pending = await asyncio.wait(pending, timeout=RECANCEL_EVERY)
        # Each one ended (one that ended with an error said so: _task_ended; awaited one by
        # one, the first error stopped the rest, left running with the store about to close).
        if self._wake_fd is not None and self._loop is not None:
            self._loop.remove_reader(self._wake_fd)
        self._marks.close()

    async def _drain_runs(self, limit: float) -> None:
        # Housekeeping goes on while draining: leases are renewed (another node must not take
        # these runs over) and cancel requests are still honoured.
        deadline = time.monotonic() + limit
        claim = next((t for t in self._tasks if t.get_name() == "hookrunner-claim"), None)
        stuck: set[asyncio.Task[None]] = set()
        if claim is not None:
            # The claim loop is not cancelled mid-claim: runs the store just handed over would
            # be `running` with no process. It sees `_stopping` and ends after launching them
            # (drained too), unless the store does not answer it (then stop() cancels it).
            _, stuck = await asyncio.wait([claim], timeout=limit)
        running = [task for task, _ in self._active.values()]
        pending: set[asyncio.Task[None]] = set()
        if running:
            event("dispatcher.draining", runs=len(running), grace_seconds=round(limit, 1),
                  hint="a second Ctrl-C or SIGTERM cancels them at once")
            _, pending = await asyncio.wait(running, timeout=max(0.0, deadline - time.monotonic()))
            if pending:
                self._cancel_running()
        if not (pending or stuck):
            return
        # Canceled runs' processes go within their stop budget (an interrupted Terraform's
        # grace, then the group's); their results, and the claim, wait on a store that may
        # not answer (a table lock, a frozen database): not waited for without end.
        await self._actions_stopped(pending)
        _, left = await asyncio.wait(pending | stuck, timeout=STORE_STOP_WAIT)
        if claim is not None and claim in left:
            event("dispatcher.store_not_answering", logging.WARNING,
                  waited_seconds=round(limit + STORE_STOP_WAIT),
                  hint="stopping without it (a lock held, a database that does not answer); "
                       "what it owes is settled at the next start")
        if self._active:  # one the claim launched meanwhile is canceled at once
            self._cancel_running()
            _, late = await asyncio.wait([t for t, _ in self._active.values()],
                                         timeout=STORE_STOP_WAIT if not left else 0)
            left |= late
        runs = {t for t in left if t is not claim}
        if runs:
            ids = sorted(run_id for run_id, (task, _) in self._active.items() if task in runs)
            # How each had ended, where its action had (the store refused its record): the
            # line is all that says so once the next start takes it for interrupted.
            ended = {i: self._ending[i] for i in ids if i in self._ending}
            kept = await self._keep_results(list(ended.values()),
                                            unsaid=[i for i in ended if i not in self._said])
            event("run.result_abandoned", logging.ERROR, run_ids=",".join(ids),
                  reason="not ended while stopping (its action still stopping, or the store "
                         "not answering)",
                  ended=",".join(f"{i}={f.outcome}" + (f"/exit {f.exit_code}"
                                                       if f.exit_code is not None else "")
                                 for i, f in ended.items()) or None,
                  hint="the next start takes them for interrupted" if not (ended and kept) else
                  "the next start records them as they ended" if len(ended) == len(ids) else
                  "the next start records the ended ones as they ended, and takes the others "
                  "for interrupted")
            while runs:
                for t in runs:
                    t.cancel()
                _, runs = await asyncio.wait(runs, timeout=RECANCEL_EVERY)

    async def _actions_stopped(self, runs: set[asyncio.Task[None]]) -> None:
        """Wait until each canceled run's action has stopped (its result is being recorded,
        or it ended), within ACTION_STOP_WAIT: an interrupted Terraform was killed 10 s into
        its grace. What waits on the store then gets STORE_STOP_WAIT, as before."""
        run_of = {task: run_id for run_id, (task, _) in self._active.items()}
        until = time.monotonic() + ACTION_STOP_WAIT
        while (acting := {t for t in runs if not t.done() and run_of.get(t) not in self._recording}) \
                and time.monotonic() < until:
            await asyncio.wait(acting, timeout=min(POLL_STOPPED, until - time.monotonic()))

    def _cancel_running(self) -> None:
        for run_id, (_, cancel) in list(self._active.items()):
            self._cancel_reason.setdefault(run_id, SHUTTING_DOWN)
            cancel.set()

    # -- entry points used by the HTTP layer ---------------------------------------------

    @property
    def queued(self) -> int:
        return self.budget.queued

    def admit(self, runs: int) -> bool:
        """Reserve room for `runs` new runs under --max-queued; False when the queue is full.
        Called before journaling (see QueueBudget)."""
        return self.budget.admit(runs, self.settings.max_queued)

    def accepted(self, runs: int, reserved: int = 0) -> None:
        """`runs` were journaled (0 for a duplicate or a failed write); frees `reserved`."""
        self.budget.accepted(runs, reserved)
        if runs:
            self._wake.set()

    def _wake_freed(self) -> None:
        """A worker, a key or a run freed (or stopping): claim now, without the CLAIM_GAP."""
        self._wake.set()
        self._freed.set()

    def _woken(self) -> None:
        """Another HTTP process journaled runs (or asked for a cancel): claim now."""
        assert self._wake_fd is not None
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_fd, 4096):
                pass
        self._wake.set()

    async def request_cancel(self, run_id: str) -> str | None:
        async with self._cancels:  # two at once both saw it queued, and both counted its end
            before = await self.store.get_run(run_id)  # (to log a cancel that acts, once)
            status = await self.store.request_cancel(run_id, time.time())
        entry = self._active.get(run_id)
        if entry is not None:
            self._cancel_reason.setdefault(run_id, "canceled by request")
            entry[1].set()
        acted = before is not None and (
            (status == "canceled" and before.status != "canceled")
            or (status == "running" and not before.cancel_requested))
        if acted:  # (not one that had ended, nor a cancel asked for again)
            # A run running here ends with its own run.finished; one that was waiting ends
            # now, in the store, and this line is its only one.
            event("run.cancel_requested", run_id=run_id, status=status,
                  then="stopping it" if entry is not None else None)
            if status == "canceled" and before is not None:  # ended here and now, for good
                self.metrics.runs_ended.labels(before.rule, "canceled").inc()
        self._wake_freed()
        return status

    async def wait_for(self, run_ids: list[str], timeout: float,
                       stopping: Callable[[], bool] = lambda: False) -> list[dict[str, Any]] | None:
        """Each run's status, exit code and output tail once all ended; None on timeout."""
        return await wait_for_runs(self.store, self.settings, run_ids, timeout, self._finished,
                                   stopping=lambda: self._stopping or stopping(),
                                   ended=self._ended_lately.__contains__)

    def unrecorded(self, run_id: str) -> Finish | None:
        """How the run's attempt ended here, while the store refuses to take that result."""
        return self._unrecorded.get(run_id)

    def live_log(self, run_id: str, attempt: int) -> Path | None:
        """The log file of an attempt under way here (until its end is recorded), written to
        disk now if it was still only in memory (someone follows it); None if that attempt is
        not running on this node."""
        log = self._logs.get(run_id)
        run = self._runs.get(run_id)
        if log is None or run is None or run.attempt != attempt:
            return None
        return log.to_disk()

    # -- loops -----------------------------------------------------------------------------

    async def _listen(self) -> None:
        """Forward the store's new-work signal (NOTIFY, or the in-process event) to the loop."""
        wait = getattr(self.store, "wait_for_work", None)
        if wait is None:
            return
        while True:
            try:
                await wait(POLL)
            except StoreUnavailable:
                await asyncio.sleep(POLL)
            self._wake.set()

    async def _claim_loop(self) -> None:
        while not self._stopping:
            # With every worker busy the claim still runs (limit 0): it applies `skip`,
            # `replace` and `coalesce` to runs as they arrive, not when a worker frees up.
            free = max(0, self._workers_now() - len(self._active) + len(self._recording))
            if free:
                free = min(free, self._fd_room())
            # Cleared before the claim: a wake-up that arrives during it must not be lost.
            self._wake.clear()
            self._freed.clear()
            if self.no_room is not None and not self._room_again():
                await aio.wait_event(self._freed, NOT_STARTED_DELAY)  # (a stop sets it)
                continue
            try:
                if self._claim_unsure:
                    # The last claim failed, maybe after its commit went through (the reply
                    # lost: a PostgreSQL crash, a cut connection): runs leased to this node
                    # that it is not running, started now. Else they stayed `running` on
                    # this node unstarted, and ended `failed` (interrupted) a lease later.
                    lost = await self._claimed_unseen()
                    self._claim_unsure = False
                    for run in await self._fresh_leases(lost) if lost else ():
                        event("run.claim_recovered", logging.WARNING, run_id=run.id,
                              rule=run.rule, attempt=run.attempt)
                        self._launch(run)
                    free = max(0, free - len(lost))
                async with self._counting:
                    claimed = await self.store.claim(self.node, free, self.settings.lease,
                                                     time.time())
                    self.budget.claimed(len(claimed))
            except StoreUnavailable as exc:
                self._store_down = self._claim_unsure = True  # (housekeeping says its end)
                _store_down_log(error=str(exc))
                await asyncio.sleep(POLL)
                continue
            except Exception as exc:  # a store error of another kind: tried again, said
                self._loop_failed("claim", exc)
                await asyncio.sleep(POLL)
                continue
            self._loop_errors.pop("claim", None)
            self._skipped(getattr(claimed, "skipped", ()))
            runs: list[Run] = claimed
            if runs:
                runs = await self._fresh_leases(runs)
            for run in runs:
                self._launch(run)
            if runs and len(runs) == free:
                continue  # there may be more due work; claim again once a worker frees up
            if self._stopping:
                break
            if not runs:
                # Nothing could run: until something frees, arrivals re-claim at most every
                # CLAIM_GAP (their wake-ups are kept meanwhile; a freed worker cuts it short).
                await aio.wait_event(self._freed, CLAIM_GAP)
            await aio.wait_event(self._wake, await self._sleep_for())

    async def _claimed_unseen(self) -> list[Run]:
        """Runs the store has `running` under this node's lease that it is not running: a
        claim's commit that went through though its reply was lost. Not an attempt that ran
        here and ended unrecorded (the fence stopped it in the outage that failed the claim):
        that one is decided at its lease's expiry, per its retry rule, not started again."""
        running = await self.store.list_runs(status="running", limit=CLAIM_RECHECK_LIMIT)
        return [r for r in running if r.lease_owner == self.node and r.id not in self._active
                and self._ended_lately.get(r.id) != r.attempt]

    def _room_again(self) -> bool:
        """After a start mark found the disk full: whether one can be written now."""
        try:
            self._marks.probe()
        except OSError:
            return False
        event("dispatcher.room_again", was=self.no_room)
        self.no_room = None
        return True

    def _skipped(self, skipped: Iterable[Skipped]) -> None:
        """Runs a claim ended without starting them (store.base.Claimed): a line each, as for
        a run that ran, so a run id in `delivery.accepted` is followed to its end."""
        for run in skipped:
            self.metrics.runs_ended.labels(run.rule, "skipped").inc()
            event("run.finished", run_id=run.id, rule=run.rule, attempt=run.attempt,
                  status="skipped", reason=run.reason, delivery_id=run.delivery_id)

    async def _fresh_leases(self, runs: list[Run]) -> list[Run]:
        """The claimed runs whose lease is good to start on. A claim that waited long for the
        store (an outage, a pool at its limit) wrote leases from when it was asked: renew
        those now rather than start an action the fence stops at once; one that expired
        meanwhile and is another node's by now is not started here."""
        now = time.time()
        stale = [r.id for r in runs
                 if r.lease_expires is not None
                 and now >= r.lease_expires - self.settings.lease / 3]
        if not stale:
            return runs
        try:
            held = await self.store.renew(self.node, stale, self.settings.lease, now)
        except StoreUnavailable:
            return runs  # down again: started as before; the fence stops them if it lasts
        kept = []
        for r in runs:
            if r.id in stale:
                if r.id not in held:
                    event("run.lease_lost", logging.WARNING, run_id=r.id, reason="claim too slow")
                    continue
                r.lease_expires = now + self.settings.lease
            kept.append(r)
        return kept

    async def _sleep_for(self) -> float:
        try:
            due = await self.store.next_due()
        except StoreUnavailable:
            return POLL
        if due is None:
            return POLL
        now = time.time()
        # A due run that is still queued right after a claim is waiting for its key or a
        # worker: a finish, accept or cancel wakes the loop, so do not spin on it meanwhile.
        return POLL if due <= now else min(POLL, due - now)

    @property
    def _tick(self) -> float:
        """Seconds between housekeeping rounds: finer with a short --lease, so a renewal
        missed in a store hiccup is retried well before the fence (lease/3 before expiry)."""
        return min(HOUSEKEEPING, self.settings.lease / 8)

    async def _renewing(self) -> None:
        """This node's identity and leases, on a task of their own: behind the other rounds'
        reads, which wait the pool's 5 s for a connection after a PostgreSQL restart, a
        renewal came too late for a short --lease, and a blip of the database stopped every
        run (review: a restart of 0.3 s, --lease 3s)."""
        last_renew = 0.0
        while True:
            await asyncio.sleep(self._tick)
            now, mono = time.time(), time.monotonic()
            if now - last_renew < self.settings.lease / 3:
                continue
            held = False
            if self.identity_lost:  # nothing under this name is this server's to renew
                self._identity_ok = False
                continue
            with self._round("renewals"):
                identity_error: StoreUnavailable | None = None
                try:
                    if not await self.store.lock_node(self.node):
                        self._lose_identity()
                        continue
                except StoreUnavailable as exc:
                    # Its own connection (no slot for it, say): the pool's may work, and
                    # this node's leases must go on being renewed meanwhile.
                    identity_error = exc
                await self._renew(now, mono)
                last_renew = now  # only once renewed: a failed renewal is tried next round
                self._renewal_went_through()
                if identity_error is not None:
                    raise identity_error  # said, and no takeover while it lasts
                held = True
            self._identity_ok = held

    def _lose_identity(self) -> None:
        """Our identity's lock went with its connection and another server holds it now: it
        settles "our" running runs as left by a dead server (retried or failed), so ours
        are stopped at once, and the whole server stops (`on_identity_lost`), rather than
        go on accepting and journaling under a name it no longer holds."""
        if self.identity_lost:
            return  # said, and under way
        self.identity_lost = True
        self._identity_ok = False
        event("dispatcher.identity_lost", logging.ERROR, node=self.node,
              effect="stopping its running runs at once and the server",
              hint="another server runs with this node name: give each its own --node")
        for run_id in list(self._active):
            if run_id in self._recording:
                continue  # ended already: its result is being stored
            # Recorded by none here: the other server settles them as a dead one's (retried
            # per their rule, or failed), as it does a run whose lease was taken.
            self._give_up(run_id, None, IDENTITY_LOST, "another server took this node's name",
                          "identity lost")
        self.begin_stop(grace=0)
        if self.on_identity_lost is not None:
            self.on_identity_lost()

    @contextlib.contextmanager
    def _round(self, name: str) -> Iterator[None]:
        """One round of a background loop: an outage is marked and said, another error said
        and counted (the next round tries again), a round that went through clears it."""
        try:
            yield
        except StoreUnavailable as exc:
            self._store_down = True
            _store_down_log(error=str(exc))
        except Exception as exc:  # an error of another kind: next round, said
            self._loop_failed(name, exc)
        else:
            self._loop_errors.pop(name, None)

    async def _housekeeping(self) -> None:
        last_takeover = stats_due = 0.0
        while True:
            await asyncio.sleep(self._tick)
            now = time.time()
            with self._round("housekeeping"):
                # Other nodes' expired runs, while this node's own renewals go through (late
                # ones say the store stalled: then no takeover for a lease).
                renewing = time.monotonic() - self._renewed_at <= \
                    self.settings.lease / 3 + STALL_AFTER * self._tick
                if (self.store.shared and not self._store_down and self._identity_ok
                        and renewing and now - last_takeover >= self.settings.lease / 3
                        and now - self._reachable_since >= self.settings.lease):
                    last_takeover = now
                    for run in await self.store.expired(now):
                        if run.id in self._active:  # alive here: a clock step, not a death
                            continue
                        await self._interrupted(
                            run, f"interrupted: lease of node {run.lease_owner} expired",
                            expired_by=now)
                if self._active:
                    for run_id, by in (await self.store.cancel_requests(self.node)).items():
                        entry = self._active.get(run_id)
                        if entry is not None and not entry[1].is_set():
                            self._cancel_reason.setdefault(
                                run_id, f"{REPLACED}{by}" if by else "canceled by request")
                            entry[1].set()
                # Never across a claim (see QueueBudget), and never long behind one, which may
                # hang in an outage while the renewals above must go on: next round then.
                if await aio.acquire(self._counting, self._tick):
                    try:
                        before = self.budget.snapshot()
                        self.budget.refresh(await self.store.queued(), before)
                    finally:
                        self._counting.release()
                    if now >= stats_due:
                        started = time.monotonic()
                        for status, n in (await self.store.counts()).items():
                            self.metrics.runs_stored.labels(status).set(n)
                        due = await self.store.next_due()
                        self.metrics.queue_oldest.set(
                            0.0 if due is None else max(0.0, round(time.time() - due, 3)))
                        # Timed with any wait behind other reads: capped, so one slow admin
                        # listing does not leave the metric stale for long.
                        stats_due = now + min(STATS_MAX_WAIT,
                                              (time.monotonic() - started) * STATS_BACKOFF)
                    # Reads going through says little (they do on a full disk): only once
                    # the store takes writes again has the outage ended.
                    if self._store_down and await self.store.ping():
                        self._store_down, self._reachable_since = False, now
                        if self.store.shared:  # SQLite's writer says it, for every outage
                            settle_throttled()
                            event("store.available", node=self.node)  # its errors end
            # Also in an outage: the figure the hooks admit by (it was left as sampled while
            # a request held a reservation, until the store came back).
            self.metrics.queue_depth.set(self.queued)

    def _renewal_went_through(self) -> None:
        """A renewal late by more than a few rounds (the store hung, or this process did):
        other nodes could not renew theirs either, so their runs may look expired while
        they run well. Take none over until they had a lease's time to renew again."""
        mono = time.monotonic()
        late = mono - self._renewed_at - self.settings.lease / 3
        if late > STALL_AFTER * self._tick and self.store.shared:
            self._reachable_since = time.time()  # (`now` is the round's start, before it)
            event("dispatcher.store_stalled", logging.WARNING, node=self.node,
                  seconds=round(mono - self._renewed_at, 1),
                  hint="renewals were held up: no other node's run is taken over for a lease")
        self._renewed_at = mono

    async def _pruning(self) -> None:
        """Retention (--keep), on a task of its own: a first prune of a long history takes
        minutes, and housekeeping must go on meanwhile (on PostgreSQL a lease not renewed
        for that long stopped the node's own runs; a cancel from the shell waited)."""
        while self.settings.keep:
            try:
                await self._prune_once(self.settings.keep)
            except StoreUnavailable as exc:  # housekeeping tells the outage's end
                self._store_down = True
                _store_down_log(error=str(exc))
                then = f"tried again in {self._prune_every():g}s"
                if "disk is full" in str(exc):  # (SQLite's words) it cannot free room itself
                    then += ("; free some space on the data dir's file system: the prune must "
                             "write to free any, and the -wal file's pages need room first")
                event("store.prune_failed", logging.ERROR, error=str(exc), then=then)
            except Exception as exc:  # a data dir it cannot list, a bug: retention goes on
                event("store.prune_failed", logging.ERROR, error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self._prune_every())

    def _prune_every(self) -> float:
        return prune_interval(self.settings.keep or 0.0)

    async def _prune_once(self, keep: float) -> None:
        now = time.time()
        started = told = time.monotonic()

        def progress(what: str) -> Callable[[int], None]:  # a line every PRUNE_PROGRESS seconds
            def tell(so_far: int) -> None:  # (the run dirs' from a thread: event() locks)
                nonlocal told
                if time.monotonic() - told >= PRUNE_PROGRESS:
                    told = time.monotonic()
                    event("store.pruning", **{f"{what}_so_far": so_far},
                          seconds=round(told - started))
            return tell

        pruned = await self.store.prune(now - keep, progress("deliveries"))
        stale, problems = await asyncio.to_thread(
            stale_run_dirs, [self.settings.logs_dir, self.settings.work_dir], now - keep,
            frozenset(self._active))
        # A run still stored keeps its files, however old they are (a retry's wait).
        # (Only names a run id could have: one that is not text to the store, a stray
        # directory, must not fail every prune.)
        known = await self.store.known_runs(sorted({d.name for d in stale if d.name.isascii()}))
        files, failed = await asyncio.to_thread(
            remove_run_dirs, [d for d in stale if d.name not in known], progress("run_dirs"))
        problems += failed
        if pruned or files:
            event("store.pruned", deliveries=pruned, run_dirs=files,
                  seconds=round(time.monotonic() - started, 1))
        for problem in problems:
            _prune_dirs_log(error=problem)

    async def _fencing(self) -> None:
        """Its own loop, so a store call that hangs (a network cut) cannot delay it. After
        this process was frozen (SIGSTOP, a VM paused, swapped out) its renewals wake with it:
        they get a round to go through before a lease still unexpired by this clock is taken
        for lost (an 8 s pause under a 15 s lease stopped healthy runs, which then ended
        `failed` though no other node could have taken them)."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(self._tick)
            mono = time.monotonic()
            woke = mono - last > self._tick + FROZEN_AFTER
            last = mono
            self._fence(spare_unexpired=woke)

    def _fence(self, spare_unexpired: bool = False) -> None:
        """Stop runs whose lease this node could not renew (network cut, store outage) a
        renewal period before it expires: another node may take them over at expiry, and
        ours must be gone by then. Only on a shared store: with one server nobody else
        can take a run over, and stopping it would only lose its work."""
        if not self.store.shared:
            return
        # On the monotonic clock: a step of the wall clock (NTP) must not stop runs here.
        mono = time.monotonic()
        for run_id in list(self._runs):
            entry = self._active.get(run_id)
            renewed = self._renewed.get(run_id)
            if (entry is None or run_id in self._lost or renewed is None
                    or run_id in self._recording  # its action has ended: nothing to stop
                    or mono - renewed < self.settings.lease - self.settings.lease / 3
                    or (spare_unexpired and mono - renewed < self.settings.lease)):
                continue
            self._give_up(run_id, renewed, "canceled: lease not renewed in time",
                          "its lease could not be renewed", "not renewed")

    def _give_up(self, run_id: str, renewed: float | None, reason: str, why: str,
                 said: str) -> None:
        """Stop a running run that is no longer this server's to record (its lease is lost or
        about to be, or the node's name is): killed by `_doomed`'s time, nothing stored."""
        self._lost.add(run_id)
        self._cancel_reason[run_id] = reason
        self._doomed(run_id, renewed, why)
        self._active[run_id][1].set()
        event("run.lease_lost", logging.WARNING, run_id=run_id, reason=said)

    def _doomed(self, run_id: str, renewed: float | None, why: str) -> None:
        """The run's processes must be gone before the lease it last renewed (at `renewed`,
        monotonic) expires: its stop's grace ends KILL_BEFORE_EXPIRY before that. None: at
        once (another node holds the lease, whatever this node's clock says of it)."""
        now = time.monotonic()
        by = now if renewed is None else renewed + self.settings.lease * (1 - KILL_BEFORE_EXPIRY)
        earlier = self._stop_by.get(run_id)
        if earlier is not None and earlier <= by:
            return  # doomed already, as soon (a fence, then the renewal that found it taken)
        self._stop_by[run_id] = by
        if (log := self._logs.get(run_id)) is None:
            return
        if renewed is None:
            then = "what is left of it is killed at once (the run is another node's now)"
        elif by > now:
            then = (f"what is left of it is killed in {by - now:.1f}s, before the lease "
                    "expires (another node may take it over)")
        else:  # this process was frozen past it
            then = ("what is left of it is killed at once: the lease has expired (another "
                    "node may have taken it over)")
        log.note(f"{why}: stopping the run here; {then}")

    async def _renew(self, now: float, mono: float) -> None:
        """Renew this node's leases; `mono` is `now` on the monotonic clock (the leases
        expire `--lease` after `now`, whatever the store's answer took)."""
        ids = list(self._active)
        if not ids:
            return
        held = await self.store.renew(self.node, ids, self.settings.lease, now)
        for run_id in held:
            if run_id in self._runs:
                self._runs[run_id].lease_expires = now + self.settings.lease
                self._renewed[run_id] = mono
        for run_id in ids:
            if run_id not in held and run_id in self._active and run_id not in self._recording:
                # Another node may run it now: stop ours and record nothing. (A run being
                # recorded is "not held" because its finish just committed: nothing to stop.)
                # At once, not a lease after the last renewal by this node's clock: another
                # node's clock may run ahead, or this host was suspended (the monotonic
                # clock stood still), and the run goes on there already.
                self._give_up(run_id, None, "canceled: lease lost",
                              "another node holds its lease", "taken")

    async def _interrupted(self, run: Run, reason: str,
                           recorded: set[tuple[str, int]] | None = None,
                           expired_by: float | None = None) -> None:
        """A run whose process died with its node: retried per its rule, else failed.

        `recorded`: the start marks of the node it ran on, where this server can read them
        (its own data dir, where they were kept); with them, an action that never started is
        queued again at once whatever its rule says, since it never ran."""
        now = time.time()
        retry_at = None
        if recorded is not None and (run.id, run.attempt) not in recorded:
            retry_at, reason = now, f"{reason}{NEVER_STARTED}"
        else:
            spent = run.attempt
            if spent >= run.max_attempts and spent > 1 and "failed" in run.retry_on:
                spent -= await self._not_started(run.id)  # not the rule's retries (review)
            if should_retry("failed", spent, run.max_attempts, run.retry_on):
                retry_at = now + backoff_delay(spent, run.backoff, run.max_backoff)
        outcome = "failed"
        if run.cancel_requested:  # asked for while its server was down: what it was asked
            asked = f"canceled: replaced by run {run.superseded_by}" if run.superseded_by \
                else "canceled by request"
            outcome, reason, retry_at = "canceled", f"{asked} ({reason})", None
        # What the attempt wrote before its node died, where that node's disk is this one's:
        # kept with the record, as an ended attempt's is, so every node can show it; and the
        # note it would have ended with, which its file gets too once this is the decision.
        log = closing = None
        path = self.settings.log_path(run.id, run.attempt)
        if path.exists():
            log = (await asyncio.to_thread(log_tail, self.settings, run, self._record_cap)
                   ).replace("\x00", "")
            closing = closing_note(log, end_note(outcome, reason))
            log += closing
        elif run.lease_owner and run.lease_owner != self.node:
            # Its output is on that node's disk: a follower of its log got an empty answer,
            # as if the action had printed nothing. Where to read it (that node's API serves
            # its file, once it runs again).
            log = (f"[hookrunner] {reason} (its output so far, if it ran for a second or more, "
                   f"was written on node {run.lease_owner}, not here: read it through that "
                   f"node, GET /api/runs/{run.id}/log?attempt={run.attempt}, or in its --data "
                   f"dir, logs/{run.id}/{run.attempt}.log)\n")
        else:
            # Ours, with no file: it never started, or ran under a second (its output, kept
            # in memory, went with the process). Its log was empty, with no line saying how
            # the attempt ended.
            lost = "" if NEVER_STARTED in reason else (
                f"{NOTE_PREFIX}its output, kept in memory for its first second, was lost "
                "when its server stopped\n")
            log = lost + closing_note("", end_note(outcome, reason))
        decided = await self.store.finish(Finish(
            run_id=run.id, node=run.lease_owner or self.node, outcome=outcome, exit_code=None,
            reason=reason, outputs={}, finished_at=now, retry_at=retry_at, attempt=run.attempt,
            log=log, expired_by=expired_by))
        if not decided:  # another node took it over first, or its own renewed the lease
            return
        if closing is not None:
            await asyncio.to_thread(append_whole, path, closing)
        event("run.interrupted", logging.WARNING, run_id=run.id, rule=run.rule, reason=reason,
              retry=retry_at is not None)
        # As every attempt's end is (a log alert on `run.finished status=failed` missed these).
        event("run.finished", logging.WARNING if outcome == "failed" else logging.INFO,
              run_id=run.id, rule=run.rule, attempt=run.attempt, status=outcome,
              exit_code=None, reason=reason, delivery_id=run.delivery_id,
              retry_in=round(max(0.0, retry_at - now), 1) if retry_at is not None else None)
        if retry_at is None:  # (once written: a start tries a finish again in an outage)
            self.metrics.runs_ended.labels(run.rule, outcome).inc()

    async def _keep_results(self, finishes: list[Finish], unsaid: list[str] | None = None
                            ) -> bool:
        """Keep results the store would not take for the next start (`unsaid`: the runs
        whose run.finished line and metrics were not given yet: it gives them); False if
        they could not be written either (then it takes those runs for interrupted). Off the
        loop: a result may hold a log of megabytes, and an fsync waits for the disk."""
        try:
            await asyncio.to_thread(pendingresults.keep, pendingresults.pending_path(
                self.settings.data, self.node), finishes, unsaid or (),
                make_dir=bool(self.settings.db))
        except OSError as exc:
            event("run.result_not_kept", logging.ERROR, error=str(exc),
                  run_ids=",".join(f.run_id for f in finishes))
            return False
        return True

    async def _settle_kept(self, run: Run, finish: Finish, said: bool) -> None:
        """A result the last stop kept (pendingresults): recorded as the attempt ended. Its
        run.finished line and metrics were given then, unless the stop came before them
        (`said` False): given now, once recorded (else whoever decided it gave them)."""
        finish = dataclasses.replace(finish, node=run.lease_owner or self.node)
        if finish.log is None and self.settings.log_path(run.id, run.attempt).exists():
            finish = dataclasses.replace(finish, log=(await asyncio.to_thread(
                log_tail, self.settings, run, self._record_cap)).replace("\x00", ""))
        if await self.store.finish(finish):
            event("run.result_recovered", run_id=run.id, rule=run.rule, attempt=run.attempt,
                  status=finish.outcome, exit_code=finish.exit_code,
                  hint="the store refused it while the server last stopped; recorded now "
                       "as the attempt had ended")
            if not said:  # (a cancel asked for meanwhile: the store ended it canceled)
                seconds = finish.finished_at - run.started_at if run.started_at else None
                self._tell_finished(run, finish, seconds, asked=run.cancel_requested)

    # -- one run ---------------------------------------------------------------------------

    def _work_dir(self, run: Run) -> Path:
        return self.settings.work_dir / f"./{run.id}/{run.attempt}"  # (one join: log_path)

    def _launch(self, run: Run) -> None:
        cancel = asyncio.Event()
        task = asyncio.create_task(self._execute(run, cancel), name=f"run-{run.id}")
        self._active[run.id] = (task, cancel)
        self._runs[run.id] = run
        # When its lease began, on the monotonic clock (see _fence).
        age = 0.0 if run.lease_expires is None else max(
            0.0, time.time() - (run.lease_expires - self.settings.lease))
        self._renewed[run.id] = time.monotonic() - age
        self.metrics.running.set(len(self._active))

    async def _execute(self, run: Run, cancel: asyncio.Event) -> None:
        started = time.time()
        if run.attempt <= 1:
            self.metrics.start_latency.observe(max(0.0, started - run.created_at))
        try:
            result, log_text = await self._attempt(run, cancel)
            self._recording.add(run.id)
            self._wake_freed()
            await self._record(run, result, started, log_text)
        finally:
            # Only once its end is recorded: until then a crash must still find it started,
            # and a follower its log.
            self._marks.done(run.id, run.attempt)
            self._superseded_files.pop(self.settings.log_path(run.id, run.attempt), None)
            self._logs.pop(run.id, None)
            self._recording.discard(run.id)
            self._lost.discard(run.id)  # a late "not held" must not hide a later attempt
            self._active.pop(run.id, None)
            self._runs.pop(run.id, None)
            self._renewed.pop(run.id, None)
            self._stop_by.pop(run.id, None)
            self._cancel_reason.pop(run.id, None)
            self.metrics.running.set(len(self._active))
            self._wake_freed()
            self._ended_lately.pop(run.id, None)
            self._ended_lately[run.id] = run.attempt
            while len(self._ended_lately) > ENDED_KEPT:
                del self._ended_lately[next(iter(self._ended_lately))]
            async with self._finished:
                self._finished.notify_all()

    async def _attempt(self, run: Run, cancel: asyncio.Event) -> tuple[RunResult, str | None]:
        """Run one attempt with its log; whatever goes wrong becomes a failed result. Also the
        log's text, where it was small enough to keep in memory."""
        log = FileLog(self.settings.log_path(run.id, run.attempt), self.settings.log_cap,
                      deferred=True)
        self._logs[run.id] = log
        log.hidden = hidden_values(run.spec)
        assert self._loop is not None
        to_disk = self._loop.call_later(LOG_TO_DISK_AFTER, log.to_disk)
        event("run.started", run_id=run.id, rule=run.rule, attempt=run.attempt, action=run.action,
              delivery_id=run.delivery_id, hook=run.hook or None)
        log.note(f"run {run.id} rule {run.rule} attempt {run.attempt}/{run.max_attempts} "
                 f"on node {self.node}")
        try:
            result = await self._run_action(run, cancel, log, self._starting(run))
            if result.outcome in ("canceled", "timed_out"):
                await self._stop_stragglers(run, log)
        except NotStarted as refused:
            result = refused.result
        except Exception as exc:  # a bug in a runner must not kill the dispatcher
            logging.getLogger("hookrunner").exception("run.internal_error")
            result = RunResult("failed", None, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            to_disk.cancel()
        if result.outcome == "canceled" and run.id in self._cancel_reason:
            result.reason = await self._replaced_by_newest(run.id, self._cancel_reason[run.id])
        if log.hidden:  # an error may quote a value rendered from a secret (a path, a URL)
            result.reason = scrub(result.reason, log.hidden)
        result.reason = capped_reason(result.reason)  # (it may quote a payload's 300 KB)
        if result.outputs:  # a terraform output may echo a var made from one, or a var
            # the spec shows [redacted] for its name (`db_password`), or passed so named
            shown = tuple(sorted(set(log.hidden + named_secret_values(run.spec)
                                     + passed_secret_values(self.settings.environ,
                                                            self.settings.pass_env)),
                                 key=len, reverse=True))
            result.outputs = scrub_tree(result.outputs, shown) if shown else result.outputs
        log.note(end_note(result.outcome, result.reason))
        log.close()
        text = log.text()
        if log.failed is not None:
            # Its gap (if it has one) is the record's too where the record is read from the
            # file, or where there was no file and the memory could not hold it all.
            # A file that failed once and then took everything (a first open refused under a
            # low descriptor limit) has none (review).
            gap = (log.missed_any or not log.complete) and (
                text is None or (not log.on_disk and not log.complete))
            # Where memory or a later file held it all, nothing was lost: a warning, not an
            # error an operator looks for loss by.
            event("run.log_failed", logging.ERROR if gap else logging.WARNING,
                  run_id=run.id, error=str(log.failed),
                  output="partly lost (see the run's reason)" if gap
                  else "kept whole in the run's record")
            if not log.complete and log.on_disk:
                # A file with a gap it could not note (the disk stayed full): the record gets
                # what the file has and the note, and the file goes once that is stored (it
                # would be what the API serves, without them; and it takes room).
                if text is None:
                    text = await asyncio.to_thread(self._log_with_loss, run, log)
                self._superseded_files[log.path] = log
            if gap:
                result.reason = (result.reason + "; " if result.reason else "") + (
                    f"log incomplete: {log.failed.strerror or log.failed}")
        return result, text

    @property
    def _record_cap(self) -> int:
        """How much of a log file the run's record takes: the whole file (its capped output
        and its notes), unless its notes pass NOTES_ROOM; then its end."""
        return self.settings.log_cap + NOTES_ROOM

    @staticmethod
    def _settle_gapped(path: Path, log: FileLog, finish: Finish) -> None:
        """A log file with a gap, once the run's record is stored: removed where the record
        holds all of it (readers then get the record); where the store took only the end of
        it, the file gets its missing note and end instead (the store's write shows there is
        room again), or goes if even that fails (the record has the end)."""
        if finish.log is not None and finish.log.startswith(REFUSED_WHOLE):
            try:
                with open(path, "ab") as f:
                    f.write(log.loss_text().encode())
                return
            except OSError:
                pass
        with contextlib.suppress(OSError):
            path.unlink()

    def _log_with_loss(self, run: Run, log: FileLog) -> str:
        loss = log.loss_text()
        return log_tail(self.settings, run, max(0, self._record_cap - len(loss))) + loss

    def _starting(self, run: Run) -> Callable[[], None]:
        """RunContext.starting: the attempt's start mark, written once, just before its
        action starts a process or sends a request (written when the attempt began, a crash
        in between, under load, ended runs `interrupted` that never ran)."""
        marked = False

        def starting() -> None:
            nonlocal marked
            if marked:
                return
            try:
                self._marks.mark(run.id, run.attempt)
            except OSError as exc:  # a crash now could not tell that it started: do not start
                event("run.mark_failed", logging.ERROR, run_id=run.id, error=str(exc))
                no_room = exc.errno in NO_ROOM
                if no_room and self.no_room is None:
                    self.no_room = f"cannot record a run's start: {exc.strerror or exc}"
                    event("dispatcher.no_room", logging.ERROR, data=str(self.settings.data),
                          error=str(exc), then="no run starts until it has room again "
                          f"(checked every {NOT_STARTED_DELAY:g}s); the queued runs wait")
                # Nothing ran: queued again as a process that could not start is, not failed
                # for good: for as long as the disk is full, else a few times.
                raise NotStarted(RunResult(
                    "failed", None, f"cannot record the start: {exc}", not_started=True,
                    waits_for_room=no_room)) from None
            marked = True

        return starting

    async def _run_action(self, run: Run, cancel: asyncio.Event, log: FileLog,
                          starting: Callable[[], None]) -> RunResult:
        if "render_error" in run.spec:
            return RunResult("failed", None, f"template error: {run.spec['render_error']}",
                             final=True)
        runner = RUNNERS.get(run.action)
        if runner is None:
            return RunResult("failed", None, f"unknown action type {run.action!r}")
        body, payload = b"", None
        if runner.needs_delivery(run.spec):
            delivery = await self.store.get_delivery(run.delivery_id)
            if delivery is not None:
                body = delivery.body
                with contextlib.suppress(PayloadError):
                    payload = parse_body(body, Headers(delivery.headers).get("content-type"))
        work = self._work_dir(run)  # made by the runners that use it (ansible)
        env = {
            **self._kept_env,
            "HOOKRUNNER_RUN_ID": run.id, "HOOKRUNNER_DELIVERY_ID": run.delivery_id,
            "HOOKRUNNER_HOOK": run.hook, "HOOKRUNNER_RULE": run.rule,
            "HOOKRUNNER_ATTEMPT": str(run.attempt), "HOOKRUNNER_NODE": self.node,
        }
        ctx = RunContext(
            run_id=run.id, delivery_id=run.delivery_id, hook=run.hook,
            rule=run.rule, attempt=run.attempt, node=self.node,
            root=self._fixed_root or self.settings.root.resolve(),
            work_dir=work, env=env, timeout=run.timeout, cancel=cancel, log=log,
            raw_body=body, payload=payload, starting=starting,
            stop_by=functools.partial(self._stop_by.get, run.id),
        )
        try:
            return await runner.run(run.spec, ctx)
        except ActionError as exc:
            # Refused by the spec alone (not by a file or variable a retry may find): final.
            # (Off the loop: ansible's reads the playbook again.)
            refused = await asyncio.to_thread(runner.refusal, run.spec, ctx.root)
            return RunResult("failed", None, str(exc), final=refused is not None)

    async def _cancel_asked(self, run_id: str) -> bool:
        """Whether a cancel of this node's running run is asked for in the store (the narrow
        query housekeeping polls, not the whole run with its spec)."""
        with contextlib.suppress(StoreUnavailable):
            return run_id in await self.store.cancel_requests(self.node)
        return False

    async def _replaced_by_newest(self, run_id: str, reason: str) -> str:
        """A run replaced while it stopped may have been replaced again (the first replacer
        itself superseded): its reason names the run its `superseded_by` names."""
        if not reason.startswith(REPLACED):
            return reason
        with contextlib.suppress(StoreUnavailable):
            current = await self.store.get_run(run_id)
            if current is not None and current.superseded_by:
                return f"{REPLACED}{current.superseded_by}"
        return reason

    async def _stop_stragglers(self, run: Run, log: FileLog) -> None:
        """A canceled or timed-out run's processes must all be gone, also those that left its
        process group for a session of their own (`setsid`, a daemon's double fork; ansible's
        workers before the play reported its pid): each still carries the run's id."""
        runs = {self.node: [run.id]}
        found = await asyncio.to_thread(orphans.find_all, runs)
        if found:
            count = len(found[run.id])
            log.note(f"stopping {count} process(es) of the run outside its process group")
            event("run.stragglers", logging.WARNING, run_id=run.id, processes=count)
            grace = process.grace_left(functools.partial(self._stop_by.get, run.id),
                                       orphans.STOP_GRACE)
            if stuck := await orphans.stop(runs, found, grace=grace):
                log.note(f"{len(stuck)} process(es) of the run survived SIGKILL: "
                         f"{_pid_list(stuck)}")
                event("run.stragglers_left", logging.ERROR, run_id=run.id,
                      pids=_pid_list(stuck), hint="stuck in the kernel? check them")

    async def _not_started(self, run_id: str, idle: bool = False, busy: bool = False) -> int:
        """The run's attempts that never started (a start that failed, or a crash before
        it); `idle`: only those counted as tries, `busy`: only those that were not (the
        node's own runs held what they lacked)."""
        try:
            attempts = await self.store.attempts(run_id)
        except StoreUnavailable:
            return 0
        if idle:
            return sum(a.reason.endswith(NOT_STARTED) for a in attempts)
        if busy:
            return sum(a.reason.endswith(NOT_STARTED_BUSY) for a in attempts)
        return sum(NOT_STARTED in a.reason or a.reason.endswith(NEVER_STARTED) for a in attempts)

    def _short_of(self, running: int, reason: str) -> None:
        """A start failed for want of what this node's `running` runs hold (shortcap)."""
        if self._short.failed(running, time.monotonic()):
            event("dispatcher.short_of_resources", logging.WARNING, error=reason,
                  running=running, workers=self.settings.workers,
                  then=f"at most {self._short.cap} run(s) at once here, one more for each run "
                  f"that succeeds and for every {NOT_STARTED_DELAY:g}s without a failed start "
                  "(raise the server's limits: LimitNOFILE=, LimitNPROC= in its systemd unit)")

    def _fd_room(self) -> int:
        """How many more runs the descriptors left allow (shortcap.fd_room); counted per
        claim (a directory listing, ~4 us), not per run."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        try:
            open_fds = len(os.listdir("/proc/self/fd"))
        except OSError:  # no /proc (or no descriptor to list it with): the cap decides
            return self.settings.workers
        if soft == resource.RLIM_INFINITY:
            return self.settings.workers
        room = fd_room(soft, open_fds)
        if room == 0 and not self._active:
            # None of its own runs will free any: one is tried, and a failure to start it
            # is handled as any (audit: what the server holds at rest, with the HTTP workers'
            # pipes and metrics files, left no room under a limit of 64, for good).
            room = 1
        if room == 0:
            _few_fds_log(open=open_fds, limit=soft, then="runs wait for descriptors to be "
                         "freed (raise LimitNOFILE=)")
        return room

    def _workers_now(self) -> int:
        limit, lifted = self._short.limit(time.monotonic())
        if lifted:
            event("dispatcher.resources_again", workers=self.settings.workers)
        return limit

    def _started_again(self) -> None:
        if self._short.ended():
            event("dispatcher.resources_again", workers=self.settings.workers)

    @property
    def short_cap(self) -> int | None:
        """How many runs may run here at once while short of resources; None: --workers."""
        return self._short.cap

    async def _record(self, run: Run, result: RunResult, started: float,
                      log_text: str | None) -> None:
        if run.id in self._lost:
            self._lost.discard(run.id)
            return
        now = time.time()
        if result.outcome == "succeeded":  # (not a run whose own fork failed: audit)
            self._started_again()
        # Kept for a stop from now on, before the store is asked anything below: a store
        # that hangs on those reads held the result back, and a stop that gave up on it left
        # the run to the next start as interrupted (its exit code lost, or run again). Decided
        # as in an outage until they answer; a large log (None) is read from its file then.
        offline = dataclasses.replace(result)
        self._ending[run.id] = self._finish(
            run, offline, now, await self._retry_at(run, offline, now, ask=False), log_text)
        try:
            await self._decide_and_record(run, result, started, now, log_text)
        finally:
            self._unrecorded.pop(run.id, None)
            self._ending.pop(run.id, None)
            self._said.discard(run.id)

    async def _retry_at(self, run: Run, result: RunResult, now: float,
                        ask: bool = True) -> float | None:
        """When the attempt is tried again (None: not), adding why to `result.reason`. With
        `ask=False`, without the store's reads, as they answer in an outage."""
        async def not_started(**which: bool) -> int:
            return await self._not_started(run.id, **which) if ask else 0

        retry_at = None
        # Runs of this node's still running (this one's slot is free: it is being recorded).
        others = len(self._active) - len(self._recording)
        delay = None
        if result.not_started and not result.waits_for_room and others > 0:
            # What it lacked, this node's own runs may hold: not counted as one of its tries
            # (audit: with a low descriptor limit, half of a burst's accepted runs used them
            # up and never ran), tried every few seconds, and counted after ten minutes of it
            # (a shortage that is not the node's own doing, with a run always going).
            delay = busy_retry_delay(await not_started(busy=True), NOT_STARTED_DELAY)
        if delay is not None:
            if ask:
                self._short_of(others, result.reason)
            retry_at = now + delay
            result.reason += NOT_STARTED_BUSY
        elif result.not_started and (result.waits_for_room or (
                tries := await not_started(idle=True)) < NOT_STARTED_TRIES):
            # Nothing ran, whatever the rule's retries say: as a run whose claim a crash cut
            # short, it is queued again (a few times: a lasting shortage fails it).
            retry_at = now + (NOT_STARTED_DELAY if result.waits_for_room
                              else idle_retry_delay(tries, NOT_STARTED_DELAY))
            result.reason += NOT_STARTED
        elif result.outcome == "canceled" and self._cancel_reason.get(run.id) == SHUTTING_DOWN:
            # Cut short by a stop, not by its own doing: retried per its rule as a run a
            # crash cut short is, at the next start (a planned stop no worse than a crash);
            # unless a cancel was asked for meanwhile (then the store ends it canceled).
            if should_retry("failed", run.attempt, run.max_attempts, run.retry_on):
                if ask and await self._cancel_asked(run.id):
                    self._cancel_reason[run.id] = CANCEL_ASKED[0]
                    result.reason = f"{CANCEL_ASKED[0]} (while the server was stopping)"
                else:
                    retry_at = now
                    result.reason += "; queued again: its rule retries, as after a crash"
        else:
            spent = run.attempt
            if spent >= run.max_attempts and spent > 1 and result.outcome in run.retry_on:
                # Attempts that never started are not the rule's retries.
                spent -= await not_started()
            if should_retry(result.outcome, spent, run.max_attempts, run.retry_on):
                if result.final:
                    result.reason += result.final_note or NOT_RETRIED
                else:
                    retry_at = now + retry_delay(spent, run.backoff, run.max_backoff,
                                                 result.retry_after)
        return retry_at

    def _finish(self, run: Run, result: RunResult, now: float, retry_at: float | None,
                log_text: str | None) -> Finish:
        return Finish(run_id=run.id, node=self.node, outcome=result.outcome,
                      exit_code=result.exit_code, reason=result.reason, outputs=result.outputs,
                      finished_at=now, retry_at=retry_at, attempt=run.attempt,
                      # PostgreSQL text cannot hold NUL; a log file keeps the output as it was.
                      log=None if log_text is None else log_text.replace("\x00", ""),
                      replaced_by=named_replacer(result.reason))

    async def _decide_and_record(self, run: Run, result: RunResult, started: float,
                                 now: float, log_text: str | None) -> None:
        retry_at = await self._retry_at(run, result, now)
        # A run asked to cancel (or replaced) is not retried: the store's finish ends it
        # canceled (Store.finish: cancel_retry). Its log line says so already. One asked for
        # in the store that this node has not seen yet (polled every half second: a CLI
        # cancel, a replace flagged by a claim) is looked up, or the metric missed it and
        # the log promised a retry that never came.
        asked = self._cancel_reason.get(run.id, "").startswith(CANCEL_ASKED) or (
            retry_at is not None and await self._cancel_asked(run.id))
        self._tell_finished(run, self._finish(run, result, now, retry_at, None), now - started,
                            asked)
        self._said.add(run.id)  # (a stop from now on keeps its result as said)
        if log_text is None:  # a large log: read back its kept part (capped) off the loop
            log_text = await asyncio.to_thread(log_tail, self.settings, run, self._record_cap)
        finish = self._finish(run, result, now, retry_at, log_text)
        # The result must not be lost to a store outage (a full disk, a lock, a network cut):
        # tried until it is written, every RECORD_RETRY_MAX at most, its lease renewed all the
        # while. Given up only once the server stops: then the start mark tells the next start.
        self._ending[run.id] = finish
        await self._record_until_stored(run, result, finish)

    def _tell_finished(self, run: Run, finish: Finish, seconds: float | None,
                       asked: bool) -> None:
        """The attempt's run.finished line and metrics, once: as its result is decided, or at
        the next start for one a stop kept before that (_settle_kept)."""
        retry_at, metrics = finish.retry_at, self.metrics
        metrics.child(metrics.runs, run.rule, finish.outcome).inc()
        if retry_at is None:
            metrics.child(metrics.runs_ended, run.rule, finish.outcome).inc()
        elif asked:  # asked to cancel: the store ends it canceled instead of retrying it
            metrics.child(metrics.runs_ended, run.rule, "canceled").inc()
        if seconds is not None:
            metrics.child(metrics.run_duration, run.rule).observe(seconds)
        # A failing action is what an operator filtering at warning must still see.
        level = logging.WARNING if finish.outcome in ("failed", "timed_out") else logging.INFO
        event("run.finished", level, run_id=run.id, rule=run.rule, attempt=run.attempt,
              status=finish.outcome, exit_code=finish.exit_code, reason=finish.reason,
              seconds=None if seconds is None else round(seconds, 3),
              delivery_id=run.delivery_id,
              retry_in=round(retry_at - finish.finished_at, 1) if retry_at and not asked
              else None,
              then="canceled (asked meanwhile: not retried)" if retry_at and asked else None)

    async def _record_until_stored(self, run: Run, result: RunResult, finish: Finish) -> None:
        delay, tries = 0.0, 0
        while True:
            if delay:
                await asyncio.sleep(delay)
            try:
                await self.store.finish(finish)
                path = self.settings.log_path(run.id, run.attempt)
                gapped = self._superseded_files.pop(path, None)
                if gapped is not None:
                    self._logs.pop(run.id, None)  # a follower now reads the file or the record
                    await asyncio.to_thread(self._settle_gapped, path, gapped, finish)
                return
            except StoreUnavailable as exc:
                tries += 1
                self._unrecorded[run.id] = finish
                event("run.record_failed", logging.ERROR, run_id=run.id, error=str(exc),
                      tries=tries)
            except Exception:  # a bug, not an outage: retrying will not help; the lease will
                logging.getLogger("hookrunner").exception("run.record_failed")
                return
            if self._stopping and tries >= RECORD_TRIES_WHEN_STOPPING:
                # Kept for the next start, which records it as it ended; where even that
                # fails, the next start takes it for interrupted (and a retry rule runs it
                # again): the line says how it had ended.
                kept = await self._keep_results([finish])
                event("run.result_abandoned", logging.ERROR, run_id=run.id, status=result.outcome,
                      exit_code=result.exit_code,
                      hint="the next start records it as it ended" if kept else
                      "the next start takes it for interrupted")
                return  # (its log file stays: what the next start records of it)
            if finish.log is not None and len(finish.log) > SHORT_LOG:
                # A full disk may take the result but not a copy of megabytes of output (the
                # log file has it all): the status must not be lost for want of the copy.
                finish = dataclasses.replace(finish, log=(
                    f"{REFUSED_WHOLE}; its last {SHORT_LOG} "
                    f"characters follow (the log file holds more, unless the disk was full "
                    f"for it too)\n{finish.log[-SHORT_LOG:]}"))
                self._ending[run.id] = finish
            delay = min(RECORD_RETRY_MAX, max(0.5, delay * 2))

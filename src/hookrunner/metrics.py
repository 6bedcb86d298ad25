"""Prometheus metrics, in a registry of our own so tests can create several apps.

With `--http-workers` > 1 the processes of a server write their values to files under
PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode, set up by multiproc before
this module is imported) and /metrics, served by the main process, sums them.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from hookrunner.shared import MULTIPROC_DIR

# The *_created series double every counter's size for little use to operators.
disable_created_metrics()  # type: ignore[no-untyped-call]

DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self, summed: bool = False) -> None:
        """`summed`: render the values of every process of the server (multiproc)."""
        self.summed = summed
        self.registry = CollectorRegistry()
        r = self.registry
        self.deliveries = Counter(
            "hookrunner_deliveries", "Deliveries by hook and outcome "
            "(accepted, duplicate, rejected_<reason>)", ["hook", "outcome"], registry=r)
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}  # see child()
        self.runs = Counter(
            "hookrunner_runs_finished", "Run attempts finished, by rule and status",
            ["rule", "status"], registry=r)
        # What to alert on: a retried attempt that failed counts above, not here.
        self.runs_ended = Counter(
            "hookrunner_runs_ended", "Runs ended for good (no retry to come), by rule and "
            "status", ["rule", "status"], registry=r)
        self.run_duration = Histogram(
            "hookrunner_run_duration_seconds", "Duration of run attempts", ["rule"],
            buckets=DURATION_BUCKETS, registry=r)
        self.start_latency = Histogram(
            "hookrunner_run_start_delay_seconds", "Time from delivery to the run's start",
            buckets=LATENCY_BUCKETS, registry=r)
        # Only the main process sets these; "livesum" adds nothing for the other processes.
        self.queue_depth = Gauge(
            "hookrunner_queue_depth", "Runs waiting to run", registry=r,
            multiprocess_mode="livesum")
        self.running = Gauge(
            "hookrunner_running", "Runs executing on this node", registry=r,
            multiprocess_mode="livesum")
        # The limits, so a dashboard shows depth/limit and an alert fires before the 503s.
        self.queue_limit = Gauge(
            "hookrunner_queue_limit", "--max-queued: past it hooks answer 503", registry=r,
            multiprocess_mode="livemax")
        self.workers_limit = Gauge(
            "hookrunner_workers", "--workers: runs this node executes at once at most",
            registry=r, multiprocess_mode="livemax")
        # A stuck queue (a run holding its concurrency key, every worker busy with hung
        # actions) shows here long before the queue fills.
        self.queue_oldest = Gauge(
            "hookrunner_queue_oldest_seconds", "How long the run that has waited longest for "
            "its start has been due (queued, past any retry backoff; every node's), 0 when "
            "none waits", registry=r, multiprocess_mode="livemax")
        self.runs_stored = Gauge(
            "hookrunner_runs_stored", "Runs in the store by status (all nodes; skipped and "
            "canceled-before-start included, which never reach runs_finished), until pruned",
            ["status"], registry=r, multiprocess_mode="livesum")
        self.reload_failures = Counter(
            "hookrunner_reload_failures", "Rule reloads that failed validation", registry=r)
        self.reload_failed = Gauge(
            "hookrunner_rules_reload_failed", "1 while the last load of the rules failed (the "
            "rules before it are live), else 0", registry=r, multiprocess_mode="livemax")
        # No hook label: the id is the client's (a counter per random path would grow).
        self.unknown_hooks = Counter(
            "hookrunner_unknown_hook_requests", "Requests to /hooks/ ids the rules do not "
            "define (404): a sender still posting to a renamed hook", registry=r)
        self.condition_errors = Counter(
            "hookrunner_condition_errors", "Deliveries whose rule's when could not be evaluated "
            "(an undefined field, a type mismatch): the rule did not match", ["rule"], registry=r)

    def child(self, metric: Any, *values: str) -> Any:
        """`metric.labels(*values)`, found once (labels() takes a lock and checks its values:
        a few microseconds, several times per delivery and per run). Only for values that
        are configured names (hooks, rules) and fixed outcomes: the cache is bounded as the
        metric's own children are."""
        key = (metric, values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def delivery(self, hook: str, outcome: str) -> Any:
        """`deliveries.labels(hook, outcome)`, found once (see child)."""
        return self.child(self.deliveries, hook, outcome)

    def rules_loaded(self, ok: bool) -> None:
        """A load of the rules ended: alerts want the state, not only a count of failures."""
        self.reload_failed.set(0 if ok else 1)
        if not ok:
            self.reload_failures.inc()

    def render(self) -> bytes:
        if self.summed and os.environ.get(MULTIPROC_DIR):
            summed = CollectorRegistry()
            MultiProcessCollector(summed)  # type: ignore[no-untyped-call]
            text = generate_latest(summed)
            return text + self._absent_headers(text)
        return generate_latest(self.registry)

    def _absent_headers(self, text: bytes) -> bytes:
        """The HELP and TYPE lines of the metrics the summed text lacks: the multiprocess
        files hold a labelled metric only from its first sample, where one process shows it
        from the start (a dashboard or an alert on it saw "no such metric")."""
        shown = {line.split(b" ")[2] for line in text.splitlines() if line.startswith(b"# TYPE ")}
        ours = generate_latest(self.registry).splitlines()
        extra = [line for line in ours if line.startswith((b"# HELP ", b"# TYPE "))
                 and line.split(b" ")[2] not in shown]
        return b"".join(line + b"\n" for line in extra)

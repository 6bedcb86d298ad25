"""Cluster figures: 1 and 3 `hookrunner serve` nodes sharing one PostgreSQL database.

    .venv/bin/python bench/cluster.py [--duration 8] [--connections 24] [--samples 100]

A throwaway PostgreSQL cluster is started for the run (tests/pgcluster.py) with a fresh
database per scenario. Scenarios:
  ingest   a github hook whose rule does not match: verify, parse, match, journal. One wrk
           per node at the same time (the connections split between them); requests/s are
           summed. Every delivery id answered 202 is then looked up in the database.
  actions  a matching rule whose script appends its run id to a file. wrk for the duration,
           then the nodes drain the queue; actions/s = runs / (last end - first start).
           Every run must have executed exactly once.
  handoff  node A (--workers 1, its worker held by a blocker run) and node B: deliveries are
           posted to A one at a time, so B runs each, woken by NOTIFY. Reported: time from
           sending the POST to the script's first line, p50/p99, and the same for deliveries
           posted to B and run by B (no hand-off) as the baseline.
On a 2-core machine the point is the per-node cost and that nothing is lost, not speed-up:
every node, wrk and PostgreSQL share the same two cores.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
from common import (
    GITHUB_SECRET,
    HOOK,
    NO_MATCH_RULE,
    REPO,
    Proc,
    WrkResult,
    github_headers,
    github_push,
    machine,
    percentile,
    require_tools,
    run_wrk,
    running,
    start_hookrunner,
    workdir,
)

sys.path.insert(0, str(REPO))
from tests import pgcluster  # after the sys.path line: the repository root is not on it before

LEASE = "15s"
DRAIN_TIMEOUT = 600.0  # seconds the nodes get to run the backlog of the actions scenario
START_TIMEOUT = 10.0  # seconds a hand-off run gets to start
ACTION = HOOK + """
rules:
  - name: record
    hook: github
    when: not (payload.block | default(false))
    run: {shell: {argv: ["scripts/record.sh"]}}
  - name: block
    hook: github
    when: payload.block | default(false)
    run: {shell: {argv: ["scripts/block.sh"]}}
"""


@dataclass
class Row:
    scenario: str
    nodes: int
    wrk: WrkResult
    accepted: int
    stored: int
    runs: int = 0
    executed_once: int = 0
    actions_per_s: float = 0.0

    @property
    def non_202(self) -> int:
        return sum(n for s, n in self.wrk.statuses.items() if s != 202)


def _scripts(wd: Path, out: Path) -> None:
    """record.sh appends `<run id> <node> <unix time>`; block.sh waits for out/release."""
    (wd / "scripts").mkdir(parents=True, exist_ok=True)
    for name, body in (
        ("record.sh", f'echo "$HOOKRUNNER_RUN_ID $HOOKRUNNER_NODE $(date +%s.%N)" >> "{out}/runs"'),
        ("block.sh", f'while [ ! -e "{out}/release" ]; do sleep 0.05; done'),
    ):
        path = wd / "scripts" / name
        path.write_text("#!/bin/sh\n" + body + "\n")
        path.chmod(0o755)


def start_nodes(base: Path, db: str, names: Sequence[str], rules: str,
                workers: Sequence[int] | None = None) -> list[Proc]:
    """One node per name, each with its own work dir (--root, --data) and --node name."""
    out = base / "out"
    out.mkdir(parents=True, exist_ok=True)
    procs = []
    for i, name in enumerate(names):
        wd = base / name
        _scripts(wd, out)
        args = ["--db", db, "--node", name, "--lease", LEASE, "--max-queued", "10000000",
                "--workers", str(workers[i] if workers else 8)]
        procs.append(start_hookrunner(wd, rules, args=args, name=name))
    return procs


def wrk_all(procs: Sequence[Proc], args: argparse.Namespace, scratch: Path) -> WrkResult:
    """wrk against every node at once; the figures summed (latencies: the worst node's)."""
    body = github_push()
    headers = github_headers(body)
    results: list[WrkResult] = [None] * len(procs)  # type: ignore[list-item]
    per_node = max(1, args.connections // len(procs))

    def one(i: int) -> None:
        results[i] = run_wrk(procs[i].url + "/hooks/github", body, headers,
                             connections=per_node, duration=args.duration,
                             scratch=scratch / f"wrk-{i}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(procs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    for r in results:
        statuses.update(r.statuses)
        errors.update(r.errors)
    return WrkResult(
        requests=sum(r.requests for r in results),
        seconds=max(r.seconds for r in results),
        statuses=dict(statuses), p50_ms=max(r.p50_ms for r in results),
        p99_ms=max(r.p99_ms for r in results), errors=dict(errors),
        delivery_ids=[i for r in results for i in r.delivery_ids],
    )


def stored(db: str, delivery_ids: Sequence[str]) -> int:
    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT count(*) FROM deliveries WHERE id = ANY(%s)",
                           [list(delivery_ids)]).fetchone()
    return int(row[0]) if row else 0


def drain(db: str) -> tuple[int, float]:
    """Wait until no run is queued or running; (runs, last end - first start in seconds)."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    with psycopg.connect(db, autocommit=True) as conn:
        while True:
            row = conn.execute("SELECT count(*) FILTER (WHERE status IN ('queued', 'running')), "
                               "count(*), min(started_at), max(finished_at) FROM runs").fetchone()
            assert row is not None
            if row[0] == 0:
                return int(row[1]), float(row[3] - row[2]) if row[1] else 0.0
            if time.monotonic() > deadline:
                raise RuntimeError(f"{row[0]} runs still pending after {DRAIN_TIMEOUT:g}s")
            time.sleep(0.25)


def bench_ingest(base: Path, url: str, n: int, args: argparse.Namespace) -> Row:
    db = pgcluster.create_database(url)
    with ExitStack() as stack:
        procs = [stack.enter_context(running(p))
                 for p in start_nodes(base, db, [f"n{i + 1}" for i in range(n)], NO_MATCH_RULE)]
        result = wrk_all(procs, args, base / "wrk")
    return Row("ingest", n, result, len(result.delivery_ids), stored(db, result.delivery_ids))


def bench_actions(base: Path, url: str, n: int, args: argparse.Namespace) -> Row:
    db = pgcluster.create_database(url)
    with ExitStack() as stack:
        procs = [stack.enter_context(running(p))
                 for p in start_nodes(base, db, [f"n{i + 1}" for i in range(n)], ACTION)]
        result = wrk_all(procs, args, base / "wrk")
        runs, span = drain(db)
    lines = (base / "out" / "runs").read_text().split("\n") if (base / "out" / "runs").exists() else []
    per_run = Counter(line.split()[0] for line in lines if line)
    return Row("actions", n, result, len(result.delivery_ids), stored(db, result.delivery_ids),
               runs=runs, executed_once=sum(1 for c in per_run.values() if c == 1),
               actions_per_s=runs / span if span else 0.0)


def _start_delay(proc: Proc, out: Path, seen: int) -> float:
    """POST one delivery to `proc`; seconds until its script wrote its line."""
    body = github_push(size=200)
    sent = time.time()
    answer = httpx.post(proc.url + "/hooks/github", content=body, timeout=30,
                        headers=github_headers(body, GITHUB_SECRET))
    run_id = answer.json()["runs"][0]
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        lines = (out / "runs").read_text().splitlines() if (out / "runs").exists() else []
        if len(lines) > seen:
            rid, _node, at = lines[-1].split()
            assert rid == run_id, (rid, run_id)
            return float(at) - sent
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {run_id} did not start within {START_TIMEOUT:g}s")
        time.sleep(0.001)


def _wait_running(db: str, run_id: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    with psycopg.connect(db, autocommit=True) as conn:
        while (row := conn.execute("SELECT status FROM runs WHERE id = %s", [run_id]).fetchone()
               ) is None or row[0] != "running":
            if time.monotonic() > deadline:
                raise RuntimeError(f"run {run_id} did not start within {START_TIMEOUT:g}s")
            time.sleep(0.05)


def bench_handoff(base: Path, url: str, samples: int) -> tuple[list[float], list[float], Counter[str]]:
    db = pgcluster.create_database(url)
    out = base / "out"
    with ExitStack() as stack:
        (a,) = [stack.enter_context(running(p)) for p in start_nodes(base, db, ["a"], ACTION, [1])]
        body = github_push(size=200, block=True)
        blocker = httpx.post(a.url + "/hooks/github", content=body, headers=github_headers(body),
                             timeout=30).json()["runs"][0]
        _wait_running(db, blocker)  # on A, the only node so far
        (b,) = [stack.enter_context(running(p)) for p in start_nodes(base, db, ["b"], ACTION)]
        try:
            handoff = [_start_delay(a, out, i) for i in range(samples)]
            local = [_start_delay(b, out, samples + i) for i in range(samples)]
        finally:
            (out / "release").touch()
    nodes = Counter(line.split()[1] for line in (out / "runs").read_text().splitlines())
    return handoff, local, nodes


def report(rows: list[Row], handoff: list[float], local: list[float], by_node: Counter[str],
           args: argparse.Namespace) -> int:
    print(f"machine: {machine()}")
    print(f"load: wrk -t1 per node, {args.connections} connections split over the nodes, "
          f"{args.duration:g}s, {len(github_push())} B signed GitHub push; PostgreSQL 15, "
          "fsync=off (a throwaway cluster)")
    print(f"{'scenario':<8} {'nodes':>5} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'non-202':>8} "
          f"{'stored':>13} {'actions/s':>9}  runs executed once")
    ok = True
    for r in rows:
        acts = f"{r.actions_per_s:9.0f}" if r.scenario == "actions" else f"{'-':>9}"
        once = f"{r.executed_once}/{r.runs}" if r.scenario == "actions" else "-"
        print(f"{r.scenario:<8} {r.nodes:5d} {r.wrk.rps:7.0f} {r.wrk.p50_ms:7.2f} "
              f"{r.wrk.p99_ms:7.2f} {r.non_202:8d} {f'{r.stored}/{r.accepted}':>13} {acts}  {once}")
        ok &= r.stored == r.accepted and r.non_202 == 0
        if r.scenario == "actions":
            # wrk stops with requests in flight: those were journaled but are not counted.
            ok &= r.executed_once == r.runs >= r.accepted
    ms = [d * 1000 for d in handoff]
    base = [d * 1000 for d in local]
    print(f"POST on A -> action starts on B ({len(ms)} deliveries, one at a time): "
          f"p50 {percentile(ms, 50):.1f} ms, p99 {percentile(ms, 99):.1f} ms")
    print(f"POST on B -> action starts on B (baseline):              "
          f"p50 {percentile(base, 50):.1f} ms, p99 {percentile(base, 99):.1f} ms")
    ok &= by_node.get("a", 0) == 0 and by_node.get("b", 0) == 2 * args.samples
    print("checks: every 202 stored, no non-202, every run executed once, hand-offs ran on B: "
          + ("yes" if ok else "NO"))
    return 0 if ok else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=8.0, help="seconds of wrk per scenario")
    p.add_argument("--connections", type=int, default=24, help="total, split over the nodes")
    p.add_argument("--samples", type=int, default=100, help="deliveries per hand-off figure")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args()
    if (missing := require_tools("wrk")) is not None:
        print(missing, file=sys.stderr)
        return 2
    cluster = pgcluster.start()
    try:
        with workdir("hookrunner-bench-cluster-", keep=args.keep) as base:
            rows = []
            for scenario in (bench_ingest, bench_actions):
                for n in (1, 3):
                    rows.append(scenario(base / f"{scenario.__name__}-{n}", cluster.url, n, args))
            handoff, local, by_node = bench_handoff(base / "handoff", cluster.url, args.samples)
            if args.keep:
                print(f"work directory kept: {base}")
            return report(rows, handoff, local, by_node, args)
    finally:
        cluster.stop()
        shutil.rmtree(cluster.dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

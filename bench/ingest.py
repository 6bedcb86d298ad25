"""Accept-path figures: hookrunner serve vs. a bare Starlette app, same load, same run.

    .venv/bin/python bench/ingest.py [--duration 10] [--connections 32] [--no-action]

Scenarios, each driven by wrk (a second process) with one signed ~5.4 KB GitHub push and no
X-GitHub-Delivery header (so nothing dedups):
  bare      Starlette on uvicorn: verify the HMAC, parse the JSON, answer 202
  floor     the least a durable gateway does in Python (floor_app.py): a raw httptools
            protocol that verifies, parses, group-commits one SQLite row and answers 202;
            none of hookrunner's rules, checks or limits
  journal   hookrunner, a github hook whose rule does not match: verify, parse, match, journal
  action    hookrunner, a matching rule running `true`: the same, plus a run journaled per
            delivery while the dispatcher runs actions alongside (8 workers)
  ...xN     the same with `--http-workers N` (N processes accept; the main one dispatches)
Each hookrunner scenario checks that every delivery id answered 202 is in the SQLite file
after the run, and reports the server's peak RSS (VmHWM; with several processes, the sum,
which counts their shared pages in each) and its proportional set size (PSS) at the end.
Targets (issue 2): hookrunner >= 0.75x the bare app's requests/s; peak RSS < 100 MB (one
process; for N processes the PSS total is the comparable figure).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from common import (
    HOOK,
    NO_MATCH_RULE,
    Proc,
    WrkResult,
    count_rows,
    cpu_seconds,
    github_headers,
    github_push,
    ids_in,
    load_average,
    machine,
    peak_rss_mb,
    pss_mb,
    require_tools,
    run_wrk,
    running,
    server_pids,
    start_bare,
    start_floor,
    start_hookrunner,
    workdir,
)

TARGET_RATIO = 0.75
TARGET_RSS_MB = 100.0
TRUE_RULE = HOOK + """
rules:
  - name: every-push
    hook: github
    when: event == "push" and payload.ref == "refs/heads/main"
    run:
      shell:
        argv: ["true", "{{ payload.repository.full_name }}"]
"""


@dataclass
class Figures:
    name: str
    wrk: WrkResult
    cpu_s: float  # server CPU time (all threads) during the measured run
    rss_mb: float
    pss_mb: float = 0.0
    processes: int = 1
    answered_202: int = 0
    committed: int | None = None  # of the 202 delivery ids, how many are in the store
    runs_journaled: int | None = None

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_s / self.wrk.requests * 1e6 if self.wrk.requests else 0.0

    @property
    def non_202(self) -> int:
        return sum(n for s, n in self.wrk.statuses.items() if s != 202)


def drive(proc: Proc, args: argparse.Namespace, scratch: Path) -> tuple[WrkResult, float, list[str]]:
    body = github_push()
    headers = github_headers(body)
    url = proc.url + "/hooks/github"
    warm = run_wrk(url, body, headers, connections=args.connections, threads=args.threads,
                   duration=args.warmup, scratch=scratch / "warmup")
    pids = server_pids(proc.pid)
    cpu = cpu_seconds(proc.pid, pids)
    result = run_wrk(url, body, headers, connections=args.connections, threads=args.threads,
                     duration=args.duration, scratch=scratch / "measured")
    return result, cpu_seconds(proc.pid, pids) - cpu, warm.delivery_ids + result.delivery_ids


def bench_bare(args: argparse.Namespace, base: Path) -> Figures:
    with running(start_bare(base)) as proc:
        result, cpu, _ = drive(proc, args, base / "bare-wrk")
        rss = peak_rss_mb(proc.pid)
    return Figures("bare", result, cpu, rss, answered_202=result.statuses.get(202, 0))


def bench_floor(args: argparse.Namespace, base: Path) -> Figures:
    with running(start_floor(base)) as proc:
        result, cpu, ids = drive(proc, args, base / "floor-wrk")
        rss = peak_rss_mb(proc.pid)
    return Figures("floor", result, cpu, rss, answered_202=len(ids),
                   committed=ids_in(base / "floor.db", "deliveries", ids))


def bench_hookrunner(name: str, rules: str, args: argparse.Namespace, base: Path,
                     http_workers: int = 1) -> Figures:
    wd = base / name
    # --max-queued high enough that the action scenario measures the accept path, not 503s.
    extra = ["--http-workers", str(http_workers)] if http_workers > 1 else []
    proc = start_hookrunner(wd, rules, args=["--workers", "8", "--max-queued", "10000000", *extra])
    with running(proc):
        result, cpu, ids = drive(proc, args, wd / "wrk")
        rss, pss, processes = peak_rss_mb(proc.pid), pss_mb(proc.pid), len(server_pids(proc.pid))
    db = wd / "data" / "hookrunner.db"
    figures = Figures(name, result, cpu, rss, pss, processes, answered_202=len(ids),
                      committed=ids_in(db, "deliveries", ids))
    if name.startswith("action"):
        figures.runs_journaled = count_rows(db, "runs")
    return figures


def report(rows: list[Figures], args: argparse.Namespace, load: tuple[float, float]) -> int:
    bare = rows[0]
    print(f"machine: {machine()}; load average {load[0]:.1f} before, {load[1]:.1f} after"
          + (" (busy: other work lowers these figures)" if max(load) > 1.5 else ""))
    print(f"load: wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s "
          f"(after a {args.warmup:g}s warm-up), {len(github_push())} B signed GitHub push")
    print(f"{'scenario':<10} {'req/s':>8} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'CPU us/req':>10} {'non-202':>8} {'peak RSS':>9} {'PSS':>8} {'procs':>5}  committed")
    met: list[str] = []
    for f in rows:
        ratio = f.wrk.rps / bare.wrk.rps if bare.wrk.rps else 0.0
        if f.committed is None:
            committed = "-"
        else:
            committed = f"{f.committed}/{f.answered_202} of the 202s"
            if f.runs_journaled is not None:
                committed += f", {f.runs_journaled} runs"
        print(f"{f.name:<10} {f.wrk.rps:8.0f} {ratio:6.2f} {f.wrk.p50_ms:7.2f} {f.wrk.p99_ms:7.2f} "
              f"{f.cpu_us_per_request:10.0f} {f.non_202:8d} {f.rss_mb:7.1f}MB "
              f"{f.pss_mb:6.1f}MB {f.processes:5d}  {committed}")
        errors = {k: v for k, v in f.wrk.errors.items() if v}
        if errors:
            print(f"          socket errors: {errors}")
        memory = f.rss_mb if f.processes == 1 else f.pss_mb
        if (f.name.startswith("journal") and ratio >= TARGET_RATIO and memory < TARGET_RSS_MB
                and f.non_202 == 0 and f.committed == f.answered_202):
            met.append(f.name)
    lost = [f.name for f in rows if f.committed is not None and f.committed != f.answered_202]
    print(f"targets (journal): ratio >= {TARGET_RATIO}, memory < {TARGET_RSS_MB:g} MB, every 202 "
          "committed: " + (f"met by {', '.join(met)}" if met else "NOT met")
          + (f"; 202s NOT all committed in {', '.join(lost)}" if lost else ""))
    return 0 if met and not lost else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up before each")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="wrk threads")
    p.add_argument("--no-action", action="store_true", help="skip the matching-rule scenarios")
    p.add_argument("--http-workers", type=int, default=2,
                   help="N of the xN scenarios (1: skip them)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args()
    if (missing := require_tools("wrk")) is not None:
        print(missing, file=sys.stderr)
        return 2
    load_before = load_average()
    with workdir("hookrunner-bench-ingest-", keep=args.keep) as base:
        n = args.http_workers
        rows = [bench_bare(args, base), bench_floor(args, base),
                bench_hookrunner("journal", NO_MATCH_RULE, args, base)]
        if n > 1:
            rows.append(bench_hookrunner(f"journal x{n}", NO_MATCH_RULE, args, base, n))
        if not args.no_action:
            rows.append(bench_hookrunner("action", TRUE_RULE, args, base))
            if n > 1:
                rows.append(bench_hookrunner(f"action x{n}", TRUE_RULE, args, base, n))
        if args.keep:
            print(f"work directory kept: {base}")
        return report(rows, args, (load_before, load_average()))


if __name__ == "__main__":
    sys.exit(main())

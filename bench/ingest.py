"""Accept-path figures: hookrunner serve vs. a bare Starlette app, same load, same run.

    .venv/bin/python bench/ingest.py [--duration 10] [--connections 32] [--no-action]

Scenarios, each driven by wrk (a second process) with one signed ~5.4 KB GitHub push and no
X-GitHub-Delivery header (so nothing dedups):
  bare      Starlette on uvicorn: verify the HMAC, parse the JSON, answer 202
  journal   hookrunner, a github hook whose rule does not match: verify, parse, match, journal
  action    hookrunner, a matching rule running `true`: the same, plus a run journaled per
            delivery while the dispatcher runs actions alongside (8 workers)
Each hookrunner scenario checks that every delivery id answered 202 is in the SQLite file
after the run, and reports the server's peak RSS (VmHWM).
Targets (issue 2): hookrunner >= 0.75x the bare app's requests/s; peak RSS < 100 MB.
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
    run_wrk,
    running,
    start_bare,
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
    cpu = cpu_seconds(proc.pid)
    result = run_wrk(url, body, headers, connections=args.connections, threads=args.threads,
                     duration=args.duration, scratch=scratch / "measured")
    return result, cpu_seconds(proc.pid) - cpu, warm.delivery_ids + result.delivery_ids


def bench_bare(args: argparse.Namespace, base: Path) -> Figures:
    with running(start_bare(base)) as proc:
        result, cpu, _ = drive(proc, args, base / "bare-wrk")
        rss = peak_rss_mb(proc.pid)
    return Figures("bare", result, cpu, rss, answered_202=result.statuses.get(202, 0))


def bench_hookrunner(name: str, rules: str, args: argparse.Namespace, base: Path) -> Figures:
    wd = base / name
    # --max-queued high enough that the action scenario measures the accept path, not 503s.
    proc = start_hookrunner(wd, rules, args=["--workers", "8", "--max-queued", "10000000"])
    with running(proc):
        result, cpu, ids = drive(proc, args, wd / "wrk")
        rss = peak_rss_mb(proc.pid)
    db = wd / "data" / "hookrunner.db"
    figures = Figures(name, result, cpu, rss, answered_202=len(ids),
                      committed=ids_in(db, "deliveries", ids))
    if name == "action":
        figures.runs_journaled = count_rows(db, "runs")
    return figures


def report(rows: list[Figures], args: argparse.Namespace, load: tuple[float, float]) -> int:
    bare = rows[0]
    print(f"machine: {machine()}; load average {load[0]:.1f} before, {load[1]:.1f} after"
          + (" (busy: other work lowers these figures)" if max(load) > 1.5 else ""))
    print(f"load: wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s "
          f"(after a {args.warmup:g}s warm-up), {len(github_push())} B signed GitHub push")
    print(f"{'scenario':<9} {'req/s':>8} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'CPU us/req':>10} {'non-202':>8} {'peak RSS':>9}  committed")
    ok = True
    for f in rows:
        ratio = f.wrk.rps / bare.wrk.rps if bare.wrk.rps else 0.0
        if f.committed is None:
            committed = "-"
        else:
            committed = f"{f.committed}/{f.answered_202} of the 202s"
            if f.runs_journaled is not None:
                committed += f", {f.runs_journaled} runs"
        print(f"{f.name:<9} {f.wrk.rps:8.0f} {ratio:6.2f} {f.wrk.p50_ms:7.2f} {f.wrk.p99_ms:7.2f} "
              f"{f.cpu_us_per_request:10.0f} {f.non_202:8d} {f.rss_mb:7.1f}MB  {committed}")
        errors = {k: v for k, v in f.wrk.errors.items() if v}
        if errors:
            print(f"          socket errors: {errors}")
        if f.name != "bare":
            ok &= ratio >= TARGET_RATIO and f.rss_mb < TARGET_RSS_MB and f.non_202 == 0
            ok &= f.committed == f.answered_202
    print(f"targets: ratio >= {TARGET_RATIO}, peak RSS < {TARGET_RSS_MB:g} MB, every 202 committed: "
          + ("met" if ok else "NOT met"))
    return 0 if ok else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up before each")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="wrk threads")
    p.add_argument("--no-action", action="store_true", help="skip the matching-rule scenario")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args()
    load_before = load_average()
    with workdir("hookrunner-bench-ingest-", keep=args.keep) as base:
        rows = [bench_bare(args, base), bench_hookrunner("journal", NO_MATCH_RULE, args, base)]
        if not args.no_action:
            rows.append(bench_hookrunner("action", TRUE_RULE, args, base))
        if args.keep:
            print(f"work directory kept: {base}")
        return report(rows, args, (load_before, load_average()))


if __name__ == "__main__":
    sys.exit(main())

"""Several real nodes (`hookrunner serve --db postgresql://...`) sharing one database."""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest

from hookrunner.store.postgres import MIGRATE_LOCK
from tests import pgcluster
from tests.integration.cluster_nodes import (
    Load,
    Nodes,
    Relay,
    iter_runs,
    pg_ctl,
    post,
    post_many,
    query,
    recording_script,
    statuses,
    until,
    wait_terminal,
)
from tests.integration.conftest import GITHUB_SECRET, write_script
from tests.serverproc import Server

pytestmark = pytest.mark.postgres

DELIVERIES = 300
KEYED = 24
CROSS_NODE = 20
SANITY_DELAY = 5.0  # seconds: far above the 1 s poll, so only a stuck wake-up fails it


@pytest.fixture
def own_cluster() -> Iterator[pgcluster.Cluster]:
    """A PostgreSQL server of this test alone, which it may stop and start again."""
    try:
        cluster = pgcluster.start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.dir, ignore_errors=True)


@pytest.fixture
def nodes(project: Path, postgres_db: str) -> Iterator[Nodes]:
    cluster = Nodes(project, postgres_db)
    try:
        yield cluster
    finally:
        cluster.stop_all()


def test_three_nodes_run_every_delivery_exactly_once(nodes: Nodes, project: Path) -> None:
    """Hundreds of deliveries spread round robin over three nodes: each run executes once,
    and every node takes a share of the work."""
    recording_script(project, "work.sh")
    nodes.rules("""
rules:
  - name: work
    hook: github
    run: {shell: {argv: ["scripts/work.sh"]}}
""")
    servers = nodes.start("n1", "n2", "n3", workers=2)
    answers = post_many(servers, [{"i": i} for i in range(DELIVERIES)])
    assert Counter(r.status_code for r in answers) == {202: DELIVERIES}
    run_ids = list(iter_runs(answers))
    assert len(set(run_ids)) == DELIVERIES
    final = wait_terminal(nodes.db, run_ids)
    assert set(final.values()) == {"succeeded"}
    started = [line[1] for line in nodes.lines("events") if line[0] == "start"]
    assert Counter(started) == Counter(run_ids)  # each exactly once, nothing else
    by_node = Counter(line[2] for line in nodes.lines("events") if line[0] == "start")
    assert set(by_node) == {"n1", "n2", "n3"}, by_node


def test_a_concurrency_key_never_overlaps_across_nodes(nodes: Nodes, project: Path) -> None:
    """Runs of one key posted to all nodes run one at a time cluster-wide (by the scripts'
    own start/end times), while another key's runs proceed alongside."""
    recording_script(project, "keyed.sh", "sleep 0.05")
    nodes.rules("""
rules:
  - name: keyed
    hook: github
    run: {shell: {argv: ["scripts/keyed.sh", "{{ payload.key }}"]}}
    concurrency: {key: "{{ payload.key }}", policy: queue}
""")
    servers = nodes.start("n1", "n2", "n3")
    answers = post_many(servers, [{"key": f"k{i % 2}"} for i in range(KEYED)])
    run_ids = list(iter_runs(answers))
    assert set(wait_terminal(nodes.db, run_ids).values()) == {"succeeded"}
    key_of = dict(query(nodes.db, "SELECT id, concurrency_key FROM runs"))
    spans: dict[str, dict[str, list[float]]] = {}
    for _event, run_id, node, _attempt, at in nodes.lines("events"):
        spans.setdefault(key_of[run_id], {}).setdefault(run_id, []).append(float(at))
        assert node in ("n1", "n2", "n3")
    nodes_used = {line[2] for line in nodes.lines("events")}
    for key, runs in spans.items():
        assert len(runs) == KEYED // 2, key
        ordered = sorted((start, end) for start, end in runs.values())
        for (_, end), (next_start, _) in itertools.pairwise(ordered):
            assert next_start >= end, f"key {key}: a run started at {next_start} before {end}"
    assert len(nodes_used) >= 2  # the key really was shared between nodes


def test_the_same_delivery_id_on_two_nodes_is_accepted_once(nodes: Nodes, project: Path) -> None:
    """A delivery id posted to two nodes (one after the other, or at the same moment to all
    three) gets exactly one 202; the others answer 200 duplicate naming the same delivery."""
    recording_script(project, "once.sh")
    nodes.rules("""
rules:
  - name: once
    hook: github
    run: {shell: {argv: ["scripts/once.sh"]}}
""")
    n1, n2, n3 = nodes.start("n1", "n2", "n3")
    first = post(n1, {"a": 1}, delivery="gh-delivery-1")
    again = post(n2, {"a": 1}, delivery="gh-delivery-1")
    assert first.status_code == 202 and again.status_code == 200
    assert again.json() == {"duplicate": True, "delivery_id": first.json()["delivery_id"],
                            "runs": first.json()["runs"],
                            "status_url": f"/api/deliveries/{first.json()['delivery_id']}"}

    ids = [f"gh-race-{i}" for i in range(10)]
    with ThreadPoolExecutor(30) as pool:
        racing = list(pool.map(lambda job: post(job[0], {"a": 2}, delivery=job[1]),
                               [(s, d) for d in ids for s in (n1, n2, n3)]))
    for i in range(len(ids)):
        trio = racing[3 * i:3 * i + 3]
        assert sorted(r.status_code for r in trio) == [200, 200, 202]
        accepted = next(r for r in trio if r.status_code == 202).json()["delivery_id"]
        assert all(r.json()["delivery_id"] == accepted for r in trio)
    run_ids = [*first.json()["runs"], *(rid for r in racing if r.status_code == 202
                                        for rid in r.json()["runs"])]
    wait_terminal(nodes.db, run_ids)
    assert sorted(line[1] for line in nodes.lines("events") if line[0] == "start") == sorted(run_ids)


def test_a_delivery_on_a_busy_node_starts_at_once_on_another(
    nodes: Nodes, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With node A's only worker busy, deliveries posted to A are started by node B, woken by
    NOTIFY rather than its poll; the delay from POST to the script's start is reported."""
    release = project / "out" / "release"
    recording_script(project, "block.sh",
                     f'while [ ! -e "{release}" ]; do sleep 0.05; done', out="blocker")
    recording_script(project, "quick.sh")
    nodes.rules("""
rules:
  - name: block
    hook: github
    when: payload.block | default(false)
    run: {shell: {argv: ["scripts/block.sh"]}}
  - name: quick
    hook: github
    when: not (payload.block | default(false))
    run: {shell: {argv: ["scripts/quick.sh"]}}
""")
    (a,) = nodes.start("a", workers=1)
    blocker = post(a, {"block": True}).json()["runs"][0]
    until(lambda: bool(nodes.lines("blocker")), 15, "the blocker started on a")
    nodes.start("b")
    try:
        sent: dict[str, float] = {}
        for i in range(CROSS_NODE):
            before = time.time()
            run_id = post(a, {"i": i}).json()["runs"][0]
            sent[run_id] = before
            until(lambda r=run_id: any(x[1] == r for x in nodes.lines("events")), 15,
                  f"run {run_id} started")
        starts = {x[1]: (x[2], float(x[4])) for x in nodes.lines("events") if x[0] == "start"}
        assert {node for node, _ in starts.values()} == {"b"}
        delays = sorted(starts[r][1] - sent[r] for r in sent)
        with capsys.disabled():
            print(f"\ncross-node start delay over {len(delays)} deliveries: "
                  f"median {statistics.median(delays) * 1000:.1f} ms, "
                  f"max {delays[-1] * 1000:.1f} ms")
        assert delays[-1] < SANITY_DELAY
    finally:
        release.touch()
    assert wait_terminal(nodes.db, [blocker])[blocker] == "succeeded"


def _slow_rules(project: Path) -> str:
    """`slow-retry` sleeps on attempt 1 and succeeds on attempt 2; `slow-once` has no retry.
    Each script records its pid so the test can end it as a dead machine would."""
    pids = project / "out" / "pids"
    body = (f'echo $$ >> "{pids}"\n'
            'if [ "$HOOKRUNNER_ATTEMPT" = 1 ]; then sleep 60; fi')
    recording_script(project, "slow.sh", body)
    return """
rules:
  - name: slow-retry
    hook: github
    when: payload.retry
    run: {shell: {argv: ["scripts/slow.sh"]}}
    retry: {attempts: 2, backoff: 0s}
  - name: slow-once
    hook: github
    when: not payload.retry
    run: {shell: {argv: ["scripts/slow.sh"]}}
"""


def test_a_killed_node_runs_are_retried_elsewhere_or_failed_after_the_lease(
    nodes: Nodes, project: Path
) -> None:
    """SIGKILL of the node running two slow runs: after its lease expires, the run whose rule
    has `retry` completes on the surviving node; the other ends `failed` (interrupted)."""
    nodes.rules(_slow_rules(project))
    (n1,) = nodes.start("n1")
    retried = post(n1, {"retry": True}).json()["runs"][0]
    once = post(n1, {"retry": False}).json()["runs"][0]
    until(lambda: len(nodes.lines("events")) == 2, 15, "both runs started on n1")
    (n2,) = nodes.start("n2")
    # An attempt's output goes to a file from its first second on (before, in memory only).
    until(lambda: (project / "data-n1" / "logs" / once / "1.log").exists(), 15, "n1's log file")
    killed_at = time.time()
    n1.kill()
    for pid in (project / "out" / "pids").read_text().split():  # the machine died with it
        os.killpg(int(pid), signal.SIGKILL)

    final = wait_terminal(nodes.db, [retried, once], timeout=30)
    assert final == {retried: "succeeded", once: "failed"}
    with n2.admin() as c:
        doc = c.get(f"/api/runs/{once}").json()
        assert doc["reason"] == "interrupted: lease of node n1 expired"
        # Its output is on n1's disk: the log says where (a follower got an empty answer).
        assert c.get(f"/api/runs/{once}/log").text.endswith(
            "[hookrunner] interrupted: lease of node n1 expired (its output so far, if it ran for "
            "a second or more, was written "
            f"on node n1, not here: read it through that node, GET /api/runs/{once}/log?"
            f"attempt=1, or in its --data dir, logs/{once}/1.log)\n")
        attempts = query(nodes.db, "SELECT attempt, node, status FROM attempts "
                                   "WHERE run_id = %s ORDER BY attempt", [retried])
    assert attempts == [(1, "n1", "failed"), (2, "n2", "succeeded")]
    second = [x for x in nodes.lines("events") if x[1] == retried and x[3] == "2"]
    assert [x[2] for x in second] == ["n2", "n2"]
    assert (project / "data-n1" / "logs" / once / "1.log").exists()  # where it says
    print(f"failover: attempt 2 started {float(second[0][4]) - killed_at:.1f}s after SIGKILL")


def test_a_node_that_lost_its_lease_stops_the_run(nodes: Nodes, project: Path) -> None:
    """A node frozen past its lease (SIGSTOP: a network cut) finds, once it runs again, that
    it lost the lease: it stops its copy of the run, which the other node took over."""
    nodes.rules(_slow_rules(project))
    (n1,) = nodes.start("n1")
    run_id = post(n1, {"retry": True}).json()["runs"][0]
    until(lambda: len(nodes.lines("events")) == 1, 15, "the run started on n1")
    first_pid = int((project / "out" / "pids").read_text().split()[0])
    nodes.start("n2")
    assert n1.proc is not None
    os.kill(n1.proc.pid, signal.SIGSTOP)
    try:
        assert wait_terminal(nodes.db, [run_id], timeout=30)[run_id] == "succeeded"
    finally:
        os.kill(n1.proc.pid, signal.SIGCONT)
    # n1 renews within lease/3 of waking, learns the run is gone and kills its process group.
    until(lambda: not _alive(first_pid), 15, "n1 stopped the run it no longer holds")
    assert query(nodes.db, "SELECT attempt, node, status FROM attempts WHERE run_id = %s "
                           "ORDER BY attempt", [run_id]) == [(1, "n1", "failed"),
                                                             (2, "n2", "succeeded")]
    # Its log says once why it stopped the run, and not that a lease long expired had time
    # left (it said both ways of finding out, each "killed in 0.0s, before the lease expires").
    with n1.admin() as admin:
        # (ended `lease lost`, or `lease not renewed in time` where the run ended before
        # the renewal that found its lease taken)
        until(lambda: "\n[hookrunner] canceled: lease " in admin.get(
            f"/api/runs/{run_id}/log", params={"attempt": 1}).text, 15,
            "n1's log of the attempt ended")
        log = admin.get(f"/api/runs/{run_id}/log", params={"attempt": 1}).text
    assert log.count("stopping the run here") == 1, log
    assert "killed at once" in log and "before the lease expires" not in log, log


def test_a_node_cut_off_from_the_database_stops_its_run_before_another_takes_it(
    nodes: Nodes, project: Path
) -> None:
    """A node whose connection to the database is cut cannot renew its lease: it stops its
    run before the lease expires, and only then does the other node start the retry, so the
    two attempts never overlap (by the scripts' own timestamps)."""
    out = project / "out" / "events"
    trap = f"trap 'echo term $HOOKRUNNER_RUN_ID $HOOKRUNNER_NODE $HOOKRUNNER_ATTEMPT " \
           f"$(date +%s.%N) >> \"{out}\"; exit 143' TERM"
    recording_script(project, "cut.sh", f'{trap}\nif [ "$HOOKRUNNER_ATTEMPT" = 1 ]; then '
                                        "sleep 60 & wait $!; fi")
    nodes.rules("""
rules:
  - name: cut
    hook: github
    run: {shell: {argv: ["scripts/cut.sh"]}}
    retry: {attempts: 2, backoff: 0s}
""")
    port = int(nodes.db.rsplit(":", 1)[1].split("/")[0])
    relay = Relay(port)
    try:
        n1 = nodes.server("n1", db=relay.url(nodes.db)).start()
        run_id = post(n1, {"a": 1}).json()["runs"][0]
        until(lambda: len(nodes.lines("events")) == 1, 15, "the run started on n1")
        nodes.start("n2")
        relay.cut()
        assert wait_terminal(nodes.db, [run_id], timeout=30)[run_id] == "succeeded"
    finally:
        relay.close()
    events = {(x[0], x[3]): (x[2], float(x[4])) for x in nodes.lines("events")}
    assert events[("term", "1")][0] == "n1" and events[("start", "2")][0] == "n2"
    assert events[("term", "1")][1] < events[("start", "2")][1]


def test_a_cut_off_node_kills_a_run_slow_to_stop_before_its_lease_expires(
    nodes: Nodes, project: Path
) -> None:
    """The run's TERM trap cleans up for 3 s, longer than is left of the lease: the cut-off
    node kills it before the lease expires, so the next run of its key, started on another
    node at expiry, finds it gone (it held a lock for its whole life; it once ran on for
    a second beside the next run)."""
    out, lock = project / "out" / "events", project / "out" / "key.lock"
    record = 'echo "$1 $HOOKRUNNER_RUN_ID $HOOKRUNNER_NODE $(date +%s.%N)" >> "{out}"'
    record = record.format(out=out)
    write_script(project, "slow_stop.sh", f"""exec 9>>"{lock}"
flock -n 9 && set -- alone || set -- overlapping
{record}
trap 'set -- term; {record}; sleep 3; set -- end; {record}; exit 0' TERM
if [ -n "$FIRST" ]; then sleep 60 & wait $!; fi
""")
    nodes.rules("""
rules:
  - name: deploy
    hook: github
    run: {shell: {argv: ["scripts/slow_stop.sh"], env: {FIRST: "{{ payload.first }}"}}}
    concurrency: {key: deploy, policy: queue}
""")
    port = int(nodes.db.rsplit(":", 1)[1].split("/")[0])
    relay = Relay(port)
    try:
        n1 = nodes.server("n1", db=relay.url(nodes.db)).start()
        first = post(n1, {"first": "yes"}).json()["runs"][0]
        until(lambda: len(nodes.lines("events")) == 1, 15, "the first run started on n1")
        (n2,) = nodes.start("n2")
        second = post(n2, {"first": ""}).json()["runs"][0]  # queued behind it
        relay.cut()
        final = wait_terminal(nodes.db, [first, second], timeout=30)
    finally:
        relay.close()
    assert final == {first: "failed", second: "succeeded"}
    events = {(x[0], x[1]): float(x[3]) for x in nodes.lines("events")}
    assert ("alone", second) in events, nodes.lines("events")
    assert events.get(("end", first), 0.0) < events[("alone", second)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie waiting for its parent counts as stopped (and may be reaped meanwhile).
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def test_cli_runs_replay_and_cancel_work_against_the_cluster(nodes: Nodes, project: Path) -> None:
    """`hookrunner runs/replay/cancel --db URL` act on the shared store: a replay is run by a
    node, a cancel stops the run on whichever node holds it."""
    nodes.rules(_slow_rules(project))
    n1, _n2 = nodes.start("n1", "n2")
    slow = post(n1, {"retry": False}).json()
    run_id = slow["runs"][0]
    until(lambda: len(nodes.lines("events")) == 1, 15, "the slow run started")
    env = {**os.environ, "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET}
    cli = [sys.executable, "-m", "hookrunner.cli"]
    db = ["--db", nodes.db]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli, *args, *db], capture_output=True, text=True, env=env,
                              timeout=60)

    canceled = run("cancel", run_id)
    assert canceled.returncode == 0, canceled.stderr
    assert f"{run_id}: cancel requested (running on node " in canceled.stdout, canceled.stdout
    assert "if that node is down, the node that takes the run over" in canceled.stdout
    final = wait_terminal(nodes.db, [run_id], timeout=15)
    assert final[run_id] == "canceled"

    replayed = run("replay", slow["delivery_id"], "--rules", str(project / "rules"))
    assert replayed.returncode == 0, replayed.stderr
    new_run = replayed.stdout.split()[-1]
    until(lambda: len(nodes.lines("events")) == 2, 15, "a node picked up the replay")
    assert run("cancel", new_run).returncode == 0
    assert wait_terminal(nodes.db, [new_run], timeout=15)[new_run] == "canceled"

    listing = run("runs", "--limit", "5")
    assert listing.returncode == 0
    assert run_id in listing.stdout and new_run in listing.stdout
    assert "canceled" in listing.stdout
    assert run("cancel", "run_nope").returncode == 1


def test_database_restart_under_load_loses_nothing_accepted(
    project: Path, own_cluster: pgcluster.Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """The database stops (pg_ctl -m fast) and restarts while two nodes take deliveries:
    while it is down hooks answer 503 with Retry-After (never 202) and /readyz is not ready;
    afterwards the nodes recover by themselves and every delivery that got 202 runs."""
    nodes = Nodes(project, pgcluster.create_database(own_cluster.url))
    try:
        recording_script(project, "load.sh")
        nodes.rules("""
rules:
  - name: load
    hook: github
    run: {shell: {argv: ["scripts/load.sh"]}}
    retry: {attempts: 3, backoff: 0s}
""")
        servers = nodes.start("n1", "n2")
        with Load(servers) as load:
            until(lambda: len(load.answers) >= 40, 30, "load under way")
            pg_ctl(own_cluster, "stop", "-m", "fast", "-w")
            down = time.time()
            with ThreadPoolExecutor(4) as pool:  # each waits out the pool timeout
                probing = [pool.submit(post, s, {"probe": True}) for s in servers]
                checking = [pool.submit(httpx.get, s.url + "/readyz", timeout=30)
                            for s in servers]
                probes = [f.result() for f in probing]
                readiness = [f.result() for f in checking]
            for probe, ready in zip(probes, readiness, strict=True):
                assert probe.status_code == 503 and int(probe.headers["Retry-After"]) > 0
                assert ready.status_code == 503 and ready.json()["store"] == "unreachable"
            up = time.time()
            pgcluster.start(own_cluster.dir, own_cluster.port)
            for s in servers:
                until(lambda s=s: httpx.get(s.url + "/readyz", timeout=30).status_code == 200,
                      30, f"{s.url} ready again")
            recovered = time.time()
            until(lambda: sum(1 for sent, _, a in load.answers
                              if sent > recovered and a.status_code == 202) >= 20,
                  30, "deliveries accepted again after the restart")
        answers = load.answers
        codes = Counter(a.status_code for _, _, a in answers)
        assert set(codes) <= {202, 503}, codes
        assert all(int(a.headers["Retry-After"]) > 0 for _, _, a in answers if a.status_code == 503)
        assert not [a for sent, got, a in answers
                    if sent > down and got < up and a.status_code == 202]
        accepted = [a.json() for _, _, a in answers if a.status_code == 202]
        run_ids = [r for doc in accepted for r in doc["runs"]]
        stored = query(nodes.db, "SELECT count(*) FROM deliveries WHERE id = ANY(%s)",
                       [[doc["delivery_id"] for doc in accepted]])
        assert stored == [(len(accepted),)]
        final = wait_terminal(nodes.db, run_ids)
        assert set(final.values()) == {"succeeded"}, Counter(final.values())
        executed = Counter(x[1] for x in nodes.lines("events") if x[0] == "start")
        assert set(run_ids) <= set(executed)
        with capsys.disabled():
            print(f"\ndatabase restart: {codes[202]} accepted, {codes[503]} answered 503, "
                  f"{sum(n > 1 for n in executed.values())} run(s) executed more than once; "
                  f"ready {recovered - up:.1f}s after the restart began")
    finally:
        nodes.stop_all()


def test_a_followed_log_goes_on_through_a_database_outage(
    project: Path, own_cluster: pgcluster.Cluster
) -> None:
    """PostgreSQL stops while a client follows a run's log on the node that runs it: the
    answer was cut off mid-body ~5 s later (a traceback in the node's log). The output goes
    on from the node's file, and the answer ends with the run, the database still down."""
    nodes = Nodes(project, pgcluster.create_database(own_cluster.url))
    try:
        write_script(project, "talk.sh", "echo before\nsleep 4\necho after\n")
        nodes.rules("""
rules:
  - {name: talk, hook: github, run: {shell: {argv: ["scripts/talk.sh"]}}}
""")
        n1 = nodes.server("n1", args=["--lease", "60s"]).start()  # (not fenced meanwhile)
        run_id = post(n1, {}).json()["runs"][0]
        text, down = "", False
        with n1.admin() as c, c.stream("GET", f"/api/runs/{run_id}/log") as answer:
            for chunk in answer.iter_text():
                text += chunk
                if "before" in text and not down:
                    pg_ctl(own_cluster, "stop", "-m", "fast", "-w")
                    down = True
        assert down and "after" in text and text.endswith("[hookrunner] succeeded\n"), text
        pgcluster.start(own_cluster.dir, own_cluster.port)
        assert n1.wait_run(run_id, timeout=30)["status"] == "succeeded"
        assert "http.server_error" not in n1.output()
    finally:
        nodes.stop_all()


def test_a_wait_outlasts_a_database_outage_within_its_time(
    project: Path, own_cluster: pgcluster.Cluster
) -> None:
    """PostgreSQL stops for a few seconds while a `?wait=40s` request waits on a run that
    goes on: the wait gave up at the first failed read (a 202, ~5 s after the stop) though
    the run ended well within it. It reads again until the store answers."""
    nodes = Nodes(project, pgcluster.create_database(own_cluster.url))
    try:
        recording_script(project, "short.sh", "sleep 3")
        nodes.rules("""
rules:
  - {name: short, hook: github, run: {shell: {argv: ["scripts/short.sh"]}}}
""")
        n1 = nodes.server("n1", args=["--lease", "60s"]).start()  # (not fenced meanwhile)
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(post, n1, {}, params={"wait": "40s"})
            until(lambda: len(nodes.lines("events")) == 1, 15, "the run started")
            pg_ctl(own_cluster, "stop", "-m", "fast", "-w")
            time.sleep(6)
            pgcluster.start(own_cluster.dir, own_cluster.port)
            answer = waiting.result()
        assert answer.status_code == 200, answer.text
        assert [r["status"] for r in answer.json()["runs"]] == ["succeeded"]
    finally:
        nodes.stop_all()


def test_a_node_restarted_under_its_name_stops_what_it_left_of_runs_taken_over(
    nodes: Nodes, project: Path
) -> None:
    """n1 dies (SIGKILL of the server alone: its action lives on), n2 takes the run over
    when the lease runs out and retries it. n1's next start stops its old process of that
    run, which is no longer n1's in the database but is still running beside the retry."""
    nodes.rules(_slow_rules(project))
    (n1,) = nodes.start("n1")
    run_id = post(n1, {"retry": True}).json()["runs"][0]
    until(lambda: len(nodes.lines("events")) == 1, 15, "the run started on n1")
    old = int((project / "out" / "pids").read_text().split()[0])
    nodes.start("n2")
    log_file = project / "data-n1" / "logs" / run_id / "1.log"
    # (a run's log goes to a file once it has run a second: before, it is in memory only)
    until(log_file.exists, 15, "the attempt's log file")
    n1.kill()
    assert wait_terminal(nodes.db, [run_id], timeout=30)[run_id] == "succeeded"  # on n2
    assert _alive(old)  # nobody stopped it: n2 cannot see n1's processes
    n1.start()
    until(lambda: not _alive(old), 15, "n1's start stopped its old process of the run")
    assert "dispatcher.orphans" in n1.output()
    # Its log of the attempt, on n1's disk only, ends as n2's record of it says.
    log = log_file.read_text()
    assert log.endswith("\n[hookrunner] failed: interrupted: lease of node n1 expired\n"), log


def test_a_run_replaced_while_its_node_is_dead_ends_as_replaced(
    nodes: Nodes, project: Path
) -> None:
    """`replace` asks the running run to stop; its node is dead, so the node that takes it
    over when the lease runs out ends it, saying it was replaced (not "canceled by
    request"), and then the new run goes."""
    pids = project / "out" / "pids"
    recording_script(project, "long.sh", f'echo $$ >> "{pids}"\nsleep "$1"')
    nodes.rules("""
rules:
  - name: deploy
    hook: github
    run: {shell: {argv: ["scripts/long.sh", "{{ payload.sleep }}"]}}
    concurrency: {key: deploy, policy: replace}
""")
    n1, n2 = nodes.start("n1", "n2")
    first = post(n1, {"sleep": 60}).json()["runs"][0]
    until(lambda: statuses(nodes.db, [first])[first] == "running", 15, "the first run started")
    holder = query(nodes.db, "SELECT lease_owner FROM runs WHERE id = %s", [first])[0][0]
    dead, alive = (n1, n2) if holder == "n1" else (n2, n1)
    dead.kill()
    for pid in pids.read_text().split():  # the machine died with it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(int(pid), signal.SIGKILL)
    second = post(alive, {"sleep": 0}).json()["runs"][0]
    final = wait_terminal(nodes.db, [first, second], timeout=30)
    assert final == {first: "canceled", second: "succeeded"}, final
    reason = query(nodes.db, "SELECT reason FROM runs WHERE id = %s", [first])[0][0]
    assert reason.startswith(f"canceled: replaced by run {second} (interrupted: "), reason


def _second_node_on(project: Path, nodes: Nodes, data: Path) -> Server:
    return Server(project / "rules", data, project, env={"GITHUB_WEBHOOK_SECRET": GITHUB_SECRET},
                  args=["--db", nodes.db, "--node", "second", "--lease", "2s"])


def test_a_second_node_on_the_same_data_dir_is_refused(nodes: Nodes, project: Path) -> None:
    """A node's retention removes the run dirs of any run it does not run itself: a second
    node sharing its --data would remove the first one's running runs' work dirs."""
    nodes.rules(_slow_rules(project))
    (first,) = nodes.start("first")
    with pytest.raises(RuntimeError, match="exited 3") as refused:
        _second_node_on(project, nodes, first.data).start()
    assert "another server is running with this --data" in str(refused.value)
    assert "Traceback" not in str(refused.value)
    assert httpx.get(first.url + "/readyz").status_code == 200  # the first is untouched
    first.stop()
    second = _second_node_on(project, nodes, first.data).start()  # freed with the first
    second.stop()


@pytest.mark.parametrize("http_workers", [1, 2])
def test_a_node_whose_name_another_server_took_while_it_ran_stops(
        nodes: Nodes, project: Path, http_workers: int) -> None:
    """A node's identity lock lives on its own connection: cut, and taken by another server
    started under the same --node before the node took it again, the node kills its running
    actions at once and exits 4, recording nothing of them: the server now under that name
    settles them as left by a dead one (here: retried per the rule). It went on accepting
    and journaling, saying identity_lost every round, without end."""
    nodes.rules(_slow_rules(project))
    n1 = nodes.server("n1", args=["--http-workers", str(http_workers)]).start()
    run_id = post(n1, {"retry": True}).json()["runs"][0]
    until(lambda: len(nodes.lines("events")) == 1, 15, "the run started on n1")
    pid = int((project / "out" / "pids").read_text().split()[0])
    assert n1.proc is not None
    with psycopg.connect(nodes.db, autocommit=True) as taker, \
            psycopg.connect(nodes.db, autocommit=True) as admin:
        key = admin.execute("SELECT hashtextextended('hookrunner-node:n1', 0)").fetchone()
        assert key is not None
        where = ("FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 "
                 "AND classid::bigint = (%(k)s >> 32) & 4294967295 "
                 "AND objid::bigint = %(k)s & 4294967295")
        (holder,) = admin.execute(f"SELECT pid {where} AND granted",
                                  {"k": key[0]}).fetchone() or (None,)
        assert holder is not None, "n1 holds its name's lock"
        # The test waits for the lock first, so it gets it as n1's session ends (n1 tries
        # again at each renewal, and an attempt after the end could beat the test's).
        waiting = threading.Thread(target=taker.execute,
                                   args=("SELECT pg_advisory_lock(%s)", key))
        waiting.start()
        until(lambda: admin.execute(f"SELECT count(*) {where} AND NOT granted",
                                    {"k": key[0]}).fetchone() == (1,), 10, "the test waiting")
        admin.execute("SELECT pg_terminate_backend(%s)", [holder])
        waiting.join(timeout=10)
        assert not waiting.is_alive(), "the name's lock taken by the test, as another server would"
        t0 = time.monotonic()
        assert n1.proc.wait(timeout=30) == 4
        assert time.monotonic() - t0 < 10  # not the shell's 5 s TERM grace, nor the stop's 30
        assert not _alive(pid)
        output = n1.output()
        assert output.count("dispatcher.identity_lost") == 1, output
        assert query(nodes.db, "SELECT status FROM runs WHERE id = %s", [run_id]) == \
            [("running",)]  # n1's no more: not recorded there
    # The server under that name now (the test's lock gone): its start settles the run.
    n1.start()
    assert wait_terminal(nodes.db, [run_id], timeout=30)[run_id] == "succeeded"
    assert query(nodes.db, "SELECT attempt, status FROM attempts WHERE run_id = %s "
                           "ORDER BY attempt", [run_id]) == [(1, "failed"), (2, "succeeded")]


def test_a_node_refused_the_data_dir_at_start_leaves_the_store_alone(
        nodes: Nodes, project: Path) -> None:
    """The lock is taken again as the server starts (two started at the same moment both
    pass the first look): one held shared passes that look and is caught there."""
    nodes.rules(_slow_rules(project))
    data = project / "data-held"
    data.mkdir(mode=0o700)
    with open(data / "node.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_SH | fcntl.LOCK_NB)
        with pytest.raises(RuntimeError, match="exited 3") as refused:
            _second_node_on(project, nodes, data).start()
    out = str(refused.value)
    assert "another server is running with this --data" in out and "Traceback" not in out
    assert not query(nodes.db, "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND database = "
                               "(SELECT oid FROM pg_database WHERE datname = current_database())")


def test_an_sqlite_server_and_a_node_never_share_a_data_dir(nodes: Nodes, project: Path) -> None:
    """`serve` without --db in a shell with HOOKRUNNER_DATA set: the SQLite server's start
    removed the node's start marks (its crash-time evidence), and retention each other's
    run dirs. Refused in both orders."""
    nodes.rules(_slow_rules(project))
    (node,) = nodes.start("pg")
    marks = sorted(p.name for p in node.data.glob("started-*.marks"))
    sqlite = Server(project / "rules", node.data, project,
                    env={"GITHUB_WEBHOOK_SECRET": GITHUB_SECRET})
    with pytest.raises(RuntimeError, match="exited 3") as refused:
        sqlite.start()
    assert "another server is running with this --data" in str(refused.value)
    assert sorted(p.name for p in node.data.glob("started-*.marks")) == marks and marks
    node.stop()
    alone = project / "data-sqlite"
    sqlite = Server(project / "rules", alone, project,
                    env={"GITHUB_WEBHOOK_SECRET": GITHUB_SECRET}).start()
    try:
        with pytest.raises(RuntimeError, match="exited 3") as refused:
            _second_node_on(project, nodes, alone).start()
        assert "another server is running with this --data" in str(refused.value)
    finally:
        sqlite.stop()


def test_a_stop_ends_while_the_database_does_not_answer(
        project: Path, own_cluster: pgcluster.Cluster) -> None:
    """A database that does not answer (frozen; a table lock held elsewhere did so too,
    until the pool's lock_timeout) during a stop: the claim loop, waiting on a query, kept
    the server alive until it answered, and
    so did a canceled run whose result could not be written. That run is recorded at the next
    start as the stop had ended it. A `?wait` request polling the store for its run got a 500 at
    uvicorn's cut-off, for a delivery that was journaled: 202 now."""
    nodes = Nodes(project, pgcluster.create_database(own_cluster.url))
    nodes.rules(_slow_rules(project))
    node = nodes.server("n1", args=["--lease", "60s"])  # not lost while it does not answer
    node.env["HOOKRUNNER_GRACE"] = "1s"
    node.start()
    assert node.proc is not None
    run_id = post(node, {"retry": False}).json()["runs"][0]
    waited: list[httpx.Response] = []
    waiter = threading.Thread(target=lambda: waited.append(
        post(node, {"retry": False, "n": 2}, params={"wait": "60s"})))
    waiter.start()
    until(lambda: len(nodes.lines("events")) == 2, 15, "both slow runs started")
    locker = psycopg.connect(nodes.db)
    locker.execute("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")
    time.sleep(1.5)  # the claim loop's next query now waits on the lock
    # ...and the server stops answering (frozen) before the pool's lock_timeout ends it.
    frozen = _postgres_pids(own_cluster)
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        node.proc.send_signal(signal.SIGTERM)
        try:
            code = node.proc.wait(timeout=40)  # the grace + the store's 10 s + closing it
        except subprocess.TimeoutExpired:
            code = None
        waiter.join(timeout=30)
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        locker.rollback()
        locker.close()
    assert code in (0, -signal.SIGTERM), node.output()
    assert "dispatcher.store_not_answering" in node.output()
    (answer,) = waited
    assert answer.status_code == 202 and len(answer.json()["runs"]) == 1, answer.text
    abandoned = next(x for x in node.output().splitlines() if "run.result_abandoned" in x)
    assert run_id in abandoned and answer.json()["runs"][0] in abandoned, abandoned
    assert statuses(nodes.db, [run_id])[run_id] == "running"  # nothing could be written
    try:
        node.start()
        final = wait_terminal(nodes.db, [run_id], timeout=30)
        # As the stop had ended it (kept in the data dir for this start), not interrupted.
        assert final[run_id] == "canceled", final
        assert f"run.result_recovered run_id={run_id}" in node.output()
    finally:
        nodes.stop_all()


def test_a_result_held_back_by_a_frozen_read_after_its_action_is_kept_at_a_stop(
        project: Path, own_cluster: pgcluster.Cluster) -> None:
    """Between an action's end and its result's write the dispatcher reads the store (was a
    cancel asked for? how many attempts never started?). A database frozen during such a
    read held the result back where a stop could not keep it: the next start took the run
    for interrupted, and the attempt that had exited 3 lost its exit code. It is kept."""
    nodes = Nodes(project, pgcluster.create_database(own_cluster.url))
    gate, ended = project / "gate", project / "out" / "ended"
    recording_script(project, "gated.sh",
                     f'while [ ! -e "{gate}" ]; do sleep 0.05; done\ntouch "{ended}"\nexit 3')
    nodes.rules("""
rules:
  - name: gated
    hook: github
    run: {shell: {argv: ["scripts/gated.sh"]}}
    retry: {attempts: 2, backoff: 0s}
""")
    node = nodes.server("n1", args=["--lease", "60s"])  # not fenced while frozen
    node.env["HOOKRUNNER_GRACE"] = "1s"
    node.start()
    assert node.proc is not None
    run_id = post(node, {}).json()["runs"][0]
    until(lambda: len(nodes.lines("events")) == 1, 15, "the run started")
    locker = psycopg.connect(nodes.db)
    locker.execute("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")
    frozen: list[int] = []
    try:
        gate.touch()  # it exits 3; its rule retries, so a cancel asked meanwhile is read
        until(ended.exists, 15, "the action ended")
        time.sleep(1.0)  # that read now waits on the lock, and the database freezes in it
        frozen = _postgres_pids(own_cluster)
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        node.proc.send_signal(signal.SIGTERM)
        code = node.proc.wait(timeout=40)  # the grace + the store's 10 s + closing it
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        locker.rollback()
        locker.close()
    assert code in (0, -signal.SIGTERM), node.output()
    abandoned = next(x for x in node.output().splitlines() if "run.result_abandoned" in x)
    assert run_id in abandoned and "records them as they ended" in abandoned, abandoned
    try:
        node.start()
        assert wait_terminal(nodes.db, [run_id], timeout=30)[run_id] == "failed"
        first = query(nodes.db, "SELECT status, exit_code, reason FROM attempts "
                      "WHERE run_id = %s AND attempt = 1", [run_id])
        assert first == [("failed", 3, "exit 3")], first  # not `interrupted`, no exit code
        assert f"run.result_recovered run_id={run_id}" in node.output()
        # Kept before its run.finished line and metrics: given by this start, once.
        finished = [x for x in node.output().splitlines()
                    if f"run.finished run_id={run_id}" in x]
        assert len(finished) == 2, finished  # attempt 1's (now), attempt 2's
        assert "attempt=1 status=failed exit_code=3" in finished[0], finished
        metrics = httpx.get(f"{node.url}/metrics", timeout=10).text
        assert 'hookrunner_runs_finished_total{rule="gated",status="failed"} 2.0' in metrics
        assert 'hookrunner_runs_ended_total{rule="gated",status="failed"} 1.0' in metrics
    finally:
        nodes.stop_all()


def test_a_stop_while_the_store_opens_starts_no_action(nodes: Nodes, project: Path) -> None:
    """SIGTERM during an upgrade's long migration (here: another node holds the migration
    lock) was acted on only after the dispatcher had started queued runs: there was no
    dispatcher yet to tell. The start now ends without starting any."""
    nodes.rules(_slow_rules(project))
    first = nodes.server("n1", workers=1).start()
    run_ids = [post(first, {"retry": False, "n": i}).json()["runs"][0] for i in range(3)]
    until(lambda: len(nodes.lines("events")) == 1, 15, "the first run started")
    first.kill()
    second = nodes.server("n1", workers=1)
    second.data.mkdir(parents=True, exist_ok=True)
    with psycopg.connect(nodes.db, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK,))
        with open(second.log_path, "ab") as log:
            second.proc = second._spawn(log)
        waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        until(lambda: query(nodes.db, waiting)[0][0] == 1, 15, "the start waits to migrate")
        second.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)  # the signal handled while the store is still opening
        holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK,))
    assert second.proc.wait(timeout=30) in (0, -signal.SIGTERM), second.output()
    assert "server.started" in second.output() and "run.started" not in second.output()
    assert len(nodes.lines("events")) == 1  # no action started at the stopped start
    assert sorted(statuses(nodes.db, run_ids).values()) == ["failed", "queued", "queued"]


def test_the_output_of_a_run_its_node_recovers_is_readable_on_every_node(
    nodes: Nodes, project: Path
) -> None:
    """A node restarted after a crash ends its interrupted runs; their output is on its disk
    only, and another node answered an empty log for them."""
    write_script(project, "talk.sh", 'echo "before the crash $HOOKRUNNER_ATTEMPT"\nsleep 60\n')
    nodes.rules("""
rules:
  - {name: talk, hook: github, run: {shell: {argv: ["scripts/talk.sh"]}}}
""")
    n2 = nodes.server("n2", args=["--lease", "60s"]).start()  # no take-over: n2 recovers it
    run_id = post(n2, {}).json()["runs"][0]
    log = project / "data-n2" / "logs" / run_id / "1.log"
    until(lambda: log.exists() and "before the crash" in log.read_text(), 15, "it printed on n2")
    n1 = nodes.server("n1", args=["--lease", "60s"]).start()
    n2.kill()
    n2.start()
    assert wait_terminal(nodes.db, [run_id], timeout=30)[run_id] == "failed"
    with n1.admin() as c:
        assert c.get(f"/api/runs/{run_id}/log").text.endswith(
            "before the crash 1\n[hookrunner] failed: interrupted: node n2 restarted\n")


def test_a_node_that_makes_its_own_admin_token_on_a_shared_database_says_so(
        nodes: Nodes, project: Path) -> None:
    """Each node made a token of its own: behind a balancer every other API call was a 401."""
    nodes.rules("rules: []\n")
    node = Server(project / "rules", project / "data-own", project,
                  env={"GITHUB_WEBHOOK_SECRET": GITHUB_SECRET, "HOOKRUNNER_ADMIN_TOKEN": ""},
                  args=["--db", nodes.db, "--node", "own-token"])
    nodes.nodes["own-token"] = node
    node.start()
    node.stop()
    assert "server.admin_token_per_node" in node.output(), node.output()
    assert "HOOKRUNNER_ADMIN_TOKEN on every node" in node.output()


FREEZE = 12.0  # seconds: 3 leases, past the pool timeout (5 s) the records wait out


def _postgres_pids(cluster: pgcluster.Cluster) -> list[int]:
    """The cluster's postmaster and every process it started."""
    head = int((cluster.dir / "postmaster.pid").read_text().split()[0])
    children = Path(f"/proc/{head}/task/{head}/children").read_text().split()
    return [head, *map(int, children)]


def test_a_database_that_hangs_for_leases_takes_over_no_run_that_ended_well(
    project: Path, own_cluster: pgcluster.Cluster
) -> None:
    """A frozen database (every PostgreSQL process stopped, not dead) held every node's
    renewals. At the thaw a node took over the runs of another at once: their actions had
    ended well and were waiting to be recorded, and ran a second time. Now a node whose
    renewals were held up waits a lease before it takes any over, and a run whose action
    has ended is not fenced."""
    nodes = Nodes(project, pgcluster.create_database(own_cluster.url), lease="4s")
    try:
        recording_script(project, "quick.sh", "sleep 0.3")
        nodes.rules("""
rules:
  - name: quick
    hook: github
    run: {shell: {argv: ["scripts/quick.sh"]}}
    retry: {attempts: 3, backoff: 0s}
""")
        # n2 runs them all; n1 is idle, so its first call in the freeze is its identity
        # lock's, on a connection of its own, which hangs (the pool's time out and say so).
        busy = nodes.start("n2")[0]
        run_ids = list(iter_runs(post_many([busy], [{"n": i} for i in range(6)])))
        until(lambda: len([x for x in nodes.lines("events") if x[0] == "start"]) >= 6, 30,
              "every action started")
        servers = [busy, *nodes.start("n1")]
        pids = _postgres_pids(own_cluster)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(FREEZE)
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        final = wait_terminal(nodes.db, run_ids)
        assert set(final.values()) == {"succeeded"}, final
        starts = Counter(x[1] for x in nodes.lines("events") if x[0] == "start")
        assert all(starts[r] == 1 for r in run_ids), starts
        attempts = query(nodes.db, "SELECT max(attempt) FROM runs WHERE id = ANY(%s)", [run_ids])
        assert attempts == [(1,)], attempts
        assert any("dispatcher.store_stalled" in s.output() for s in servers)
    finally:
        nodes.stop_all()


def test_a_frozen_database_is_a_503_in_time_not_a_request_without_an_answer(
    project: Path, own_cluster: pgcluster.Cluster
) -> None:
    """Every PostgreSQL process stopped, their kernel still acknowledging: a delivery waited
    for as long as that lasted (10 minutes, in an audit), its sender long gone. It hears
    503 within the sender's usual 10 s; a write that goes through at the thaw is said."""
    nodes = Nodes(project, pgcluster.create_database(own_cluster.url))
    try:
        recording_script(project, "quick.sh", "true")
        nodes.rules("rules:\n  - {name: quick, hook: github, run: {shell: {argv: "
                    "[\"scripts/quick.sh\"]}}}\n")
        (node,) = nodes.start("n1")
        assert post(node, {"n": 0}).status_code == 202  # the pool holds idle connections now
        pids = _postgres_pids(own_cluster)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            answer = post(node, {"n": 1})
            took = time.monotonic() - started
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        assert answer.status_code == 503 and answer.headers["retry-after"] == "5", answer.text
        assert took < 10, took
        until(lambda: "delivery.accepted_late" in node.output()
              or "dispatcher.store_unavailable" in node.output(), 30, "the write ended")
    finally:
        nodes.stop_all()

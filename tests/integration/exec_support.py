"""Shared by the execution-control tests: a recording script, rules around it, and readers of
what the scripts recorded (start/end timestamps and pids, written by the processes themselves)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.conftest import GITHUB_SECRET, write_script
from tests.serverproc import Server, post_github

# Each attempt appends to <records>/<run id>.<attempt>:
#   start <unix time> <pid> <tag>     as it starts
#   child <pid>                       a background grandchild it left running (child=1)
#   end <unix time>                   if it got to the end
RECORD_SCRIPT = """\
f="$RECORDS/$HOOKRUNNER_RUN_ID.$HOOKRUNNER_ATTEMPT"
echo "start $(date +%s.%N) $$ $3" >> "$f"
if [ "$CHILD" = 1 ]; then sleep 120 & echo "child $!" >> "$f"; fi
echo "attempt $HOOKRUNNER_ATTEMPT of $HOOKRUNNER_RULE tag $3"
sleep "$1"
echo "end $(date +%s.%N)" >> "$f"
exit "$2"
"""

HOOKS = """
hooks:
  github:
    verify:
      github:
        secret: {env: GITHUB_WEBHOOK_SECRET}
rules:
"""


def rule(name: str, records: Path, extra: str = "", when: str | None = None) -> str:
    """A rule running the recording script; `extra` is more YAML of the rule (4-space indent)."""
    return f"""
  - name: {name}
    hook: github
    when: {json.dumps(when or f'payload.rule | default("{name}") == "{name}"')}
    run:
      shell:
        argv: ["scripts/rec.sh", "{{{{ payload.sleep | default(0) }}}}",
               "{{{{ payload.exit | default(0) }}}}", "{{{{ payload.tag | default('') }}}}"]
        env: {{RECORDS: "{records}", CHILD: "{{{{ payload.child | default(0) }}}}"}}
{extra}"""


def setup(project: Path) -> Path:
    """Write the recording script; return the directory the records go to."""
    records = project / "records"
    records.mkdir(exist_ok=True)
    write_script(project, "rec.sh", RECORD_SCRIPT)
    return records


@dataclass
class Record:
    start: float
    pid: int
    tag: str
    end: float | None = None
    children: list[int] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        return [self.pid, *self.children]


def read_record(path: Path) -> Record | None:
    rec: Record | None = None
    for line in path.read_text().splitlines():
        kind, *rest = line.split()
        if kind == "start":
            rec = Record(start=float(rest[0]), pid=int(rest[1]), tag=rest[2] if len(rest) > 2 else "")
        elif kind == "child" and rec is not None:
            rec.children.append(int(rest[0]))
        elif kind == "end" and rec is not None:
            rec.end = float(rest[0])
    return rec


def record(records: Path, run_id: str, attempt: int = 1) -> Record | None:
    path = records / f"{run_id}.{attempt}"
    return read_record(path) if path.exists() else None


def all_records(records: Path) -> dict[str, Record]:
    """Every attempt's record by `<run id>.<attempt>`."""
    out = {}
    for path in records.iterdir():
        rec = read_record(path)
        if rec is not None:
            out[path.name] = rec
    return out


def wait_for(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def started(records: Path, run_id: str, attempt: int = 1) -> Record:
    rec: Record = wait_for(f"run {run_id} to start", lambda: record(records, run_id, attempt))
    return rec


def alive(pid: int) -> bool:
    """Whether the process exists (os.kill(pid, 0)) and is not a zombie nobody reaped yet."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:].split()[0] not in ("Z", "X")


def none_alive(pids: list[int], timeout: float = 10.0) -> bool:
    """True once no pid of the list is alive (a killed tree may take a moment to be reaped)."""
    wait_for(f"pids {pids} to be gone", lambda: not any(alive(p) for p in pids), timeout)
    return True


def fire(server: Server, **payload: Any) -> str:
    """Post one delivery expected to queue exactly one run; return the run id."""
    r = post_github(server.url, GITHUB_SECRET, payload)
    assert r.status_code == 202, r.text
    runs: list[str] = r.json()["runs"]
    assert len(runs) == 1, r.text
    return runs[0]


def run_doc(server: Server, run_id: str) -> dict[str, Any]:
    with server.admin() as c:
        doc: dict[str, Any] = c.get(f"/api/runs/{run_id}").json()
    return doc


def overlap(a: Record, b: Record) -> bool:
    assert a.end is not None and b.end is not None
    return a.start < b.end and b.start < a.end

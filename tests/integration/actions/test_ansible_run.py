"""The ansible runner with real ansible-playbook runs (local connection, implicit localhost)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import json
import os
import re
import resource
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest

from hookrunner import orphans
from hookrunner.actions import RUNNERS
from hookrunner.actions.ansible import _short_of, spawn_failed
from hookrunner.actions.process import is_alive
from hookrunner.errors import ActionError

ANSIBLE = RUNNERS["ansible"]
REPO = Path(__file__).resolve().parents[3]
OVERLOADED = {"monitoring_status": "overloaded", "service": "api"}

SLEEPER = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.shell: "echo $$ > {{ pidfile }}; exec sleep 60"
"""
FAILING = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.fail:
        msg: "deliberate failure for {{ webhook.service }}"
"""
ENV_PROBE = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.debug:
        msg: "secret=[{{ lookup('env', 'HOOKRUNNER_TEST_SECRET') }}] run={{ run }}"
      vars:
        run: "{{ lookup('env', 'HOOKRUNNER_RUN_ID') }}"
"""

# TMPDIR is <run dir>/tmp/modules, extravars.yml is <run dir>/extravars.yml.
MODE_PROBE = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.shell: 'stat -c "extravars %a" "$TMPDIR/../../extravars.yml"; cd "$TMPDIR/../../..";
        stat -c "dir %a" . .. ../..'
      register: mode
    - ansible.builtin.debug:
        msg: "{{ mode.stdout }}"
"""


@pytest.fixture
def playbooks(harness) -> Path:
    d = harness.root / "playbooks"
    d.mkdir()
    shutil.copy(REPO / "playbooks" / "scale_up.yml", d / "scale_up.yml")
    (d / "sleeper.yml").write_text(SLEEPER)
    (d / "failing.yml").write_text(FAILING)
    (d / "env_probe.yml").write_text(ENV_PROBE)
    (d / "mode_probe.yml").write_text(MODE_PROBE)
    return d


async def test_scale_up_sees_the_webhook_payload_and_extravars(harness, playbooks: Path) -> None:
    marker = harness.tmp / "marker"
    spec = {"playbook": "scale_up.yml", "extravars": {"replicas": "3", "marker_file": str(marker)}}
    result = await ANSIBLE.run(spec, harness.ctx(payload=OVERLOADED))
    log = harness.log_text()
    assert result.outcome == "succeeded", log
    assert marker.read_text() == "replicas=3 status=overloaded\n"
    assert '"msg": "scaling api to 3 replicas"' in log
    assert "PLAY RECAP" in log
    assert result.outputs["stats"]["changed"] == {"localhost": 1}
    assert result.outputs["stats"]["failures"] == {}


async def test_scale_up_does_nothing_when_not_overloaded(harness, playbooks: Path) -> None:
    marker = harness.tmp / "marker"
    spec = {"playbook": "scale_up.yml", "extravars": {"marker_file": str(marker)}}
    result = await ANSIBLE.run(spec, harness.ctx(payload={"monitoring_status": "ok"}))
    assert result.outcome == "succeeded", harness.log_text()
    assert not marker.exists()
    assert "status is ok; not scaling" in harness.log_text()


async def test_payload_strings_are_never_templated_by_ansible(harness, playbooks: Path) -> None:
    payload = {"monitoring_status": "overloaded", "service": "{{ lookup('pipe', 'id') }}"}
    result = await ANSIBLE.run({"playbook": "scale_up.yml"}, harness.ctx(payload=payload))
    log = harness.log_text()
    assert result.outcome == "succeeded", log
    assert "scaling {{ lookup('pipe', 'id') }} to 2 replicas" in log
    assert "uid=" not in log


TYPES = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.debug:
        msg: "{{ item }}={{ lookup('vars', item) | type_debug }}:{{ lookup('vars', item) }}"
      loop: [yes_, hex, octal, decimal, date, nul, num, flag, tmpl]
"""


async def test_strings_arrive_as_the_same_strings_and_other_values_keep_their_type(
        harness, playbooks: Path) -> None:
    """YAML would read `yes`, `0x10`, `0123`, `1.10`, `2024-01-01` and `~` as other types."""
    (playbooks / "types.yml").write_text(TYPES)
    extravars = {"yes_": "yes", "hex": "0x10", "octal": "0123", "decimal": "1.10",
                 "date": "2024-01-01", "nul": "~", "num": 3, "flag": False,
                 "tmpl": "{{ 7 * 7 }}"}
    result = await ANSIBLE.run({"playbook": "types.yml", "extravars": extravars}, harness.ctx())
    log = harness.log_text()
    assert result.outcome == "succeeded", log
    for line in ["yes_=str:yes", "hex=str:0x10", "octal=str:0123", "decimal=str:1.10",
                 "date=str:2024-01-01", "nul=str:~", "num=int:3", "flag=bool:False",
                 "tmpl=str:{{ 7 * 7 }}"]:
        assert line in log, (line, log)


BREAKS = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.debug:
        msg: "{{ item }}={{ lookup('vars', item) | to_json }}"
      loop: [nel, ls, ps, mixed]
"""


async def test_strings_with_yamls_other_line_breaks_arrive_unchanged(
        harness, playbooks: Path) -> None:
    """U+0085 arrived as a space: PyYAML wrote it raw in a single-quoted scalar, where YAML
    folds a line break."""
    (playbooks / "breaks.yml").write_text(BREAKS)
    extravars = {"nel": "x\x85y", "ls": "x\u2028y", "ps": "x\u2029y", "mixed": "a\x85\n b\u2028"}
    result = await ANSIBLE.run({"playbook": "breaks.yml", "extravars": extravars}, harness.ctx())
    log = harness.log_text()
    assert result.outcome == "succeeded", log
    for name, value in extravars.items():  # (debug's msg, JSON in JSON: escapes, no folds)
        assert f'"msg": {json.dumps(f"{name}={json.dumps(value)}")}' in log, (name, log)


HOSTS = """
- hosts: all
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.debug:
        msg: "on {{ inventory_hostname }} checking=[{{ lookup('env', 'ANSIBLE_HOST_KEY_CHECKING') }}]"
"""


async def test_inventory_limit_and_tags_as_an_operator_writes_them(harness, playbooks: Path) -> None:
    (playbooks / "hosts.yml").write_text(HOSTS)
    (harness.root / "inv").mkdir()
    (harness.root / "inv" / "hosts.ini").write_text("[web]\nweb1\nweb2\n[db]\ndb1\n")
    spec = {"playbook": "hosts.yml", "inventory": "inv/hosts.ini", "limit": ["web1", "db1"],
            "tags": [["all"]]}
    result = await ANSIBLE.run(spec, harness.ctx(name="ok"))
    log = harness.log_text("ok")
    assert result.outcome == "succeeded", log
    assert "on web1" in log and "on db1" in log and "on web2" not in log
    # SSH host keys are checked, as Ansible does by default (ansible-runner turns it off).
    assert "checking=[]" in log
    # A wrong inventory path: not a host named like the path, but a failed run.
    typo = await ANSIBLE.run({**spec, "inventory": "inv/hosts.in"}, harness.ctx(name="typo"))
    assert typo.outcome == "failed" and typo.reason.startswith("inventory not found: inv/hosts.in")
    # A payload value in a templated limit cannot make Ansible read a file.
    for limit in ("web-x,@/etc/passwd", "web1 @/etc/passwd", "web1\n@/etc/passwd"):
        with pytest.raises(ActionError, match="names a file"):
            await ANSIBLE.run({**spec, "limit": limit}, harness.ctx(name="file"))
    with pytest.raises(ActionError, match="read as an option"):
        await ANSIBLE.run({**spec, "limit": "--list-hosts"}, harness.ctx(name="option"))


async def test_a_limit_of_separators_or_a_lone_operator_runs_on_no_host(
        harness, playbooks: Path) -> None:
    """`"{{ payload.hosts | join(',') }}"` of `[":"]` ran the play on every host (Ansible
    splits at colons as at commas), and of `["&"]` made ansible-playbook fail (exit 250)."""
    (playbooks / "hosts.yml").write_text(HOSTS)
    (harness.root / "inv").mkdir()
    (harness.root / "inv" / "hosts.ini").write_text("[web]\nweb1\nweb2\n[db]\ndb1\n")
    spec = {"playbook": "hosts.yml", "inventory": "inv/hosts.ini"}
    for limit in (":", " : , ", "&", "!&"):
        with pytest.raises(ActionError, match=r"limit rendered empty.*every host"):
            await ANSIBLE.run({**spec, "limit": limit}, harness.ctx(name="empty"))
    for limit in ("web1,&", "web1:!"):
        with pytest.raises(ActionError, match="with no host pattern after it"):
            await ANSIBLE.run({**spec, "limit": limit}, harness.ctx(name="lone"))
    result = await ANSIBLE.run({**spec, "limit": "web:!web2"}, harness.ctx(name="ok"))
    log = harness.log_text("ok")
    assert result.outcome == "succeeded", log
    assert "on web1" in log and "on web2" not in log and "on db1" not in log


async def test_check_mode_changes_nothing(harness, playbooks: Path) -> None:
    marker = harness.tmp / "marker"
    spec = {"playbook": "scale_up.yml", "check": True, "extravars": {"marker_file": str(marker)}}
    result = await ANSIBLE.run(spec, harness.ctx(payload=OVERLOADED))
    assert result.outcome == "succeeded", harness.log_text()
    assert not marker.exists()


async def test_failing_playbook_is_failed(harness, playbooks: Path) -> None:
    result = await ANSIBLE.run({"playbook": "failing.yml"}, harness.ctx(payload=OVERLOADED))
    # The first failed task is in the reason, not only in the log.
    assert (result.outcome, result.exit_code, result.reason) == (
        "failed", 2, "exit 2 (task 'ansible.builtin.fail' failed on localhost)")
    assert "deliberate failure for api" in harness.log_text()
    assert result.outputs["stats"]["failures"] == {"localhost": 1}


async def test_a_playbook_that_does_not_parse_says_so_in_the_reason(
    harness, playbooks: Path
) -> None:
    """Said before ansible runs, by place only: ansible-core 2.19 prints the lines before
    the error, which a payload-chosen file (`app/{{ payload.f }}`: an `.env`) holds secrets
    in."""
    (playbooks / "broken.yml").write_text("- hosts: localhost\n  tasks: [\n    pw=hunter2\n")
    with pytest.raises(ActionError) as refused:  # (the dispatcher fails the run with it)
        await ANSIBLE.run({"playbook": "broken.yml"}, harness.ctx(payload=OVERLOADED))
    why = str(refused.value)
    assert re.fullmatch(r"ansible: playbooks/broken\.yml:4:\d+: YAML parsing failed: .+: not "
                        r"run, since ansible would print it back .+", why), why
    assert "hunter2" not in why + harness.log_text()


async def test_server_secrets_reach_neither_the_play_nor_the_artifacts(
    harness, playbooks: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOKRUNNER_TEST_SECRET", "s3cret-value")
    ctx = harness.ctx(payload={})
    result = await ANSIBLE.run({"playbook": "env_probe.yml"}, ctx)
    log = harness.log_text()
    assert result.outcome == "succeeded", log
    assert "secret=[] run=run" in log
    stored = [p for p in ctx.work_dir.rglob("*") if p.is_file() and b"s3cret-value" in p.read_bytes()]
    assert stored == []


async def test_passed_env_values_are_not_left_in_the_artifacts(
    harness, playbooks: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ansible-runner writes the whole environment to `artifacts/<id>/command`, whatever
    `suppress_env_files` says; the work dir is kept until --keep, so that file is removed."""
    monkeypatch.setenv("DEPLOY_KEY", "passed-s3cret")
    ctx = harness.ctx(payload={}, pass_env=("DEPLOY_KEY",))
    assert ctx.env["DEPLOY_KEY"] == "passed-s3cret"  # the play gets it
    result = await ANSIBLE.run({"playbook": "env_probe.yml"}, ctx)
    assert result.outcome == "succeeded", harness.log_text()
    assert list(ctx.work_dir.rglob("command")) == []
    stored = [p for p in ctx.work_dir.rglob("*") if p.is_file() and b"passed-s3cret" in p.read_bytes()]
    assert stored == []


async def test_the_plays_programs_are_its_paths_not_hookrunners_venv(
        harness, playbooks: Path) -> None:
    """The venv's bin dir went first on the play's PATH: a `pip install` task changed
    hookrunner's own venv, and `terraform` was the venv's wrapper. ansible-playbook itself
    is still found (started by its path)."""
    own = harness.tmp / "bin"
    own.mkdir()
    for name in ("pip", "terraform"):
        (own / name).write_text("#!/bin/sh\n")
        (own / name).chmod(0o755)
    (playbooks / "which.yml").write_text(
        "- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.command: sh -c 'command -v pip; command -v terraform'\n"
        "      register: found\n"
        "    - ansible.builtin.debug: {msg: 'found {{ found.stdout_lines | join(\" \") }}'}\n")
    ctx = harness.ctx(payload={})
    ctx = dataclasses.replace(ctx, env={**ctx.env, "PATH": f"{own}:/usr/bin:/bin"})
    result = await ANSIBLE.run({"playbook": "which.yml"}, ctx)
    log = harness.log_text()
    assert result.outcome == "succeeded", log
    assert f"found {own}/pip {own}/terraform" in log, log


async def test_playbook_outside_playbooks_dir_is_refused(harness, playbooks: Path) -> None:
    (harness.root / "other.yml").write_text(FAILING)
    with pytest.raises(ActionError):
        await ANSIBLE.run({"playbook": "../other.yml"}, harness.ctx())


async def test_missing_playbook_is_failed(harness, playbooks: Path) -> None:
    result = await ANSIBLE.run({"playbook": "nope.yml"}, harness.ctx())
    assert (result.outcome, result.reason) == ("failed", "playbook not found: playbooks/nope.yml")


async def test_a_large_playbook_is_read_while_the_event_loop_goes_on(
        harness, playbooks: Path) -> None:
    """The playbook is read and composed (is it a list of plays?) before a run: on the event
    loop, a large one held every hook's answer for as long (seconds here)."""
    items = "".join(f"      - item{i}\n" for i in range(400_000))  # ~7.5 MB
    (playbooks / "large.yml").write_text(
        "- hosts: localhost\n  gather_facts: false\n  vars:\n    big:\n" + items)
    gaps: list[float] = []

    async def tick() -> None:  # what every other request on the loop sees
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            gaps.append(time.monotonic() - last)
            last = time.monotonic()

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.02)  # ticking
    started = time.monotonic()
    # (An inventory not there: the run ends after the placement, with no play to wait for.)
    result = await ANSIBLE.run({"playbook": "large.yml", "inventory": "absent"}, harness.ctx())
    took = time.monotonic() - started
    await asyncio.sleep(0.05)  # the ticker notes a stall that lasted until the run's end
    ticker.cancel()
    assert result.reason.startswith("inventory not found: absent"), result.reason
    # On the loop, the placement is one gap as long as itself (however fast the machine);
    # off it, the loop ticks on through it (its longest gap here: a tenth of it).
    assert max(gaps) < took / 2, (max(gaps), took)


async def _wait_for_pid(path: Path) -> int:
    for _ in range(300):
        if path.exists() and path.read_text().strip():
            return int(path.read_text())
        await asyncio.sleep(0.05)
    raise AssertionError("the task never started")


async def test_cancel_stops_the_playbook_and_its_workers(harness, playbooks: Path) -> None:
    home_before = _home_temp()
    pidfile = harness.tmp / "task.pid"
    ctx = harness.ctx(timeout=None)
    spec = {"playbook": "sleeper.yml", "extravars": {"pidfile": str(pidfile)}}
    task = asyncio.ensure_future(ANSIBLE.run(spec, ctx))
    task_pid = await _wait_for_pid(pidfile)
    started = time.monotonic()
    ctx.cancel.set()
    result = await asyncio.wait_for(task, 15)
    assert (result.outcome, result.reason) == ("canceled", "canceled")
    assert time.monotonic() - started < 8
    assert not is_alive(task_pid)
    assert "[hookrunner] canceled" not in harness.log_text()  # the run's closing line says it
    # What the killed module left (its unpacked payload, its arguments) was in the run's own
    # dir, not in /tmp or ~/.ansible/tmp for good, and went with it (extravars.yml too).
    assert not list(ctx.work_dir.glob("ansible-*"))
    assert _home_temp() == home_before


def _home_temp() -> set[str]:
    """Ansible's default remote temp dir on this machine."""
    home = Path.home() / ".ansible" / "tmp"
    return set(os.listdir(home)) if home.is_dir() else set()


async def test_timeout_stops_the_playbook_and_its_workers(harness, playbooks: Path) -> None:
    pidfile = harness.tmp / "task.pid"
    ctx = harness.ctx(timeout=4.0)
    spec = {"playbook": "sleeper.yml", "extravars": {"pidfile": str(pidfile)}}
    task = asyncio.ensure_future(ANSIBLE.run(spec, ctx))
    task_pid = await _wait_for_pid(pidfile)
    result = await asyncio.wait_for(task, 20)
    assert (result.outcome, result.reason) == ("timed_out", "timed out after 4s")
    assert not is_alive(task_pid)
    assert not list(ctx.work_dir.glob("ansible-*"))


async def test_the_work_directories_it_makes_are_private(harness, playbooks: Path) -> None:
    """<data>/work/<run>/<attempt>: every level ansible's run makes is 0700, whatever the
    umask (the play's artifacts hold its extra vars: the payload)."""
    base = harness.tmp / "fresh-data" / "work"
    ctx = dataclasses.replace(harness.ctx(payload={}), work_dir=base / "run_x" / "1")
    old = os.umask(0o022)
    try:
        result = await ANSIBLE.run({"playbook": "mode_probe.yml"}, ctx)
    finally:
        os.umask(old)
    assert result.outcome == "succeeded", harness.log_text()
    for d in (base.parent, base):
        assert d.stat().st_mode & 0o777 == 0o700, d
    # extravars.yml (the payload) was 0600 while the play ran, and the attempt's, the run's
    # and the work dir 0700; the run's dirs are gone with the play.
    assert "extravars 600\\ndir 700\\ndir 700\\ndir 700" in harness.log_text(), harness.log_text()
    assert list(base.iterdir()) == []


async def test_a_cancel_before_the_play_reports_its_pid_still_stops_everything(
    harness, playbooks: Path,
) -> None:
    """In its first moments ansible-playbook has reported no pid, and the runner would only
    kill the playbook's own group seconds later (its workers live in sessions of their own):
    everything that carries the run's id is stopped at once instead."""
    pidfile = harness.tmp / "task.pid"
    ctx = harness.ctx(timeout=None, name="early")
    spec = {"playbook": "sleeper.yml", "extravars": {"pidfile": str(pidfile)}}
    task = asyncio.ensure_future(ANSIBLE.run(spec, ctx))
    for _ in range(400):  # ansible-playbook is up, long before its first event
        if orphans.find_all({"test": ["early"]}):
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("ansible-playbook never started")
    started = time.monotonic()
    ctx.cancel.set()
    result = await asyncio.wait_for(task, 15)
    assert (result.outcome, result.reason) == ("canceled", "canceled")
    assert time.monotonic() - started < 4
    await asyncio.sleep(0.5)  # what it could still have started meanwhile
    assert orphans.find_all({"test": ["early"]}) == {}


async def test_ansible_runners_artifacts_are_not_kept(harness, playbooks: Path) -> None:
    """They hold the whole output (past the run log's cap) and stay until --keep: the run
    log and the stats are the record."""
    ctx = harness.ctx(payload=OVERLOADED)
    result = await ANSIBLE.run({"playbook": "failing.yml"}, ctx)
    assert result.outputs["stats"]["failures"] == {"localhost": 1}  # read before they went
    assert "deliberate failure for api" in harness.log_text()
    assert [p for p in ctx.work_dir.rglob("*") if p.name in ("artifacts", "job_events", "stdout")] == []


@contextlib.contextmanager
def no_descriptors_left() -> Iterator[Callable[[int], None]]:
    """Every file descriptor taken (under a lowered limit), as under a connection flood;
    what it yields gives `n` of them back."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held: list[int] = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    def free(n: int) -> None:
        for _ in range(n):
            os.close(held.pop())

    try:
        with contextlib.suppress(OSError):
            while True:
                held.append(os.open(os.devnull, os.O_RDONLY))
        yield free
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_a_play_that_cannot_start_for_want_of_descriptors_is_not_started(
    harness, playbooks: Path,
) -> None:
    """EMFILE: nothing of the play ran, so the dispatcher queues it again (as for a shell
    action) instead of failing it for good."""
    ctx = harness.ctx(payload=OVERLOADED)
    with no_descriptors_left():
        result = await ANSIBLE.run({"playbook": "scale_up.yml"}, ctx)
    assert (result.outcome, result.not_started) == ("failed", True), result
    assert "Too many open files" in result.reason
    again = await ANSIBLE.run({"playbook": "scale_up.yml"}, harness.ctx(payload=OVERLOADED))
    assert again.outcome == "succeeded", again


def test_an_error_starting_the_playbook_is_told_from_one_after_it_started(tmp_path: Path) -> None:
    """pexpect's own spawn failing means no process; an error anywhere else may come after
    the playbook ran, and must not have it run again."""
    with no_descriptors_left():
        try:
            pexpect.spawn("/bin/true")
        except OSError as exc:
            starting = exc
        else:
            raise AssertionError("spawned without a descriptor")
        try:
            open(tmp_path / "x", "w")  # noqa: SIM115
        except OSError as exc:
            elsewhere = exc
        else:
            raise AssertionError("opened without a descriptor")
    assert starting.errno == elsewhere.errno == errno.EMFILE
    assert spawn_failed(starting) and not spawn_failed(elsewhere)


def test_a_pty_that_cannot_be_opened_for_want_of_descriptors_is_a_shortage() -> None:
    """With a descriptor or two free, Python's openpty() falls back and then says "out of pty
    devices" with no errno: the same shortage, under another name (it failed the run)."""
    with no_descriptors_left() as free:
        free(2)
        try:
            pexpect.spawn("/bin/true")
        except OSError as exc:
            failed = exc
        else:
            raise AssertionError("spawned without a pty")
    assert str(failed) == "out of pty devices" and failed.errno is None
    assert spawn_failed(failed) and _short_of(failed)


async def test_a_play_that_ran_is_never_taken_for_not_started(
    harness, playbooks: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Descriptors run out once the play has ended, as ansible-runner writes its `status`
    file (made to fail here: freed descriptors make a real shortage land elsewhere each
    time). The play ran, so the attempt fails as usual and is not queued again."""
    real_open = os.open

    def short_of_descriptors(path: Any, *args: Any, **kwargs: Any) -> int:
        if str(path).endswith(os.sep + "status") and "artifacts" in str(path):
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", short_of_descriptors)
    result = await ANSIBLE.run({"playbook": "scale_up.yml"}, harness.ctx(payload=OVERLOADED))
    assert "PLAY RECAP" in harness.log_text()  # it ran
    assert result.outcome == "failed" and not result.not_started, result
    assert "Too many open files" in result.reason, result


async def test_a_payload_too_deep_for_ansible_fails_with_a_reason(harness, playbooks: Path) -> None:
    """Ansible's YAML reader gave up at ~300 levels (exit 4), the vars file's writer at ~480
    (an internal error with a 3,000-line traceback in the server log)."""
    deep: Any = 1
    for _ in range(480):
        deep = [deep]
    result = await ANSIBLE.run({"playbook": "env_probe.yml"}, harness.ctx(payload={"v": deep}))
    assert result.outcome == "failed"
    assert result.reason == ("the payload or extravars are nested more than 200 levels deep: "
                             "Ansible cannot read such extra vars"), result.reason


async def test_the_play_runs_in_root_with_the_projects_ansible_cfg(harness, playbooks: Path) -> None:
    """A team's ansible.cfg at the project root (roles_path...) was never read: the play ran
    in ansible-runner's private dir, so `roles: [common]` was "not found"; and a path of the
    data dir given as the remote temp dir was made on every managed host."""
    (harness.root / "ansible.cfg").write_text("[defaults]\nroles_path = team_roles\n")
    tasks = harness.root / "team_roles" / "common" / "tasks"
    tasks.mkdir(parents=True)
    (tasks / "main.yml").write_text(
        "- ansible.builtin.debug:\n    msg: \"role ran in {{ lookup('pipe', 'pwd') }}\"\n"
        "- ansible.builtin.debug:\n    msg: \"remote tmp [{{ lookup('env', 'ANSIBLE_REMOTE_TEMP') }}]\"\n")
    (playbooks / "with_role.yml").write_text(
        "- hosts: localhost\n  connection: local\n  gather_facts: false\n  roles: [common]\n")
    result = await ANSIBLE.run({"playbook": "with_role.yml"}, harness.ctx())
    log = harness.log_text()
    assert result.outcome == "succeeded", log
    assert f"role ran in {harness.root}" in log
    assert "remote tmp []" in log  # Ansible's own default (~/.ansible/tmp), not a local path
    # The cfg's inventory is not the rule's: without one in the rule, only the implicit
    # localhost exists, as before (`hosts: all` reaching the project's hosts would be new).
    (harness.root / "ansible.cfg").write_text("[defaults]\ninventory = prod.ini\n")
    (harness.root / "prod.ini").write_text("prodweb1 ansible_connection=local\n")
    (playbooks / "everywhere.yml").write_text(
        "- hosts: all\n  gather_facts: false\n  tasks: [{ansible.builtin.debug: {msg: 'on {{ "
        "inventory_hostname }}'}}]\n")
    everywhere = await ANSIBLE.run({"playbook": "everywhere.yml"}, harness.ctx(name="all"))
    assert everywhere.outcome == "succeeded" and "prodweb1" not in harness.log_text("all")
    with_it = await ANSIBLE.run({"playbook": "everywhere.yml", "inventory": "prod.ini"},
                                harness.ctx(name="given"))
    assert with_it.outcome == "succeeded" and "on prodweb1" in harness.log_text("given")
    # With one, the managed hosts' temp dir is Ansible's own default (~/.ansible/tmp) or the
    # project's: a path of this machine's data dir would be made on each of them.
    (playbooks / "remote_tmp.yml").write_text(
        "- hosts: all\n  gather_facts: false\n  tasks: [{ansible.builtin.debug: {msg: \"remote "
        "tmp [{{ lookup('env', 'ANSIBLE_REMOTE_TEMP') }}]\"}}]\n")
    remote = await ANSIBLE.run({"playbook": "remote_tmp.yml", "inventory": "prod.ini"},
                               harness.ctx(name="remote"))
    assert remote.outcome == "succeeded" and "remote tmp []" in harness.log_text("remote")
    # Without one, the implicit localhost (this machine) keeps its temp files in the run's
    # dir, while a host the play adds gets Ansible's own default.
    (playbooks / "added.yml").write_text(
        "- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.debug: {msg: \"local [{{ ansible_remote_tmp | default('') }}]\"}\n"
        "    - ansible.builtin.add_host: {name: added1, ansible_connection: local}\n"
        "- hosts: added1\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.debug: {msg: \"added [{{ ansible_remote_tmp | default('') }}]\"}\n")
    added = await ANSIBLE.run({"playbook": "added.yml"}, harness.ctx(name="added"))
    log = harness.log_text("added")
    assert added.outcome == "succeeded", log
    assert re.search(r"local \[.*/ansible-\w+/tmp/remote\]", log) and "added []" in log, log
    # review: the project's own choice is not beaten by the run's host var.
    for name, where, text in (
            ("cfg", harness.root / "ansible.cfg", "[defaults]\nremote_tmp = /tmp/team-tmp\n"),
            ("gv", playbooks / "group_vars" / "all.yml", "ansible_remote_tmp: /tmp/team-tmp\n")):
        where.parent.mkdir(exist_ok=True)
        where.write_text(text)
        chosen = await ANSIBLE.run({"playbook": "added.yml"}, harness.ctx(name=name))
        assert chosen.outcome == "succeeded", harness.log_text(name)
        assert "/tmp/remote]" not in harness.log_text(name), harness.log_text(name)
        where.unlink()


RESCUED = """
- hosts: all
  gather_facts: false
  tasks:
    - block:
        - name: try primary mirror
          ansible.builtin.fail: {msg: primary down}
          when: inventory_hostname == "h1"
      rescue:
        - ansible.builtin.debug: {msg: rescued}
    - name: real failure
      ansible.builtin.fail: {msg: broken}
      when: inventory_hostname == "h2"
"""
RESCUED_THEN_FAILED = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - block:
        - name: try primary mirror
          ansible.builtin.fail: {msg: primary down}
      rescue:
        - ansible.builtin.debug: {msg: rescued}
    - name: real failure
      ansible.builtin.fail: {msg: broken}
"""
NO_LOG = """
- hosts: localhost
  connection: local
  gather_facts: false
  vars: {credential: "S3cr3t-Value"}
  tasks:
    - name: "rotate {{ credential }}"
      ansible.builtin.fail: {msg: "cannot rotate {{ credential }}"}
      no_log: true
"""


async def test_the_reason_names_the_failure_that_failed_the_play(harness, playbooks: Path) -> None:
    """A failure a `rescue` handled came first and was named, though the recap had that host
    `failed=0 rescued=1`; a no_log task's templated name put its secret in the reason (and so
    in the server log and the API)."""
    (harness.root / "inv.ini").write_text("h1 ansible_connection=local\nh2 ansible_connection=local\n")
    (playbooks / "rescued.yml").write_text(RESCUED)
    (playbooks / "no_log.yml").write_text(NO_LOG)
    result = await ANSIBLE.run({"playbook": "rescued.yml", "inventory": "inv.ini"},
                               harness.ctx(name="rescued"))
    assert (result.outcome, result.reason) == ("failed", "exit 2 (task 'real failure' failed on h2)"), \
        harness.log_text("rescued")
    assert result.outputs["stats"]["rescued"] == {"h1": 1}
    (playbooks / "rescued_then_failed.yml").write_text(RESCUED_THEN_FAILED)
    same_host = await ANSIBLE.run({"playbook": "rescued_then_failed.yml"}, harness.ctx(name="same"))
    assert same_host.reason == "exit 2 (task 'real failure' failed on localhost)", same_host
    hidden = await ANSIBLE.run({"playbook": "no_log.yml"}, harness.ctx(name="no_log"))
    assert (hidden.outcome, hidden.reason) == ("failed", "exit 2 (a no_log task failed on localhost)")


"""Kind `ansible`: a playbook under `<root>/playbooks/` through ansible-runner.

ansible-runner starts `ansible-playbook` itself (pexpect) in a thread of its own; stopping it
goes through `actions.process`. The pitfalls measured in findings.md, and what is done here:
- it seeds the child environment with the server's `os.environ` (hook secrets) and stores it
  in `artifacts/<id>/command`: the prepared environment is cut back to the action's own, and
  the file is removed once the playbook has started;
- ansible-playbook must be found: it is started by its path beside the interpreter, not
  looked up on PATH, where the venv's bin dir would have to come ahead of the play's own
  `pip`, `python3` and `terraform`;
- 2.19 workers start their own session, so killing the playbook's group leaves them: on
  cancel/timeout the playbook pid gets SIGTERM (ansible stops its workers), then after the
  grace period the cancel callback lets runner SIGKILL the group and leftover descendants
  are killed by pid;
- a fresh private_data_dir per run (env files of a reused dir keep old keys), C.UTF-8,
  ANSIBLE_HOME and LOCAL_TEMP inside it unless passed, the play run in --root (the project's
  ansible.cfg), implicit localhost alone when the rule names no inventory.

Payload data must never be Jinja to Ansible: `{{ lookup('pipe', 'id') }}` in a webhook field
would run on this host. Extra vars are therefore written as YAML with every string `!unsafe`.
"""

from __future__ import annotations

import asyncio
import configparser
import json
import os
import re
import shlex
import shutil
import signal
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from ansible_runner.interface import init_runner

from hookrunner.actions import process, spec
from hookrunner.actions.base import Outcome, RunContext, RunResult, register
from hookrunner.actions.environment import VENV_BIN, with_path_entry
from hookrunner.actions.paths import confine, stays_in, written_dirs, written_of
from hookrunner.actions.values import stringify
from hookrunner.errors import ActionError, ConfigError
from hookrunner.payload import deeper_than
from hookrunner.private import private_dir, private_file
from hookrunner.redact import PATHS_WRITTEN

KIND = "ansible"
KEYS = ("playbook", "inventory", "limit", "tags", "check", "extravars")
PLAYBOOK_DIR = "playbooks"
# A templated inventory stays in here: anywhere else under --root a payload value could name
# a script (Ansible runs an executable inventory), a directory of them, or a secret file that
# Ansible's INI parser would print back as host names.
INVENTORY_DIR = "inventories"
# Vars files beside the playbooks: never a playbook (a vars file's lines come back in errors).
VARS_DIRS = frozenset({"group_vars", "host_vars"})
PAYLOAD_VAR = "webhook"
MAX_VARS_DEPTH = 200  # levels of arrays and objects in the extra vars (see run)
RUN_DIR_PREFIX = "ansible-"  # an attempt's private_data_dir: <data>/work/<run>/<n>/ansible-*
ANSIBLE_ERRORS = ("ERROR!", "[ERROR]:", "ansible-playbook: error:")  # its own error lines
FAILURE_CHARS = 300  # of the first failure, in the run's reason
KEPT_FAILURES = 50  # hosts whose failures are remembered for the reason (a play over many)
PEXPECT_TIMEOUT = 0.5  # seconds between cancel-callback polls (5 s default = slow cancels)
UTF8_LOCALE = "C.UTF-8"  # LC_ALL=C makes ansible refuse to start
# Quiet, colourless output; no "implicit localhost" warnings where no inventory is given.
FIXED_ENV = {"ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_RETRY_FILES_ENABLED": "0"}
# ansible-runner turns SSH host key checking off unless told otherwise; hookrunner leaves it
# to Ansible (on, unless ansible.cfg or a --pass-env'd ANSIBLE_HOST_KEY_CHECKING says off).
HOST_KEY_CHECKING = "ANSIBLE_HOST_KEY_CHECKING"
IMPLICIT_LOCALHOST_ENV = {
    "ANSIBLE_LOCALHOST_WARNING": "False",
    "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
}


def normalize_ansible(raw: Any) -> dict[str, Any]:
    spec_ = spec.check_mapping(raw, KIND)
    spec.check_keys(spec_, KIND, KEYS)
    out: dict[str, Any] = {"playbook": spec.required_str(spec_, "playbook", KIND)}
    for key in ("inventory", "limit"):
        if key == "limit" and isinstance(spec_.get(key), list):  # any of its patterns
            out[key] = spec.str_list(spec_, key, KIND)
            if not _names_hosts(",".join(out[key])):  # ([], [""] or [":"]: every host)
                raise ConfigError(f"{KIND}.{key} must name a host (leave it out for every "
                                  "host)", path=(key,))
            continue
        value = spec.optional_str(spec_, key, KIND)
        if key == "limit" and value is not None and not _names_hosts(value):
            raise ConfigError(f"{KIND}.{key} must not be empty (leave it out for every host)",
                              path=(key,))
        if value is not None:
            out[key] = value
    tags = spec.str_list(spec_, "tags", KIND)
    if tags is not None and not any("{" in t or _split_tags(t) for t in tags):
        # `tags: ""` or `[]`: no --tags at all, every task (a templated one is judged as it
        # renders, by tag_list).
        raise ConfigError(f"{KIND}.tags must name a tag (leave it out for every task)",
                          path=("tags",))
    if tags is not None:
        out["tags"] = tags
    check = spec.optional_bool(spec_, "check", KIND)
    if check is not None:
        out["check"] = check
    extravars = spec.any_map(spec_, "extravars", KIND)
    if extravars is not None:
        if PAYLOAD_VAR in extravars:
            raise ConfigError(
                f"ansible.extravars: {PAYLOAD_VAR!r} is reserved for the payload",
                path=("extravars", PAYLOAD_VAR),
            )
        out["extravars"] = extravars
    if marks := written_dirs(out, (("playbook", PLAYBOOK_DIR), ("inventory", ""))):
        inventory = marks.get("inventory")
        if inventory is not None and not inventory.startswith(f"{INVENTORY_DIR}/"):
            marks["inventory"] = f"{INVENTORY_DIR}/"  # (its value must be under it: match)
        out[PATHS_WRITTEN] = marks
    return out


# Where Ansible may split a host pattern: commas, and without one, colons and any whitespace
# (its split_host_pattern). Split here at all of them, so no part it finds can hide.
_PATTERN_PARTS = re.compile(r"[,:\s]+")


def host_pattern(limit: Any) -> str | None:
    """`limit` as Ansible's host pattern (a list renders as `a,b`). `@file` is refused: it makes
    Ansible read any file it names, and a payload value in a templated limit could name one
    (its lines come back as warnings in the run log), also after a space (`web1 @/etc/passwd`).
    So is a leading `-`: ansible-playbook would take the value for an option."""
    if limit is None or limit == "" or limit == []:
        return None
    items = limit if isinstance(limit, list) else [limit]
    pattern = ",".join(stringify(i) for i in items)
    if any(part.lstrip("!&").startswith("@") for part in _PATTERN_PARTS.split(pattern)):
        raise ActionError("ansible: limit names a file ('@...'); only host patterns are allowed")
    if pattern.lstrip().startswith("-"):
        raise ActionError("ansible: limit starts with '-', which ansible-playbook would read "
                          "as an option; only host patterns are allowed")
    lone = next((p for p in _PATTERN_PARTS.split(pattern) if p and not p.strip("!&")), None)
    if lone is not None and _names_hosts(pattern):  # (all of them alone: see _placed)
        # `web1,&{{ payload.also }}` of "": ansible-playbook fails on it ("string index
        # out of range", exit 250).
        raise ActionError(f"ansible: limit has {lone!r} with no host pattern after it, which "
                          "ansible-playbook cannot read (`&` and `!` go right before a "
                          "pattern: `web:!web2`): not run (guard the value in `when`)")
    return pattern


def _names_hosts(pattern: str | None) -> bool:
    """Whether a host pattern names any host: `:`, `, ,` or `!` alone are no --limit to
    Ansible (every host) or make it fail."""
    return any(p.strip("!&") for p in _PATTERN_PARTS.split(pattern or ""))


def with_origin(error: str, after: list[str], root: str = "") -> str:
    """Ansible's error line, led by the `file:line:column` its next line names (`Origin:
    <root>/playbooks/deploy.yml:6:7`, as `playbooks/deploy.yml:6:7`), which the reason's cut
    at 300 characters would lose."""
    origin = next((a.removeprefix("Origin:").strip() for a in after if a.startswith("Origin:")), "")
    if not origin:
        return error
    if root and origin.startswith(root.rstrip(os.sep) + os.sep):
        origin = origin[len(root.rstrip(os.sep)) + 1:]
    if len(origin) > 120:  # a deep path: its end says which file
        origin = "..." + origin[-117:]
    return f"{origin}: {error.removeprefix('[ERROR]:').strip()}"


@dataclass(frozen=True)
class _Placed:
    playbook: Path
    inventory: Path | None
    limit: str | None
    tags: list[str]
    missing: str  # why the play cannot start for want of a file ("" when all are there)


def _placed(rendered: Mapping[str, Any], root: Path) -> _Placed:
    """The play's files under `root` and its host pattern and tags; ActionError for what may
    not be named (a path outside root, a limit naming a file)."""
    given = stringify(rendered.get("playbook"))
    playbook = stays_in(root, confine(root, given, base=PLAYBOOK_DIR),
                        written_of(rendered, "playbook"), given)
    if VARS_DIRS & set(playbook.relative_to((root / PLAYBOOK_DIR).resolve()).parts[:-1]):
        # Ansible prints a file that is no play, line by line: a secret in group_vars/all.yml.
        raise ActionError("ansible: the playbook is in a group_vars or host_vars directory, "
                          "which holds vars files, not playbooks")
    inventory = rendered.get("inventory")
    inventory_path = stays_in(root, confine(root, stringify(inventory)),
                              written_of(rendered, "inventory"), stringify(inventory)) \
        if inventory else None
    limit = host_pattern(rendered.get("limit"))
    tags = tag_list([None] if "tags" in rendered and rendered["tags"] is None else rendered.get("tags"))
    if "limit" in rendered and not _names_hosts(limit):
        # A templated limit of `""`, `[]` or `":"` would be no --limit at all: every host.
        shown = f" ({limit[:20]!r} names no host)" if limit and limit.strip() else ""
        raise ActionError(f"ansible: limit rendered empty{shown}, which would run the play on "
                          "every host of the inventory: not run (guard the value in `when`)")
    missing = ""
    if not playbook.is_file():
        missing = f"playbook not found: {PLAYBOOK_DIR}/{stringify(rendered.get('playbook'))}"
    elif (why := _no_playbook(playbook)) is not None:
        # Wherever it is: `app/{{ payload.env }}.yml` of `vars/prod` named app/vars/prod.yml,
        # and a role's vars or defaults are beside the playbooks too.
        named = stringify(rendered.get("playbook"))
        raise ActionError(f"ansible: {PLAYBOOK_DIR}/{named}{why}: not run, since ansible "
                          "would print it back (a vars file's secrets too)")
    elif inventory_path is not None and not inventory_path.exists():
        # ansible-runner would take the text as an inline host list, a host of that name.
        missing = (f"inventory not found: {inventory} (a file or directory under --root; "
                   "inline host lists are not supported)")
    return _Placed(playbook, inventory_path, limit, tags, missing)


MAX_PLAYBOOK = 16 * 1024 * 1024  # bytes read to tell a playbook (as a rules file's bound)
# What makes a list item a play to ansible-core: its hosts, or a playbook it imports.
PLAY_KEYS = frozenset({"hosts", "import_playbook", "ansible.builtin.import_playbook",
                       "ansible.legacy.import_playbook"})
MAX_MERGES = 20  # `<<` merges followed into one another (a loop is no YAML: aliases are trees)


NOT_PLAYS = " is no playbook (its YAML is not a list of plays, each with `hosts` or " \
            "`import_playbook`)"


def _no_playbook(path: Path) -> str | None:
    """Why the file is no playbook, to follow its name (`:3:1: ...`, ` is no playbook (...)`),
    or None where its YAML is a list of plays: a vars file is a mapping, a role's tasks file
    a list of tasks. Only composed, not constructed (any tag, `!vault` too). One that is
    vault-encrypted whole is ansible's to judge (it shows none of it). One that does not
    parse is said here, by place only: ansible-core 2.19 prints the lines before the error
    (an `.env` file's `KEY=secret` lines)."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_PLAYBOOK)
    except OSError:
        return None  # (ansible says why it cannot read it)
    if data.lstrip().startswith(b"$ANSIBLE_VAULT"):
        return None
    try:
        node = yaml.compose(data, Loader=_LOADER)
    except yaml.YAMLError as exc:
        if len(data) >= MAX_PLAYBOOK:
            return None  # cut short here, not in the file: ansible's to judge
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None)
        # (Never str(exc): PyYAML quotes the line itself.)
        return f"{at}: YAML parsing failed" + (f": {problem}" if problem else "")
    # Each item a play: a list of tasks (`- set_fact: {db_password: ...}`) or of strings is
    # refused by ansible as no play, and it prints the item's lines back too.
    if isinstance(node, yaml.SequenceNode) and all(_a_play(item) for item in node.value):
        return None
    return NOT_PLAYS


def _a_play(node: yaml.Node, depth: int = 0) -> bool:
    """Whether a list item has a play's key, its own or merged in (`<<: *web`)."""
    if not isinstance(node, yaml.MappingNode) or depth > MAX_MERGES:
        return False
    for key, value in node.value:
        if isinstance(key, yaml.ScalarNode) and key.value in PLAY_KEYS:
            return True
        if isinstance(key, yaml.ScalarNode) and key.tag == "tag:yaml.org,2002:merge":
            merged = value.value if isinstance(value, yaml.SequenceNode) else [value]
            if any(_a_play(m, depth + 1) for m in merged):
                return True
    return False


_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def tag_list(tags: Any) -> list[str]:
    """`tags` items, where a templated item may render to a list of tags; none where the rule
    has no `tags`. ActionError where they render to no tag at all: a sender's `""` was no
    --tags, so every task ran, where the rule meant some."""
    if tags is None:
        return []
    out: list[str] = []
    for item in tags if isinstance(tags, list) else [tags]:
        for tag in item if isinstance(item, list) else [item]:
            if tag is None or isinstance(tag, dict):
                # `null` went as the tag "null" (a mapping as its JSON): a play of other
                # tags than the rule meant, where `limit` of `null` is refused.
                raise ActionError(f"ansible: a tag rendered {'null' if tag is None else 'a mapping'}"
                                  ", which names no tag: not run (guard the value in `when`)")
            out += _split_tags(stringify(tag))
    if not out:
        raise ActionError("ansible: tags rendered empty, which would run every task of the "
                          "play: not run (guard the value in `when`)")
    if out[0].startswith("-"):
        raise ActionError("ansible: tags start with '-', which ansible-playbook would read as "
                          "an option")
    return out


def _split_tags(text: str) -> list[str]:
    """The tags of one item as ansible-playbook reads `--tags a,b`: split at commas, spaces
    around them dropped, empty ones dropped (`" "` and `","` selected no task)."""
    return [t.strip() for t in text.split(",") if t.strip()]


def build_envvars(base: Mapping[str, str], run_dir: Path, *, inventory: bool) -> dict[str, str]:
    env = dict(base)
    # Last, as for every action: first, a play's `pip install` changed hookrunner's own venv,
    # and its `python3` and `terraform` were the venv's. ansible-playbook is started by its
    # path (playbook_command).
    env["PATH"] = with_path_entry(env.get("PATH") or os.defpath, VENV_BIN)
    if not _is_utf8(env.get("LC_ALL") or env.get("LC_CTYPE") or env.get("LANG") or ""):
        env["LC_ALL"] = env["LANG"] = UTF8_LOCALE
    env.update(FIXED_ENV)
    if not inventory:
        env.update(IMPLICIT_LOCALHOST_ENV)
    # Private to the run unless --pass-env names them. No ANSIBLE_REMOTE_TEMP: that path is
    # made on every managed host (a path of this machine's data dir failed each SSH task of a
    # user who may not create it, and beat the project's remote_tmp), even without an
    # inventory (`add_host`, `delegate_to`).
    env.setdefault("ANSIBLE_HOME", str(run_dir / "ansible_home"))
    env.setdefault("ANSIBLE_LOCAL_TEMP", str(run_dir / "tmp" / "local"))
    # A module unpacks itself into the system temp dir and removes it when it ends: a canceled
    # or timed-out run left ~130 KB in /tmp for good. Unless --pass-env names TMPDIR, that goes
    # in the run's own dir instead, which retention prunes with it.
    env.setdefault("TMPDIR", str(run_dir / "tmp" / "modules"))
    return env


def playbook_command(command: list[str]) -> list[str]:
    """ansible-runner's command with the ansible-playbook beside this interpreter named by
    its path: found on PATH, it would need the venv ahead of the play's own programs."""
    beside = os.path.join(VENV_BIN, "ansible-playbook")
    if command[:1] == ["ansible-playbook"] and os.access(beside, os.X_OK):
        return [beside, *command[1:]]
    return command  # (installed elsewhere: found on PATH, the venv's bin dir last)


def _project_sets_remote_tmp(env: Mapping[str, str], root: Path, playbook_dir: Path) -> bool:
    """Whether the operator or the project chose the remote temp dir, which the run's host
    var would beat (a var beats a setting, and inventory host_vars beat a playbook's
    group_vars): `--pass-env ANSIBLE_REMOTE_TEMP`, `remote_tmp` in the ansible.cfg Ansible
    reads (ANSIBLE_CONFIG, else --root's, the user's, /etc's: the first found), or
    `ansible_remote_tmp` in a group_vars file beside the playbooks. A project's
    host_vars/localhost beside its playbooks wins anyway."""
    if "ANSIBLE_REMOTE_TEMP" in env or "ANSIBLE_REMOTE_TMP" in env:
        return True
    for cfg in (env.get("ANSIBLE_CONFIG"), root / "ansible.cfg", Path.home() / ".ansible.cfg",
                "/etc/ansible/ansible.cfg"):
        path = (root / cfg) if cfg else None  # a relative ANSIBLE_CONFIG: from --root, the cwd
        if path is not None and path.is_file():
            parser = configparser.ConfigParser(interpolation=None, strict=False)
            try:
                parser.read(path)
            except (configparser.Error, OSError, UnicodeError):
                return True  # unreadable here: leave the choice to Ansible
            if parser.has_option("defaults", "remote_tmp"):
                return True
            break  # Ansible reads the first one found
    group_vars = playbook_dir / "group_vars"
    try:
        return group_vars.is_dir() and any(
            "ansible_remote_tmp" in f.read_text(errors="replace")
            for f in group_vars.rglob("*") if f.is_file())
    except OSError:
        return True


def remove_left_dirs(work_dir: Path) -> None:
    """Every attempt's run dir under `work_dir` (a server's start: a SIGKILL left them, with
    `extravars.yml`, the whole payload, and the modules' arguments in `tmp/`)."""
    for run_dir in work_dir.glob(f"*/*/{RUN_DIR_PREFIX}*"):
        if run_dir.is_dir() and not run_dir.is_symlink():
            _remove_run_dir(run_dir)


def _remove_run_dir(run_dir: Path) -> None:
    """The run's dir, and the attempt's and the run's dirs above it (`<data>/work/<run>/<n>`)
    where it leaves them empty: nothing of the run stays under the data dir."""
    shutil.rmtree(run_dir, ignore_errors=True)
    for parent in (run_dir.parent, run_dir.parent.parent):
        try:
            parent.rmdir()
        except OSError:  # not empty (what a killed module still writes), or gone already
            return


def _local_remote_temp(run_dir: Path) -> None:
    """The implicit localhost's remote temp dir in the run's own dir: a module stopped by a
    cancel or timeout left its arguments (secrets too) in ~/.ansible/tmp for good. As a host
    var of the implicit localhost (read from beside the run's empty inventory), not the
    environment, which every host reads: hosts a play adds (`add_host`) or delegates to are
    asked to make Ansible's own default, not a path of this machine's data dir. A project's
    `host_vars/localhost` beside its playbooks still wins."""
    host_vars = run_dir / "host_vars"
    host_vars.mkdir(mode=0o700)
    path = json.dumps(str(run_dir / "tmp" / "remote"))  # JSON is YAML; !unsafe: no Jinja
    (host_vars / "localhost.yml").write_text(f"ansible_remote_tmp: !unsafe {path}\n")


def _is_utf8(locale: str) -> bool:
    return locale.lower().replace("-", "").endswith("utf8")


class _Unsafe(dict[str, Any]):
    """A mapping Ansible must not template anything in (YAML `!unsafe` on the mapping)."""


class _UnsafeDumper(yaml.SafeDumper):
    pass


# The one tag goes on the whole document, not on each string: ansible-core 2.19 resolves an
# `!unsafe` scalar again as if it were unquoted, so `!unsafe 'yes'` became true and
# `!unsafe '0x10'` 16. Inside an unsafe mapping, each value keeps its own quoted type.
_UnsafeDumper.add_representer(_Unsafe, lambda dumper, data: dumper.represent_mapping("!unsafe", dict(data)))

# YAML 1.1's line breaks beyond \n and \r. PyYAML writes them as they are inside a single-
# quoted scalar, where a break is folded: `x\x85y` arrived as `x y`. Double-quoted, they
# are written as escapes (\N, \L, \P), and arrive as sent.
_YAML_BREAKS = ("\x85", "\u2028", "\u2029")


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    if any(b in data for b in _YAML_BREAKS):
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style='"')
    return dumper.represent_str(data)


_UnsafeDumper.add_representer(str, _represent_str)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {stringify(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return stringify(value)


def extravars_yaml(extravars: Mapping[str, Any], payload: Any) -> str:
    """The extra vars file: the rule's extravars plus `webhook`, none of it ever templated
    by Ansible, every string arriving as the same string."""
    data = _plain({**extravars, PAYLOAD_VAR: payload})
    return yaml.dump(_Unsafe(data), Dumper=_UnsafeDumper, allow_unicode=True)


def private_env(prepared: Mapping[str, Any], wanted: Mapping[str, str]) -> dict[str, Any]:
    """ansible-runner's prepared env minus what it copied from the server's own environment."""
    server = os.environ
    return {k: v for k, v in prepared.items() if k in wanted or k not in server or server[k] != v}


@dataclass
class _Job:
    """Shared between the event loop and ansible-runner's thread."""

    pid: int | None = None  # ansible-playbook, from the events
    kill_now: threading.Event = field(default_factory=threading.Event)
    rc: int | None = None
    status: str = ""
    stats: dict[str, Any] | None = None
    error: str = ""
    spawning: bool = False  # ansible-runner went on to start ansible-playbook
    not_started: bool = False  # the error came before ansible-playbook started
    command_file: Path | None = None  # ansible-runner's record of the command and its env
    # Each host's last failed task or unreachable state (hosts in the order they first
    # failed, the first few), and ansible's own error line: for the run's reason (`failure`).
    failed: dict[str, str] = field(default_factory=dict)
    error_line: str = ""
    _origin_due: int = 0  # events after the error line that may still name its place
    root: str = ""  # --root: the place is named relative to it

    def note(self, event: Mapping[str, Any], text: str) -> None:
        """Remember what went wrong, so the run's reason says more than `exit 2`."""
        data = event.get("event_data") or {}
        kind = event.get("event")
        if kind in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors"):
            host = str(data.get("host", "?"))
            if host not in self.failed and len(self.failed) >= KEPT_FAILURES:
                return
            # The task and host, not its message: a command's stderr may hold a token, and
            # the reason goes into the server's log (the run's own log has the message). Nor
            # the name of a no_log task: a templated name may show the secret it hides.
            res = data.get("res")
            hidden = isinstance(res, Mapping) and "censored" in res  # (what no_log leaves)
            self.failed[host] = "unreachable" if kind == "runner_on_unreachable" else \
                "a no_log task failed" if hidden else f"task {data.get('task', '?')!r} failed"
        elif not self.error_line:  # a playbook that does not parse, a bad option
            lines = text.splitlines()
            for n, line in enumerate(lines):
                if line.startswith(ANSIBLE_ERRORS):
                    self.error_line = with_origin(line.strip(), lines[n + 1:n + 3], self.root)
                    self._origin_due = 0 if self.error_line != line.strip() else 3
                    break
        elif self._origin_due:  # its `Origin:` line came as an event of its own
            self._origin_due -= 1
            if text.startswith("Origin:"):
                self.error_line = with_origin(self.error_line, [text], self.root)
                self._origin_due = 0

    @property
    def failure(self) -> str:
        """What failed the play: the last failure of the first host the final stats count
        as failed or unreachable (one a `rescue` handled, or an `ignore_unreachable` host, did
        not fail it; after a failure that counts, a host runs nothing more), else the first
        host's failure, else ansible's own error line."""
        stats = self.stats or {}
        counted = {*(stats.get("failures") or {}), *(stats.get("dark") or {})}
        host = next((h for h in self.failed if h in counted), next(iter(self.failed), None))
        text = f"{self.failed[host]} on {host}" if host is not None else self.error_line
        return text[:FAILURE_CHARS]

    def forget_command(self) -> None:
        """Remove `artifacts/<id>/command`: ansible-runner writes the whole environment there
        (the `--pass-env` values), whatever `suppress_env_files` says, and the run's work dir
        is kept until --keep. Done at the first event and again at the end."""
        if self.command_file is not None:
            try:
                self.command_file.unlink(missing_ok=True)
            except OSError:
                return
            self.command_file = None


class AnsibleRunner:
    kind = KIND
    stand_ins = {"playbook": "site.yml"}  # (see shell's)
    paths = (("playbook", PLAYBOOK_DIR), ("inventory", ""))
    templated_paths = (("inventory", INVENTORY_DIR),)  # (key, dir its templated value stays in)
    # (key, base): a templated value stays in the dir the rule writes before its `{{`
    written_paths = (("playbook", PLAYBOOK_DIR),)

    def normalize(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        return normalize_ansible(raw)

    def needs_delivery(self, rendered: Mapping[str, Any]) -> bool:
        return True  # the payload is always the extra var `webhook`

    def implicit_concurrency_key(self, rendered: Mapping[str, Any]) -> str | None:
        return None

    def refusal(self, rendered: Mapping[str, Any], root: Path) -> str | None:
        try:
            _placed(rendered, root)  # a file not there yet is `check`'s warning, not this
        except ActionError as exc:
            return str(exc)
        return None

    async def run(self, rendered: Mapping[str, Any], ctx: RunContext) -> RunResult:
        # Off the loop: it reads and composes the playbook (up to MAX_PLAYBOOK), which held
        # every hook's answer for seconds on a large one or a slow disk.
        placed = await asyncio.to_thread(_placed, rendered, ctx.root)
        playbook, inventory_path = placed.playbook, placed.inventory
        limit, tags = placed.limit, placed.tags
        reason = placed.missing
        if not reason and any(deeper_than(v, MAX_VARS_DEPTH)
                              for v in (ctx.payload, rendered.get("extravars"))):
            # Ansible's YAML reader gave up at ~300 levels (exit 4), and the vars file's
            # writer here at ~480 (a RecursionError: an internal error, a long traceback).
            reason = (f"the payload or extravars are nested more than {MAX_VARS_DEPTH} levels "
                      "deep: Ansible cannot read such extra vars")
        if reason:
            ctx.log.note(reason)
            return RunResult("failed", reason=reason)
        run_dir: Path | None = None
        try:
            private_dir(ctx.work_dir)  # every directory it makes 0700 (mkdir -p: only the last)
            run_dir = Path(tempfile.mkdtemp(prefix=RUN_DIR_PREFIX, dir=ctx.work_dir))  # 0700
            vars_file = run_dir / "extravars.yml"
            private_file(vars_file)  # 0600 before anything is in it: it holds the whole payload
            vars_file.write_text(extravars_yaml(rendered.get("extravars") or {}, ctx.payload))
            (run_dir / "runner").mkdir(mode=0o700)
            (run_dir / "tmp" / "modules").mkdir(mode=0o700, parents=True)
            if inventory_path is None:
                # No inventory in the rule means the implicit localhost alone, as it always
                # did: an empty one beats the project's ansible.cfg `inventory =`, now read
                # (the play runs in --root), where `hosts: all` would reach its hosts.
                inventory_path = run_dir / "no-inventory"
                inventory_path.touch(mode=0o600)
                if not _project_sets_remote_tmp(ctx.env, ctx.root, playbook.parent):
                    _local_remote_temp(run_dir)
        except OSError as exc:  # a full disk, or no descriptor left (then it may run later)
            reason = f"cannot prepare the run in {ctx.work_dir}: {exc.strerror or exc}"
            ctx.log.note(reason)
            if run_dir is not None:  # extravars.yml may be written: the payload
                _remove_run_dir(run_dir)
            return RunResult("failed", reason=reason, not_started=exc.errno in process.SHORT_OF)
        envvars = build_envvars(ctx.env, run_dir, inventory=placed.inventory is not None)
        cmdline = ["-e", f"@{vars_file}"]
        if rendered.get("check"):
            cmdline.append("--check")
        kwargs: dict[str, Any] = {
            "private_data_dir": str(run_dir / "runner"),
            # The play runs in --root, as `ansible-playbook` run from the project does: the
            # project's ansible.cfg (roles_path, collections_path, inventory...) is read, and a
            # relative path in a passed ANSIBLE_* variable means the same as there.
            "project_dir": str(ctx.root),
            "playbook": str(playbook),
            "inventory": str(inventory_path),
            "limit": limit,
            "tags": ",".join(tags) if tags else None,
            "envvars": envvars,
            "cmdline": shlex.join(cmdline),
            "quiet": True,  # ansible-runner would echo the playbook on our stdout
            "suppress_env_files": True,  # env/envvars would hold pass-env values
            "settings": {"pexpect_timeout": PEXPECT_TIMEOUT},
        }
        try:
            ctx.starting()
        except BaseException:
            _remove_run_dir(run_dir)  # extravars.yml holds the payload
            raise
        return await _drive(kwargs, envvars, ctx, run_dir)


async def _drive(kwargs: dict[str, Any], envvars: dict[str, str], ctx: RunContext,
                 run_dir: Path) -> RunResult:
    loop = asyncio.get_running_loop()
    job = _Job(root=str(ctx.root))
    done: asyncio.Future[None] = loop.create_future()

    def on_event(event: dict[str, Any]) -> bool:  # runner thread
        if job.pid is None and isinstance(event.get("pid"), int):
            job.pid = event["pid"]
        job.forget_command()
        text = event.get("stdout")
        job.note(event, text or "")
        if text:
            data = (text.replace("\r\n", "\n") + "\n").encode()
            loop.call_soon_threadsafe(ctx.log.write, data)
        return True  # keep the event in artifacts: stats are read from there

    def on_status(data: dict[str, Any], runner_config: Any = None) -> None:  # runner thread
        job.status = str(data.get("status", ""))
        if job.status == "running":  # the playbook starts now; never unset, even once it ended
            job.spawning = True

    def work() -> None:  # runner thread
        try:
            runner = init_runner(**kwargs, event_handler=on_event, status_handler=on_status,
                                 cancel_callback=job.kill_now.is_set)
            runner.config.env = private_env(runner.config.env, envvars)
            runner.config.command = playbook_command(runner.config.command)
            if HOST_KEY_CHECKING not in envvars:
                runner.config.env.pop(HOST_KEY_CHECKING, None)
            job.command_file = Path(runner.config.artifact_dir) / "command"
            runner.run()
            job.rc, job.status, job.stats = runner.rc, runner.status, runner.stats
        except Exception as exc:  # ansible-runner's own errors: report, do not crash
            job.error = f"ansible-runner: {exc}"
            job.not_started = _short_of(exc) and (not job.spawning or spawn_failed(exc))
        finally:
            job.forget_command()
            # The run's dir goes once the play ended: extravars.yml holds the whole payload
            # and values of secret headers, runner's artifacts the whole output past the
            # log's cap, a stopped module's temp files its arguments. The run log and stats
            # (read above) are the record.
            _remove_run_dir(run_dir)
            loop.call_soon_threadsafe(_resolve, done)

    threading.Thread(target=work, name=f"ansible-{ctx.run_id}", daemon=True).start()
    stopped: Outcome | None = None
    reason = ""
    canceller: asyncio.Future[Any] = asyncio.ensure_future(ctx.cancel.wait())
    try:
        deadline = process.deadline_for(ctx)
        timeout = None if deadline is None else max(0.0, deadline - loop.time())
        waits: set[asyncio.Future[Any]] = {done, canceller}
        await asyncio.wait(waits, timeout=timeout, return_when="FIRST_COMPLETED")
        if not done.done():
            if canceller.done():
                stopped, reason = "canceled", "canceled"  # (not noted: see process.stopped())
            else:
                stopped = "timed_out"  # (not noted either)
                reason = f"timed out after {process.format_seconds(ctx.timeout or 0.0)}"
            await _stop(job, done, ctx)
            _remove_run_dir(run_dir)  # what a module killed last left
    finally:
        canceller.cancel()
        if not done.done():  # we were cancelled ourselves: leave nothing behind
            job.kill_now.set()
            if job.pid is not None:
                process.kill_all([job.pid, *process.descendants(job.pid)])

    if stopped is not None:
        return RunResult(stopped, exit_code=None, reason=reason)
    if job.error:
        ctx.log.note(job.error)
        return RunResult("failed", reason=job.error, not_started=job.not_started)
    outputs = {"stats": job.stats} if job.stats is not None else {}
    if job.status == "successful" and job.rc == 0:
        return RunResult("succeeded", exit_code=0, outputs=outputs)
    reason = process.exit_reason(job.rc) if job.rc is not None else job.status
    if job.failure:
        reason += f" ({job.failure})"
    return RunResult("failed", exit_code=job.rc, reason=reason, outputs=outputs)


# Where pexpect starts a process (ptyprocess forks, then reports a failed exec through a
# pipe): an error raised in these never had a playbook running.
_SPAWNING = {("ptyprocess.ptyprocess", "spawn"), ("pexpect.pty_spawn", "_spawn"),
             ("pexpect.pty_spawn", "_spawnpty")}


def _short_of(exc: BaseException) -> bool:
    """Out of descriptors, processes or memory. Python's pty.openpty() turns EMFILE into
    OSError("out of pty devices") with no errno, when its fallback finds none either."""
    return isinstance(exc, OSError) and (
        exc.errno in process.SHORT_OF or (exc.errno is None and "out of pty devices" in str(exc)))


def spawn_failed(exc: BaseException) -> bool:
    """`exc` was raised while pexpect was starting ansible-playbook (no descriptor for its
    pty, no process slot), not once it ran: so nothing of the playbook ran."""
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if (frame.f_globals.get("__name__"), frame.f_code.co_name) in _SPAWNING:
            return True
        tb = tb.tb_next
    return False


def _resolve(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


async def _stop(job: _Job, done: asyncio.Future[None], ctx: RunContext) -> None:
    """SIGTERM ansible-playbook (it stops its own workers), grace period (never past
    `ctx.stop_by`), then kill the rest."""
    if job.pid is None:
        # Not far enough to have reported a pid, and the runner only kills the playbook's own
        # group (at its next poll, seconds away): stop what carries the run's id now.
        from hookrunner import orphans  # not at import: orphans imports the actions package

        job.kill_now.set()
        runs = {ctx.node: [ctx.run_id]}
        found = await asyncio.to_thread(orphans.find_all, runs)
        grace = process.grace_left(ctx.stop_by, process.GRACE_PERIOD)
        if stuck := await orphans.stop(runs, found, grace=grace):
            ctx.log.note(f"{len(stuck)} process(es) of the run survived SIGKILL")
        await done
        return
    tree = process.descendants(job.pid)  # workers live in sessions of their own
    process.signal_process(job.pid, signal.SIGTERM)
    await process.wait_within(done, process.GRACE_PERIOD, ctx.stop_by)
    job.kill_now.set()  # runner SIGKILLs the playbook's group at its next poll
    process.kill_all([job.pid, *tree, *process.descendants(job.pid)] if not done.done() else [])
    await done
    process.kill_all(pid for pid in tree if process.is_alive(pid))


register(AnsibleRunner())

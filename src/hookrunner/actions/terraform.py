"""Kind `terraform`: the terraform (or tofu) CLI, driven through `actions.process`.

Not python-terraform: it blocks in `communicate()` with no timeout, cancel or streaming, and
leaves its temporary .tfvars.json of the vars behind (see findings.md). Here every step shares
the run's deadline and cancel event, and `-json` output becomes one readable log line per
message. The rule's vars go in a `.tfvars.json` in the attempt's private dir under --data,
removed when the run ends, as the last `-var-file`: as `TF_VAR_<name>` variables they lost to
`terraform.tfvars`, `*.auto.tfvars` and every `-var-file`, which Terraform ranks above them.

The workspace is chosen with `TF_WORKSPACE` rather than `workspace select`: selection stored in
`.terraform/environment` is shared by every run on the dir, and runs on two workspaces of one
dir may overlap (the implicit concurrency key is dir + workspace).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from hookrunner.actions import spec
from hookrunner.actions.base import RunContext, RunResult, register
from hookrunner.actions.paths import confine, pinned_dir, stays_in, written_dirs, written_of
from hookrunner.actions.process import (
    INTERRUPT_GRACE_MAX,
    SHORT_OF,
    deadline_for,
    run_process,
    stopped,
)
from hookrunner.actions.values import stringify
from hookrunner.errors import ActionError, ConfigError
from hookrunner.private import private_dir, private_file
from hookrunner.redact import PATHS_WRITTEN

KIND = "terraform"
KEYS = ("dir", "command", "workspace", "vars", "var_files", "binary")
COMMANDS = ("plan", "apply", "destroy")
BINARIES = ("terraform", "tofu")
DEFAULT_BINARY = "terraform"
DEFAULT_WORKSPACE = "default"
VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")  # (not `$`: a final newline)
WORKSPACE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,89}")  # fullmatch: no "\n" end
SENSITIVE = "(sensitive)"  # stands in for sensitive output values in the run record
MAX_OUTPUTS = 1024 * 1024  # bytes of `output -json` stored with a run
# A cancel or timeout interrupts Terraform alone (SIGINT, as Ctrl-C does) and gives it this
# long to stop: it lets the provider calls under way return and records their results in
# the state. A SIGTERM to the whole group killed the providers mid-call, and a resource
# created just then was missing from the state. Then the group is stopped as any action's.
STOP_GRACE = INTERRUPT_GRACE_MAX
INIT_STAMP = ".terraform/hookrunner-init"  # the init_stamp of the files the last init saw
# Set for every command: no prompts, no "run terraform apply" hints, no version check calls.
AUTOMATION_ENV = {"TF_IN_AUTOMATION": "1", "TF_INPUT": "0", "CHECKPOINT_DISABLE": "1"}
VARS_FILE = "vars.tfvars.json"  # in the attempt's work dir (the suffix: Terraform reads JSON)

Step = Callable[..., Awaitable[RunResult]]


PATHS = (("dir", ""), ("var_files", ""))  # (key, base under --root) of paths a rule names


def normalize_terraform(raw: Any) -> dict[str, Any]:
    spec_ = spec.check_mapping(raw, KIND)
    spec.check_keys(spec_, KIND, KEYS)
    out: dict[str, Any] = {"dir": spec.required_str(spec_, "dir", KIND)}
    command = spec.required_str(spec_, "command", KIND)
    if command not in COMMANDS:
        raise ConfigError(f"terraform.command must be one of {', '.join(COMMANDS)}", path=("command",))
    out["command"] = command
    workspace = spec.optional_str(spec_, "workspace", KIND)
    if workspace is not None:
        out["workspace"] = workspace
    variables = _vars(spec_)
    if variables is not None:
        out["vars"] = variables
    var_files = spec.str_list(spec_, "var_files", KIND)
    if var_files is not None:
        out["var_files"] = var_files
    binary = spec.optional_str(spec_, "binary", KIND)
    if binary is not None:
        if binary not in BINARIES:
            raise ConfigError("terraform.binary must be terraform or tofu", path=("binary",))
        out["binary"] = binary
    if marks := written_dirs(out, PATHS):
        out[PATHS_WRITTEN] = marks
    return out


KEY_PREFIX = "terraform:"  # of the implicit key: a key a payload renders may not start so


def concurrency_key(rendered: Mapping[str, Any]) -> str:
    directory = os.path.normpath(stringify(rendered.get("dir", "")))
    workspace = stringify(_or_default(rendered.get("workspace")))
    return f"{KEY_PREFIX}{directory}:{workspace}"


def _or_default(workspace: Any) -> Any:
    """The default workspace for no value (none, or ""), not for any falsy one: a payload's
    env id `0` (or `false`) applied to `default`, which may be production's state."""
    return DEFAULT_WORKSPACE if workspace is None or workspace == "" else workspace


def build_env(base: Mapping[str, str], workspace: str) -> dict[str, str]:
    # `base` holds only what the operator passed (`--pass-env`): a TF_VAR_ there is a variable
    # kept out of the rules and payloads (a password); the rule's own `vars` (a var file) win.
    env = dict(base)
    env.update(AUTOMATION_ENV)
    env["TF_WORKSPACE"] = workspace
    return env


def _vars(spec_: Mapping[str, Any]) -> dict[str, Any] | None:
    """The rule's `vars`: texts (templates) and numbers, as `env` takes them, and literal
    bools, lists and mappings kept as they are (`zones: [a, b]`, which JSON passes as a
    list; `check` refused them, though a template's list went through)."""
    raw = spec_.get("vars")
    if not isinstance(raw, Mapping):
        return spec.str_map(spec_, "vars", KIND, names=VAR_NAME)  # (says what is wrong)
    typed = {k for k, v in raw.items() if isinstance(v, bool | list | dict)}
    # Every name checked at once; the typed values' stand-in "" is never kept.
    texts = spec.str_map({"vars": {k: "" if k in typed else v for k, v in raw.items()}}, "vars",
                         KIND, names=VAR_NAME) or {}
    return {k: raw[k] if k in typed else v for k, v in texts.items()}


def vars_json(variables: Mapping[str, Any]) -> str:
    """The rule's vars as a `.tfvars.json`: numbers, lists and maps keep their types, and a
    string is never a template there (a payload's `${1+1}` stays that text). One value a line:
    the file is never shown, but a line is what a diagnostic quotes."""
    for name in variables:
        if not VAR_NAME.match(name):
            raise ActionError(f"terraform: invalid variable name {name!r}")
    return json.dumps(dict(variables), ensure_ascii=False, indent=1, default=str) + "\n"


def write_vars(work_dir: Path, variables: Mapping[str, Any]) -> Path:
    """The vars file, 0600 before anything is in it (it may hold secrets), in the attempt's
    private dir under --data: never under --root, where anyone reading the project reads it."""
    text = vars_json(variables)
    private_dir(work_dir)
    path = work_dir.absolute() / VARS_FILE  # Terraform runs in `dir`: an absolute path
    private_file(path)
    try:
        path.write_text(text)
    except BaseException:
        remove_vars(path)
        raise
    return path


def remove_vars(path: Path) -> None:
    """The vars file, and the attempt's and the run's dirs above it where it leaves them
    empty: nothing of the run's values stays under --data once it ended."""
    path.unlink(missing_ok=True)
    for parent in (path.parent, path.parent.parent):
        try:
            parent.rmdir()
        except OSError:  # not empty, or gone already
            return


def remove_left_vars(work_dir: Path) -> None:
    """Every attempt's vars file under `work_dir` (a server's start: a SIGKILL left them)."""
    for path in work_dir.glob(f"*/*/{VARS_FILE}"):
        remove_vars(path)


def command_argv(binary: str, command: str, var_files: list[Path]) -> list[str]:
    argv = [binary, command, "-input=false", "-no-color", "-json"]
    if command != "plan":
        argv.append("-auto-approve")
    argv += [f"-var-file={path}" for path in var_files]
    return argv


class TextErrors:
    """Passes plain (`-no-color`) output through to the log unchanged and remembers its
    `Error: <summary>` lines, so a failed init says why in its reason, not only in the log."""

    # What init says before the real errors when the configuration is invalid.
    PREAMBLE = "Terraform encountered problems"

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write
        self._partial = b""
        self._errors: list[str] = []

    def feed(self, data: bytes) -> None:
        self._write(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()[:4096]  # only the start of a line matters
        for line in lines:
            if line.startswith(b"Error: "):
                self._errors.append(line[7:].decode(errors="replace").strip())

    @property
    def errors(self) -> list[str]:
        return [e for e in self._errors if not e.startswith(self.PREAMBLE)] or self._errors


class JsonLines:
    """Turns `-json` output into readable log lines; remembers errors and the change summary."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write
        self._partial = b""
        self.errors: list[str] = []
        self.changes: dict[str, Any] | None = None

    def feed(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            self._line(line)

    def flush(self) -> None:
        if self._partial:
            self._line(self._partial)
            self._partial = b""

    def _line(self, raw: bytes) -> None:
        try:
            msg = json.loads(raw)
        except ValueError:
            msg = None
        if not isinstance(msg, dict) or "@message" not in msg:
            if raw.strip():
                self._write(raw + b"\n")  # not JSON (e.g. a crash): keep it as it is
            return
        text = str(msg["@message"])
        diag = msg.get("diagnostic")
        if isinstance(diag, dict):
            if diag.get("severity") == "error":
                self.errors.append(str(diag.get("summary", text)))
            detail = str(diag.get("detail") or "").strip()
            if detail:
                text += "\n" + "\n".join(("  " + ln).rstrip() for ln in detail.splitlines())
        if msg.get("type") == "change_summary" and isinstance(msg.get("changes"), dict):
            self.changes = msg["changes"]
        self._write(text.encode() + b"\n")


class Capped:
    """Output kept up to `cap` bytes, and counted past it."""

    def __init__(self, cap: int) -> None:
        self.cap, self.total, self.data = cap, 0, bytearray()

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        if len(self.data) <= self.cap:
            self.data += data[: self.cap + 1 - len(self.data)]


def readable_outputs(raw: bytes) -> dict[str, Any]:
    """`output -json` as {name: value}, with sensitive values replaced."""
    parsed = json.loads(raw or b"{}")
    return {name: SENSITIVE if item.get("sensitive") else item.get("value") for name, item in parsed.items()}


class TerraformRunner:
    kind = KIND
    stand_ins = {"dir": "tf", "command": "apply"}  # (see shell's)
    paths = PATHS
    # (key, base): a templated value stays in the dir the rule writes before its `{{`
    written_paths = paths
    implicit_key_fields = ("dir", "workspace")  # what implicit_concurrency_key is made of
    implicit_key_prefix = KEY_PREFIX

    def normalize(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        return normalize_terraform(raw)

    def needs_delivery(self, rendered: Mapping[str, Any]) -> bool:
        return False

    def implicit_concurrency_key(self, rendered: Mapping[str, Any]) -> str | None:
        return concurrency_key(rendered)

    def refusal(self, rendered: Mapping[str, Any], root: Path) -> str | None:
        try:
            _target(rendered, root)
        except ActionError as exc:
            return str(exc)
        return None

    async def run(self, rendered: Mapping[str, Any], ctx: RunContext) -> RunResult:
        command, workdir, workspace, var_files = _target(rendered, ctx.root)
        if not workdir.is_dir():  # not in _target: a dir not there yet is `check`'s warning
            raise ActionError(f"terraform: dir {stringify(rendered.get('dir'))!r} is not a directory")
        variables = rendered.get("vars") or {}
        if not variables:
            return await self._run(rendered, ctx, command, workdir, workspace, var_files)
        try:
            written = write_vars(ctx.work_dir, variables)
        except OSError as exc:  # a full disk, or no descriptor left (then it may run later)
            reason = f"cannot write the vars file in {ctx.work_dir}: {exc.strerror or exc}"
            ctx.log.note(reason)
            return RunResult("failed", reason=reason, not_started=exc.errno in SHORT_OF)
        try:
            # Last: a later var file beats the earlier ones, terraform.tfvars and TF_VAR_*.
            return await self._run(rendered, ctx, command, workdir, workspace,
                                   [*var_files, written])
        finally:
            remove_vars(written)

    async def _run(self, rendered: Mapping[str, Any], ctx: RunContext, command: str,
                   workdir: Path, workspace: str, var_files: list[Path]) -> RunResult:
        env = build_env(ctx.env, workspace)
        binary_name = stringify(rendered.get("binary") or DEFAULT_BINARY)
        binary = shutil.which(binary_name, path=env.get("PATH", ""))
        if binary is None:
            ctx.log.note(f"{binary_name} not found on PATH")
            return RunResult("failed", reason=f"{binary_name} not found on PATH")
        with pinned_dir(ctx.root, workdir) as cwd:
            result = await self._steps(ctx, command, workdir, cwd, workspace, var_files,
                                       binary, binary_name, env)
        # (a reason that names the pinned path: the dir as the run's spec named it)
        return replace(result, reason=result.reason.replace(cwd, str(workdir)))

    async def _steps(self, ctx: RunContext, command: str, workdir: Path, cwd: str,
                     workspace: str, var_files: list[Path], binary: str, binary_name: str,
                     env: dict[str, str]) -> RunResult:
        """The run's processes, each started in `cwd`: `workdir` as pinned_dir holds it, so
        a swap of the dir for a link out of --root after its check takes no effect."""
        deadline = deadline_for(ctx)

        # init and workspace commands run without TF_WORKSPACE: it may not exist yet.
        setup_env = {k: v for k, v in env.items() if k != "TF_WORKSPACE"}
        started = False  # a process of this run has started: from then on something ran

        async def step(argv: list[str], **kw: Any) -> RunResult:
            nonlocal started
            kw.setdefault("env", env)
            result = await run_process(argv, ctx=ctx, cwd=cwd, deadline=deadline, **kw)
            if started:  # an apply that ran must never be queued again as "nothing ran"
                result.not_started = False
            started = started or not result.not_started
            return result

        async def setup_step(argv: list[str], **kw: Any) -> RunResult:
            return await step(argv, env=setup_env, **kw)

        # Runs of one dir and workspace never overlap on a node, whatever their concurrency
        # keys and policies say (their state and its lock are one); runs of one dir take
        # turns at init.
        async with _RUNS.hold((workdir, workspace), ctx, deadline,
                              "waiting for another run of this dir and workspace") as stopped:
            if stopped is not None:
                return stopped
            async with _INITS.hold(workdir, ctx, deadline,
                                   "waiting for another run's init of this dir") as stopped:
                if stopped is not None:
                    return stopped
                # (what the server reads and writes there goes through the pinned dir too)
                pinned = Path(cwd)
                stamp = await asyncio.to_thread(init_stamp, pinned)
                if not _initialized(pinned, stamp):
                    ctx.log.note(f"{binary_name} init")
                    init_out = TextErrors(ctx.log.write)
                    result = await setup_step([binary, "init", "-input=false", "-no-color"],
                                              on_output=init_out.feed)
                    if result.outcome != "succeeded":
                        return _failed_step(result, "init", init_out.errors)
                    # Again: init writes .terraform.lock.hcl and learns the modules' dirs.
                    _mark_initialized(pinned, await asyncio.to_thread(init_stamp, pinned))
                if workspace != DEFAULT_WORKSPACE:
                    result = await _ensure_workspace(setup_step, binary, workspace, ctx, pinned)
                    if result.outcome != "succeeded":
                        return result
            return await self._command(step, binary, binary_name, command, workspace,
                                       var_files, ctx)

    async def _command(self, step: Step, binary: str, binary_name: str, command: str,
                       workspace: str, var_files: list[Path], ctx: RunContext) -> RunResult:
        ctx.log.note(f"{binary_name} {command} (workspace {workspace})")
        parser = JsonLines(ctx.log.write)
        # Only the command that changes things is interrupted gently: init, plan, output and
        # workspace steps change no resource, and a hung backend must not hold a cancel.
        gently = (signal.SIGINT, STOP_GRACE) if command != "plan" else None
        result = await step(command_argv(binary, command, var_files), on_output=parser.feed,
                            interrupt=gently)
        parser.flush()
        if parser.changes is not None:
            result.outputs["changes"] = parser.changes
        if result.outcome != "succeeded":
            return _failed_step(result, command, parser.errors)
        if command == "apply":
            captured = Capped(MAX_OUTPUTS)
            out = await step([binary, "output", "-no-color", "-json"], on_output=captured.feed)
            if out.outcome != "succeeded":
                # Its error, not the outputs document, whole or cut short by a cancel: that
                # holds the sensitive values in clear.
                if not bytes(captured.data).lstrip().startswith(b"{"):
                    ctx.log.write(bytes(captured.data))
                return _failed_step(out, "output")
            if captured.total > MAX_OUTPUTS:  # kept in every listing of runs: not megabytes
                note = (f"not stored: `output -json` is {captured.total} bytes, over "
                        f"{MAX_OUTPUTS} (read them with `terraform output`)")
                ctx.log.note(f"outputs {note}")
                result.outputs["outputs"] = note
            else:
                result.outputs["outputs"] = readable_outputs(bytes(captured.data))
        return result


def init_stamp(workdir: Path) -> str:
    """What `init` depends on, as a fingerprint: every `.tf`, `.tf.json` and the lock file
    (name, size, mtime) of the dir, and of the local modules init found elsewhere
    (`source = "../modules/x"`, from `.terraform/modules/modules.json`). A module or provider
    added to them changes it, and the next run runs `init` again (an existing `.terraform/`
    alone would say "done", and every run would fail with "Module not installed" until
    someone ran init by hand). Touches the disk: call it off the event loop."""
    tops = [workdir.resolve()]
    # (RuntimeError: a symlink loop on Python 3.11-3.12, see paths.real)
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError, RuntimeError):
        manifest = json.loads((workdir / ".terraform" / "modules" / "modules.json").read_text())
        for module in manifest.get("Modules") or []:
            found = (workdir / str(module.get("Dir") or "")).resolve()
            if ".terraform" not in found.parts and not any(found.is_relative_to(t) for t in tops):
                tops.append(found)
    seen = []
    for top in tops:
        for here, dirs, files in os.walk(top):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # .terraform, .git
            for name in sorted(files):
                if name.endswith((".tf", ".tf.json")) or name == ".terraform.lock.hcl":
                    with contextlib.suppress(OSError):
                        st = os.stat(os.path.join(here, name))
                        seen.append(f"{os.path.join(here, name)}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(seen).encode()).hexdigest()


def _initialized(workdir: Path, stamp: str) -> bool:
    try:
        return (workdir / INIT_STAMP).read_text() == stamp
    except OSError:
        return False


def _mark_initialized(workdir: Path, stamp: str) -> None:
    """Kept in `.terraform/` (made here when init made none: a configuration without
    providers or modules), so a dir is not initialized again on every run."""
    with contextlib.suppress(OSError):  # at worst, init runs again next time
        (workdir / ".terraform").mkdir(exist_ok=True)
        (workdir / INIT_STAMP).write_text(stamp)


class _Turns:
    """One holder at a time per key (a dir, or a dir and workspace). The wait obeys the run's
    cancel and deadline, as a step does (another run's init may hang on a backend); a key's
    lock is forgotten once no one holds or waits for it (payload workspaces are many)."""

    def __init__(self) -> None:
        self._locks: dict[Any, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: Any, ctx: RunContext, deadline: float | None,
                   waiting: str) -> AsyncIterator[RunResult | None]:
        """Yields None once held; else the run's end (canceled, timed out) while waiting."""
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            if lock.locked() or users:  # (held, or about to be: its holder's acquire is queued)
                ctx.log.note(waiting)
            stopped = await _acquire(lock, ctx, deadline)
            if stopped is not None:
                yield stopped
                return
            try:
                yield None
            finally:
                lock.release()
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


_RUNS = _Turns()  # per (dir, workspace): a whole run
_INITS = _Turns()  # per dir: init and workspace creation


async def _acquire(lock: asyncio.Lock, ctx: RunContext, deadline: float | None) -> RunResult | None:
    """Take `lock` as a step runs: the run's cancel or deadline ends the wait (another run's
    init may hang on a backend). None once held; else the run's end, canceled or timed out."""
    loop = asyncio.get_running_loop()
    acquire = asyncio.ensure_future(lock.acquire())
    canceller = asyncio.ensure_future(ctx.cancel.wait())
    timeout = None if deadline is None else max(0.0, deadline - loop.time())
    try:
        await asyncio.wait({acquire, canceller}, timeout=timeout,
                           return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this run's task cancelled meanwhile: never leave the lock held
        canceller.cancel()
        if acquire.done() and not acquire.cancelled() and acquire.exception() is None:
            lock.release()
        else:
            acquire.cancel()  # a cancelled acquire never holds the lock
        raise
    canceller.cancel()
    if not acquire.done():
        acquire.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await acquire
    if acquire.cancelled() or acquire.exception() is not None:
        return stopped(ctx)
    return None


async def _ensure_workspace(step: Step, binary: str, workspace: str, ctx: RunContext,
                            workdir: Path) -> RunResult:
    listed = bytearray()
    result: RunResult = await step([binary, "workspace", "list", "-no-color"], on_output=listed.extend)
    if result.outcome != "succeeded":
        ctx.log.write(bytes(listed))
        return _failed_step(result, "workspace list")
    names = {line.lstrip("* ").strip() for line in listed.decode(errors="replace").splitlines()}
    if workspace in names:
        return result
    ctx.log.note(f"creating workspace {workspace}")
    # `workspace new` also selects it (.terraform/environment): put the dir's selection back,
    # so a person's `terraform apply` there later does not land in a payload's workspace.
    selected = workdir / ".terraform" / "environment"
    before = selected.read_bytes() if selected.exists() else None
    try:
        result = await step([binary, "workspace", "new", "-no-color", workspace])
    finally:
        if before is None:
            selected.unlink(missing_ok=True)
        else:
            selected.write_bytes(before)
    return result if result.outcome == "succeeded" else _failed_step(result, "workspace new")


def _failed_step(result: RunResult, step: str, errors: list[str] | None = None) -> RunResult:
    if result.outcome == "failed":
        detail = f" ({errors[0]})" if errors else ""
        result.reason = f"{step}: {result.reason}{detail}"
    return result


register(TerraformRunner())


def _target(rendered: Mapping[str, Any], root: Path) -> tuple[str, Path, str, list[Path]]:
    """The command, its dir and var files under `root`, and the workspace; ActionError for
    what may not be named (a path outside root, an unknown command, a bad workspace name)."""
    command = stringify(rendered.get("command"))
    if command not in COMMANDS:
        raise ActionError(f"terraform: unknown command {command!r}")
    given = stringify(rendered.get("dir"))
    workdir = stays_in(root, confine(root, given), written_of(rendered, "dir"), given)
    workspace = workspace_name(rendered.get("workspace"))
    var_files = [stays_in(root, confine(root, stringify(f)), written_of(rendered, "var_files", i),
                          stringify(f))
                 for i, f in enumerate(rendered.get("var_files") or [])]
    return command, workdir, workspace, var_files


def workspace_name(value: Any) -> str:
    """The workspace a rendered value names (empty: the default); ActionError for a name
    Terraform cannot have (a leading `-` would be read as an option)."""
    workspace = stringify(_or_default(value))
    if not WORKSPACE_NAME.fullmatch(workspace):
        raise ActionError(f"terraform: invalid workspace name {workspace!r} (letters, digits, "
                          "_, . and -, not starting with . or -, at most 90 characters)")
    return workspace

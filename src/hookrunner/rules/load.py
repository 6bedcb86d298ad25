"""Rules files → a validated `Ruleset`, every template compiled once.

`load_rules(dir)` reads every `*.yaml` / `*.yml` under `dir` (recursively, sorted) and merges
them. Every problem of every file is collected and raised together as `ConfigErrors`, each
`file:line: message`; warnings (a literal secret, verifier `none`) go in `Ruleset.warnings`.

Hook keys: `verify` (required: exactly one verifier), `allow_ips`, `max_body`, `dedup`,
`rate_limit`, `description`. `rate_limit` is a token bucket:

    rate_limit: {rate: 10/s, burst: 20, per_client: true}   # or rate_limit: 10/s

`rate` is `N/s`, `N/m`, `N/h` or a number of requests per second; `burst` (default: N as
written, rounded up: 10 for `10/m`, at least 1) is how many may arrive at once; `per_client` (default true)
keeps one bucket per client address rather than one for the hook.

Rule keys: `name`, `hook`, `when`, `run`, `timeout`, `retry`, `concurrency`, `description`.
`concurrency.key` defaults to the rule's name (one run of the rule at a time).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import math
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hookrunner import clientip
from hookrunner.errors import ConfigError, ConfigErrors
from hookrunner.rules import fields as f
from hookrunner.rules.actioncheck import literal_secrets
from hookrunner.rules.actioncheck import paths as action_paths
from hookrunner.rules.model import (
    DEFAULT_MAX_BODY,
    Concurrency,
    Hook,
    IPNetwork,
    RateLimit,
    Retry,
    Rule,
    Ruleset,
    Source,
)
from hookrunner.rules.yamlsrc import LineDict, LineList, NonFinite, line_of, parse_yaml
from hookrunner.templating import Constant, reads_secret, reusing_compiled

if TYPE_CHECKING:
    from hookrunner.verify.secrets import SecretUnavailable

__all__ = ["load_rules", "load_rules_text"]

MAX_RULES_FILE = 16 * 1024 * 1024  # bytes: thousands of rules fit in far less
FILE_KEYS = ("hooks", "rules")
HOOK_KEYS = ("verify", "allow_ips", "max_body", "dedup", "rate_limit", "description")
NEW_PER_DELIVERY = frozenset({"delivery_id", "received_at"})  # scope names a dedup must not read
RULE_KEYS = ("name", "hook", "when", "run", "timeout", "retry", "concurrency", "description")
RETRY_KEYS = ("attempts", "backoff", "max_backoff", "on")
RETRY_ON = ("failed", "timed_out")
CONCURRENCY_KEYS = ("key", "policy")
POLICIES = ("queue", "skip", "replace", "coalesce")
SECRET_OPTIONS = ("secret", "password")
# Values of a verifier's required options, for listing its errors past a wrong one (any
# string is a secret; see _errors_past).
_VERIFY_STAND_INS = {"secret": "stand-in", "password": "stand-in", "username": "stand-in",
                     "header": "X-Signature"}
HOOK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a URL path segment (fullmatch: `$`
# would let a final newline through)
# C0, DEL, C1, line separators, and lone surrogates (`"\ud800"` in YAML), which no store can
# hold: every delivery the rule matched was a 500.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
MAX_RULE_NAME = 200
# Bounds of rules' numbers, far past any use: an hour's backoff between 10,000 attempts is
# over a year; a billion requests a second is no limit on one machine.
MAX_ATTEMPTS = 10_000
MAX_BURST = 1_000_000_000
MAX_BLOCK_ERRORS = 20  # said of one action or verifier: past that, fixing some first is the way on
MAX_RATE = 1e9  # requests per second
MIN_RATE = 1 / 86400  # one a day
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_PER = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
        "h": 3600.0, "hour": 3600.0}


@dataclass
class _Merged:
    hooks: dict[str, Hook] = field(default_factory=dict)
    hook_sources: dict[str, Source] = field(default_factory=dict)  # includes invalid hooks
    rules: list[Rule] = field(default_factory=list)
    rule_sources: dict[str, Source] = field(default_factory=dict)
    # (ctx, node of `hook`, path, hook id) for each reference, checked once all files are read
    refs: list[tuple[f.Ctx, Any, tuple[Any, ...], str]] = field(default_factory=list)


def load_rules(
    rules_dir: Path, *, root: Path | None = None, secrets_required: bool = True,
    on_secret_file: Callable[[Path], None] | None = None, strict: bool = False,
    defer_secrets: Callable[[str], bool] | None = None,
) -> Ruleset:
    """Load and merge every rules file under `rules_dir`; raise ConfigErrors listing all errors.

    `root` anchors relative `{file: ...}` secret paths (the server's `--root`).
    `secrets_required=False` is for commands that verify no signature (`test`, `explain`,
    `replay`): an unset secret variable or missing secret file is then not an error.
    `on_secret_file` is told each `{file: ...}` secret path just before it is read (the
    server watches them), whether or not the load then succeeds.
    `strict` (`hookrunner check`): what can only fail at run time, or is only a moment's state
    of a deploy, is an error too: a literal path outside --root, a dangling link (a ConfigMap
    key being removed). Elsewhere those are warnings: one such rule must not stop a server's
    other rules from loading.
    `defer_secrets` (the server): a hook it names whose secret cannot be read (a variable not
    set, a file missing or empty) is not an error but loaded unavailable (`Hook.unavailable`):
    it answers 503, and the other hooks serve.
    """
    if not rules_dir.is_dir():
        where = rules_dir.absolute()
        why = (f"the rules directory {where} is not a directory" if rules_dir.exists() else
               f"the rules directory {where} does not exist (give it with --rules DIR)")
        raise ConfigErrors([ConfigError(why)])
    notes: list[str] = []  # what was skipped that may have been meant to load
    try:
        paths = rules_files(rules_dir, notes)
    except OSError as exc:  # no descriptor left, no permission: not "no rules", a failure
        why = f"cannot list the rules directory {exc.filename or rules_dir}: {exc.strerror or exc}"
        raise ConfigErrors([ConfigError(why)]) from None
    sources: list[tuple[str, str]] = []
    errors: list[ConfigError] = []
    warnings: list[str] = list(notes)
    if root is not None and not root.is_dir():
        # Once, not of each path the rules name under it (and not as `rules:0:`).
        errors.append(ConfigError(f"--root {root.absolute()} is not a directory: relative paths "
                                  "in rules resolve against it"))
        root = None
    for path in paths:
        try:
            st = path.stat()
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_RULES_FILE:
                # `x.yaml -> /dev/zero` (or a FIFO) would be read for ever, into memory.
                why = ("not a regular file" if not stat.S_ISREG(st.st_mode) else
                       f"larger than {MAX_RULES_FILE // (1024 * 1024)} MiB")
                errors.append(ConfigError(f"cannot load: {why}", str(path), 1))  # the whole file
                continue
            data = path.read_bytes()
        except OSError as exc:  # a dangling link: a broken deploy, not a file to skip
            problem = ConfigError(f"cannot read: {exc.strerror or exc}", str(path), 1)
            # Skipped only where there is no file: a link that leads nowhere, or a path gone
            # since it was listed (a ConfigMap's update removing a key). A link to a file that
            # cannot be read (no permission, a loop) fails as that file would: skipped, its
            # hooks answered 404 while /readyz said ok.
            nowhere = isinstance(exc, FileNotFoundError | NotADirectoryError) and (
                path.is_symlink() or not os.path.lexists(path))
            if strict or not nowhere:
                errors.append(problem)
            else:
                warnings.append(f"{problem} (skipped)")
            continue
        try:
            sources.append((str(path), data.decode("utf-8")))
        except UnicodeDecodeError as exc:
            line = data[:exc.start].count(b"\n") + 1
            errors.append(ConfigError(f"not UTF-8 text (byte 0x{data[exc.start]:02x})",
                                      str(path), line))
    ruleset = _load(sources, errors, root, empty_hint=str(rules_dir),
                    secrets_required=secrets_required, on_secret_file=on_secret_file,
                    strict=strict, warnings=warnings, defer_secrets=defer_secrets)
    return dataclasses.replace(ruleset, digest=_digest(rules_dir, sources), sources=tuple(sources))


def reread_secrets(ruleset: Ruleset, *, root: Path | None = None,
                   on_secret_file: Callable[[Path], None] | None = None,
                   defer_secrets: Callable[[str], bool] | None = None) -> Ruleset:
    """`ruleset` loaded again from the texts it was loaded from, its secret files read anew:
    a rotated secret must not wait for another team's broken rules file to be fixed (the
    senders that switched keys were refused meanwhile). ConfigErrors if that fails too."""
    loaded = _load(list(ruleset.sources), [], root, empty_hint="the rules",
                   on_secret_file=on_secret_file, defer_secrets=defer_secrets)
    return dataclasses.replace(loaded, digest=ruleset.digest, sources=ruleset.sources)


def _digest(rules_dir: Path, sources: list[tuple[str, str]]) -> str:
    """A short digest of the rules files (their paths under `rules_dir` and their text)."""
    digest = hashlib.sha256()
    for name, text in sorted((os.path.relpath(n, rules_dir), t) for n, t in sources):
        for part in (name, text):
            data = part.encode("utf-8", "surrogatepass")
            digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()[:16]


def _same(path: Any, other: Path) -> bool:
    try:
        return os.path.samefile(path, other)
    except (OSError, TypeError, ValueError):
        return False


def rules_files(rules_dir: Path, notes: list[str] | None = None) -> list[Path]:
    """The rules files under `rules_dir`, in load order: every `*.yaml` / `*.yml` file (a link
    to one, or to a directory of them, counts), skipping hidden files and directories. Those
    are editors' and tools' copies (`.#x.yaml`, `.git/`), and a mounted Kubernetes ConfigMap
    keeps every file twice: once as `x.yaml`, once in its hidden `..<timestamp>/` directory.
    What is skipped that may have been meant to load goes to `notes`, as warnings."""
    if not rules_dir.is_dir():
        return []
    found: list[Path] = []
    # os.walk: hidden directories are pruned before they are entered (a ConfigMap deletes its
    # old `..<timestamp>/` while it updates: rglob failed walking into it), and a directory
    # that vanishes mid-walk is skipped, not an error. A link to a directory is followed (a
    # team's rules linked in), each real directory once (a link back up is no loop).
    seen: set[str] = set()
    problems: list[OSError] = []

    def failed(exc: OSError) -> None:
        # A directory that cannot be listed is a failure (its rules would be dropped in
        # silence and its hooks answer 404), but one that vanished mid-walk (a deploy
        # renaming it) and a volume's root-owned `lost+found`, which holds no rules.
        vanished = exc.errno in (errno.ENOENT, errno.ENOTDIR) and not _same(exc.filename, rules_dir)
        # One that may be entered but not listed (mode --x) is kept closed on purpose: a
        # directory of `{file:}` secrets, say, read by their names.
        is_closed = exc.errno == errno.EACCES and not _same(exc.filename, rules_dir) and \
            os.access(str(exc.filename), os.X_OK)
        if is_closed and notes is not None:
            notes.append(f"{exc.filename}: may be entered but not listed (mode --x): any rules "
                         "files in it are not loaded (a directory of {file:} secrets is fine)")
        if not (vanished or is_closed) and os.path.basename(str(exc.filename)) != "lost+found":
            problems.append(exc)

    for top, dirs, files in os.walk(rules_dir, followlinks=True, onerror=failed):
        real = os.path.realpath(top)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            path = Path(top, name)
            # Any entry but a directory: a dangling link, a FIFO or a device is reported
            # when it is loaded, not skipped in silence; so is a link with no suffix that
            # leads nowhere, as one to a team's directory of rules that went away.
            if name.startswith("."):
                continue
            if (path.suffix in (".yaml", ".yml") and (path.is_symlink() or not path.is_dir())) \
                    or (not path.suffix and path.is_symlink() and not path.exists()):
                found.append(path)
            elif path.suffix.lower() in (".yaml", ".yml") and notes is not None \
                    and not path.is_dir():  # `team.YAML`: skipped, as the glob says, but said
                notes.append(f"{path}: not loaded: rules files end in .yaml or .yml, in lower "
                             "case")
    if problems:  # out of descriptors (EMFILE), no permission: an empty list would be taken
        raise problems[0]  # for "no rules" and replace the live ones
    return sorted(found)


def load_rules_text(files: Mapping[str, str], *, root: Path | None = None) -> Ruleset:
    """Load rules from `{file name: YAML text}` (in that order); for tests and tools."""
    return _load(list(files.items()), [], root, empty_hint="the given files")


class _Secrets:
    """What verifiers read their `secret` options through: resolved against `--root`, each
    `{file:}` told to the watcher, and a rotation list's unreadable members kept aside (in
    `skipped`, for a warning) while another member can be read."""

    def __init__(self, root: Path | None, required: bool,
                 on_secret_file: Callable[[Path], None] | None) -> None:
        self.root, self.required, self.on_secret_file = root, required, on_secret_file
        self.skipped: list[SecretUnavailable] = []

    def __call__(self, value: Any, key: str = "secret") -> list[bytes]:
        from hookrunner.verify import resolve_secret, secret_files

        if self.on_secret_file is not None:
            for path in secret_files(value, self.root):
                self.on_secret_file(path)
        return resolve_secret(value, key, root=self.root, required=self.required,
                              skipped=self.skipped)


def _load(sources: list[tuple[str, str]], errors: list[ConfigError], root: Path | None,
          empty_hint: str, secrets_required: bool = True,
          on_secret_file: Callable[[Path], None] | None = None, strict: bool = False,
          warnings: list[str] | None = None,
          defer_secrets: Callable[[str], bool] | None = None) -> Ruleset:
    import hookrunner.actions  # noqa: F401  (fills RUNNERS)

    secrets = _Secrets(root, secrets_required, on_secret_file)

    merged = _Merged()
    ctxs: list[f.Ctx] = []
    # Files that did not parse (or could not be read): their hooks and rules are unknown,
    # not absent.
    unread = list(dict.fromkeys(e.file for e in errors if e.file))
    empty: list[str] = []
    with reusing_compiled():  # a reload recompiles only the texts that changed
        for name, text in sources:
            ctx = f.Ctx(name, root=root, strict=strict, defer_secrets=defer_secrets)
            ctxs.append(ctx)
            data, problems = parse_yaml(text, name)
            ctx.errors.extend(problems)
            ctx.refused_lines.update(p.line for p in problems
                                     if isinstance(p, NonFinite) and p.alone)
            if data is not None:
                _file(ctx, data, merged, secrets)
            elif problems:
                unread.append(name)
            else:  # an empty file (or comments only): likely a file saved before it was written
                ctx.warnings.append(f"{name}:1: holds no hooks and no rules")
                empty.append(name)
    for ctx, node, path, hook_id in merged.refs:
        if hook_id not in merged.hook_sources:
            known = ", ".join(sorted(merged.hook_sources)) or "none are defined"
            why = f"defined hooks: {known}"
            if unread:  # not "none are defined" of a hooks file with a YAML error
                why = (f"it may be defined in {', '.join(sorted(unread))}, which did not load (its "
                       "own error says why)")
            ctx.error(node, path, f"unknown hook {hook_id!r}"
                      f"{f.did_you_mean(hook_id, merged.hook_sources)}; {why}")
    warnings = [*(warnings or []), *(w for c in ctxs for w in c.warnings)]
    used = {hook_id for *_, hook_id in merged.refs}  # a rule with an error names its hook too
    warnings += [f"{src}: hook {hid!r} has no rules: its deliveries are stored but run nothing"
                 for hid, src in merged.hook_sources.items() if hid not in used and not unread]
    warnings += _secrets_in_argv(merged.rules, merged.hooks)
    if not sources and not errors:
        warnings.append(f"{empty_hint}: no *.yaml or *.yml rules files")
    order = {ctx.file: i for i, ctx in enumerate(ctxs)}
    errors += sorted((e for c in ctxs for e in c.errors),
                     key=lambda e: (order.get(e.file, -1), e.line))
    if errors:
        raise ConfigErrors(errors, warnings)
    return Ruleset(hooks=merged.hooks, rules=tuple(merged.rules),
                   files=tuple(name for name, _ in sources), warnings=tuple(warnings),
                   empty=tuple(empty))


def _secrets_in_argv(rules: list[Rule], hooks: Mapping[str, Hook]) -> list[str]:
    """A process's arguments are on every user's process listing (`/proc/<pid>/cmdline` is
    world-readable): a secret header or query value rendered into argv is shown to them,
    though the store and the API hide it."""
    found: list[str] = []
    for rule in rules:
        if rule.action_kind != "shell":
            continue
        secret = frozenset().union(*(hooks[h].secret_header_names for h in rule.hooks if h in hooks))
        for read in rule.request_reads:
            if read.path is not None and read.path[:1] == ("argv",) and \
                    reads_secret(read.keys, secret):
                found.append(f"{rule.source}: rule {rule.name!r}: run.shell.argv "
                             f"({read.source!r}) may hold a secret header or query value, and "
                             "every user of this machine can read a process's arguments (ps): "
                             "pass it in `env:` instead")
                break
    return found


def _file(ctx: f.Ctx, data: Any, merged: _Merged, secrets: _Secrets) -> None:
    if not isinstance(data, LineDict):
        ctx.errors.append(ConfigError(
            f"a rules file must be a mapping with {' and/or '.join(FILE_KEYS)}, got "
            f"{f.type_name(data)}", ctx.file, getattr(data, "line", 1) or 1))
        return
    f.known_keys(ctx, data, FILE_KEYS, "a rules file")
    if "hooks" in data and data["hooks"] is not None:
        hooks = f.mapping(ctx, data, "hooks", "hooks")
        if hooks is not None:
            for hook_id in hooks:
                _hook_entry(ctx, hooks, hook_id, merged, secrets)
    if "rules" in data and data["rules"] is not None:
        rules = data["rules"]
        if not isinstance(rules, LineList):
            ctx.error(data, ("rules",), f"rules must be a list, got {f.type_name(rules)}")
            return
        for i in range(len(rules)):
            rule = _rule(ctx, rules, i, merged)
            if rule is not None:
                merged.rules.append(rule)


# ---- hooks ----

def _hook_entry(ctx: f.Ctx, hooks: LineDict, hook_id: Any, merged: _Merged, secrets: _Secrets) -> None:
    src = ctx.source(hooks, hook_id)
    if isinstance(hook_id, int | float | bool) or hook_id is None:
        ctx.error(hooks, (hook_id,), f"hook id {hook_id!r} is not text to YAML: "
                  f"{f.quote_as_written(hook_id)}")
        return
    if not isinstance(hook_id, str) or not HOOK_ID.fullmatch(hook_id):
        ctx.error(hooks, (hook_id,), f"bad hook id {hook_id!r}: use letters, digits, '_', '.', "
                  "'-', starting with a letter or digit (it is the URL path /hooks/<id>)")
        return
    if hook_id in merged.hook_sources:
        ctx.error(hooks, (hook_id,),
                  f"duplicate hook id {hook_id!r} (also defined at {merged.hook_sources[hook_id]})")
        return
    merged.hook_sources[hook_id] = src
    hook = _hook(ctx, hooks, hook_id, src, secrets)
    if hook is not None:
        merged.hooks[hook_id] = hook


def _hook(ctx: f.Ctx, hooks: LineDict, hook_id: str, src: Source, secrets: _Secrets) -> Hook | None:
    raw = f.mapping(ctx, hooks, hook_id, f"hook {hook_id!r}")
    if raw is None:
        return None
    n = len(ctx.errors)
    what = f"hook {hook_id!r}"
    f.known_keys(ctx, raw, HOOK_KEYS, what)
    verifier = _verifier(ctx, raw, hook_id, secrets) if "verify" in raw else None
    if "verify" not in raw:
        ctx.error(hooks, (hook_id,), f"{what}: 'verify' is required (`verify: {{none: {{}}}}` "
                  "accepts unsigned requests)")
    kw: dict[str, Any] = {}
    if "allow_ips" in raw:
        kw["allow_ips"] = _networks(ctx, raw, what)
    if "max_body" in raw:
        kw["max_body"] = f.size(ctx, raw, "max_body", f"{what} max_body") or DEFAULT_MAX_BODY
    if "dedup" in raw:
        kw["dedup"] = dedup = f.template(ctx, raw, "dedup", f"{what} dedup")
        fresh = sorted(NEW_PER_DELIVERY & getattr(dedup, "names", frozenset()))
        if isinstance(dedup, Constant):  # every delivery one key: taken for no key at all
            ctx.warnings.append(
                f"{ctx.file}:{raw.line_of('dedup')}: {what} dedup: has no {{{{ }}}}: it would "
                "give every delivery one key, so the sender's own id is used instead (write "
                "the field that names a delivery, e.g. \"{{ payload.id }}\")")
        elif fresh:  # hookrunner's own, new each time: a retry never matches
            ctx.warnings.append(
                f"{ctx.file}:{raw.line_of('dedup')}: {what} dedup: reads {fresh[0]}, "
                "which is new for each delivery (hookrunner's own): a retry may never be a "
                "duplicate; use the sender's id (the default) or a field of the payload")
        elif "client_ip" in getattr(dedup, "names", frozenset()):
            ctx.warnings.append(
                f"{ctx.file}:{raw.line_of('dedup')}: {what} dedup: reads client_ip, which a "
                "sender's retry need not share (senders post from pools of addresses): a "
                "retry may not be a duplicate; use the sender's id or a field of the payload")
    if "rate_limit" in raw:
        kw["rate_limit"] = _rate_limit(ctx, raw, what)
    if "description" in raw:
        kw["description"] = f.string(ctx, raw, "description", f"{what} description") or ""
    if verifier is None or len(ctx.errors) > n:
        return None
    kind, obj = verifier
    return Hook(id=hook_id, verify_kind=kind, verifier=obj, source=src,
                secret_headers=tuple(getattr(obj, "secret_headers", ())),
                secret_query=tuple(getattr(obj, "secret_query", ())),
                unavailable=ctx.unavailable.get(hook_id), **kw)


def _verifier(ctx: f.Ctx, raw: LineDict, hook_id: str, secrets: _Secrets) -> tuple[str, Any] | None:
    from hookrunner.verify import VERIFIERS, is_literal
    from hookrunner.verify.base import Unavailable
    from hookrunner.verify.secrets import SecretUnavailable

    spec: LineDict | None
    if isinstance(raw.get("verify"), str):
        # `verify: none` reads as naturally as `verify: {none: {}}` and means the same (a
        # verifier with options then says which one it lacks).
        spec = LineDict({raw["verify"]: None})
        spec.line = raw.line_of("verify")
    else:
        spec = f.mapping(ctx, raw, "verify", f"hook {hook_id!r}: verify")
    if spec is None:
        return None
    if len(spec) != 1:
        # Not "got: none": that reads as the verifier named `none`.
        got = f"got {len(spec)}: {', '.join(map(str, spec))}" if spec else "it names none"
        ctx.error(raw, ("verify",), f"hook {hook_id!r}: verify must name exactly one verifier "
                  f"(github, hmac, token, none, ...); {got}")
        return None
    name = next(iter(spec))
    if name not in VERIFIERS:
        ctx.error(spec, (name,), f"hook {hook_id!r}: unknown verifier {name!r}"
                  f"{f.did_you_mean(name, VERIFIERS)}; expected one of: "
                  f"{', '.join(sorted(VERIFIERS))}")
        return None
    options = spec[name]
    if options is None:  # `{github: }` or `github` alone: errors point at where it is named
        options = LineDict()
        options.line = spec.line_of(name)
    if not isinstance(options, Mapping):
        ctx.error(spec, (name,), f"hook {hook_id!r}: verify.{name} options must be a mapping")
        return None
    for key in SECRET_OPTIONS:
        if key in options and is_literal(options[key]):
            ctx.warn(options, (key,), f"hook {hook_id!r}: a literal {key} is written in the "
                     "rules file; prefer {env: NAME} or {file: PATH}")
    if name == "none" and "allow_ips" not in raw:  # with it, the addresses are the check
        ctx.warn(spec, (name,), f"hook {hook_id!r} uses verifier 'none': anyone who can reach "
                 "it can trigger its rules")
    skipped: list[SecretUnavailable] = secrets.skipped
    skipped.clear()
    try:
        verifier = VERIFIERS[name](options, secrets)
        for warning in getattr(verifier, "config_warnings", ()):
            ctx.warn(options, ("tolerance",), f"hook {hook_id!r}: verify.{name}: {warning}")
        for missing in skipped:  # "any of them": the others verify (the end of a rotation)
            ctx.warn(options, missing.path, f"hook {hook_id!r}: verify.{name}: {missing.message}"
                     " (the list's other secrets are used)")
        return name, verifier
    except ConfigError as exc:
        problems = _errors_past(lambda rest: VERIFIERS[name](rest, secrets), options, exc,
                                _VERIFY_STAND_INS)[0]
        if ctx.defer_secrets is not None and ctx.defer_secrets(hook_id) and all(
                isinstance(p, SecretUnavailable) for p in problems):
            first = problems[0]
            ctx.unavailable[hook_id] = (f"{ctx.file}:{ctx.line(options, *first.path)}: hook "
                                        f"{hook_id!r}: verify.{name}: {first.message}")
            return name, Unavailable()
        for problem in problems:
            message = f"hook {hook_id!r}: verify.{name}: {problem.message}"
            if isinstance(problem, SecretUnavailable):
                # (its kind kept: reload.LiveRules tells a load that failed only for secrets)
                ctx.errors.append(SecretUnavailable(message, ctx.file,
                                                    ctx.line(options, *problem.path)))
            elif problem.path:
                ctx.error(options, problem.path, message)
            else:  # a missing option: at the verifier's name, not at its first option
                ctx.error(spec, (name,), message)
    except (TypeError, ValueError) as exc:  # a factory that did not expect this input
        ctx.error(spec, (name,), f"hook {hook_id!r}: verify.{name}: {exc}")
    return None


def _networks(ctx: f.Ctx, raw: LineDict, what: str) -> tuple[IPNetwork, ...]:
    values = f.strings(ctx, raw, "allow_ips", f"{what} allow_ips") or []
    node = raw["allow_ips"]
    out: list[IPNetwork] = []
    for i, value in enumerate(values):
        at, path = (node, (i,)) if isinstance(node, LineList) else (raw, ("allow_ips",))
        try:
            network = clientip.network(value.strip())
        except ValueError:
            ctx.error(at, path, f"{what} allow_ips: {value!r} is not an IP address or CIDR "
                      "network")
            continue
        out.append(network)
        if clientip.bits_past_prefix(value.strip()):
            # As nginx says of `allow 10.0.0.5/8`: a typo for /32 would allow a whole network.
            ctx.warn(at, path, f"{what} allow_ips: {value.strip()!r} has bits set past its "
                     f"prefix: it allows all of {network}")
    return tuple(out)


def _rate_limit(ctx: f.Ctx, raw: LineDict, what: str) -> RateLimit | None:
    what = f"{what} rate_limit"
    node: Any = raw
    key: Any = "rate_limit"  # `rate_limit: 10/s` is short for `rate_limit: {rate: 10/s}`
    spec = raw["rate_limit"]
    if isinstance(spec, LineDict):
        f.known_keys(ctx, spec, ("rate", "burst", "per_client"), what)
        if "rate" not in spec:
            ctx.error(raw, ("rate_limit",), f"{what}: 'rate' is required")
            return None
        node, key = spec, "rate"
    given = _rate(node[key])
    if given is None:
        ctx.error(node, (key,), f"{what}: expected a rate like 10/s, 600/m, 1000/h or a number "
                  f"of requests per second (from one a day to {MAX_RATE:,.0f}/s), got "
                  f"{f.shown(node[key])}")
        if isinstance(spec, LineDict):  # the other options' errors, in the same pass
            if "burst" in spec:
                f.integer(ctx, spec, "burst", f"{what} burst", 1, MAX_BURST)
            if "per_client" in spec:
                f.boolean(ctx, spec, "per_client", f"{what} per_client")
        return None
    rate, count = given
    # The bucket holds the count as written: `10/m` lets 10 through at once (a push sends
    # several events together), then one every 6 s; a bucket of 1 refused the second.
    burst, per_client = max(1, math.ceil(count)), True
    if isinstance(spec, LineDict) and "burst" in spec:
        burst = f.integer(ctx, spec, "burst", f"{what} burst", 1, MAX_BURST) or burst
    elif count > MAX_BURST:
        ctx.error(node, (key,), f"{what}: the rate's count ({count:,.0f}) is its burst, which is "
                  f"at most {MAX_BURST:,}: give a `burst`, or write the rate per second")
        return None
    if isinstance(spec, LineDict) and "per_client" in spec:
        per_client = bool(f.boolean(ctx, spec, "per_client", f"{what} per_client"))
    return RateLimit(rate=rate, burst=burst, per_client=per_client)


def _rate(value: Any) -> tuple[float, float] | None:
    """(requests per second, the count as written: 10 of `10/m`), from MIN_RATE to MAX_RATE
    (a rate of 1e-320 made a wait of infinite seconds: a 500 where it was to be a 429)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        # (A bound checked before float(): an int past 1e308 does not convert, nan fails it.)
        return (float(value), float(value)) if MIN_RATE <= value <= MAX_RATE else None
    m = _RATE.match(value) if isinstance(value, str) else None
    if m is None:
        return None
    count = float(m.group(1))  # (400 digits: inf, past the bound)
    rate = count / _PER[m.group(2)]
    return (rate, count) if MIN_RATE <= rate <= MAX_RATE else None


# ---- rules ----

def _rule(ctx: f.Ctx, rules: LineList, i: int, merged: _Merged) -> Rule | None:
    raw = f.mapping(ctx, rules, i, f"rules[{i}]")
    if raw is None:
        return None
    n = len(ctx.errors)
    src = ctx.source(rules, i)
    name = f.string(ctx, raw, "name", f"rules[{i}] name") if "name" in raw else None
    what = f"rule {name!r}" if name else f"rules[{i}]"
    f.known_keys(ctx, raw, RULE_KEYS, what)
    for key in ("name", "hook", "run"):
        if key not in raw:
            ctx.error(rules, (i,), f"{what}: {key!r} is required")
    if name is not None and (_CONTROL.search(name) or len(name) > MAX_RULE_NAME):
        # A name is printed as it is by `hookrunner runs` and the console's tables: a line
        # break or an escape sequence there forged lines or drove the terminal (audit).
        ctx.error(raw, ("name",), f"{what}: a rule name is one line of at most "
                  f"{MAX_RULE_NAME} characters, without control characters")
        name = None
    if name is not None:
        if name in merged.rule_sources:
            ctx.error(raw, ("name",), f"duplicate rule name {name!r} "
                      f"(also defined at {merged.rule_sources[name]})")
        else:
            merged.rule_sources[name] = src
    hooks = f.strings(ctx, raw, "hook", f"{what} hook") if "hook" in raw else None
    for j, hook_id in enumerate(hooks or []):
        path = ("hook", j) if isinstance(raw["hook"], list) else ("hook",)
        if hook_id in (hooks or [])[:j]:  # runs once all the same: a slip worth a word
            ctx.warn(raw, path, f"{what}: hook {hook_id!r} is listed twice")
            continue
        merged.refs.append((ctx, raw, path, hook_id))
    condition = f.when(ctx, raw, "when", what) if "when" in raw else None
    action = _run(ctx, raw, what) if "run" in raw else None
    kw: dict[str, Any] = {}
    if "timeout" in raw:
        kw["timeout"] = f.duration(ctx, raw, "timeout", f"{what} timeout")
    if "retry" in raw:
        kw["retry"] = _retry(ctx, raw, what) or Retry()
    if "concurrency" in raw and name is not None:
        kw["concurrency"] = _concurrency(ctx, raw, what, name)
    if "description" in raw:
        kw["description"] = f.string(ctx, raw, "description", f"{what} description") or ""
    if len(ctx.errors) > n or name is None or not hooks or action is None:
        return None
    return Rule(name=name, hooks=tuple(dict.fromkeys(hooks)), action_kind=action[0],
                action=action[1], source=src, when=condition, **kw)


def _run(ctx: f.Ctx, raw: LineDict, what: str) -> tuple[str, Any] | None:
    from hookrunner.actions.base import RUNNERS

    spec = f.mapping(ctx, raw, "run", f"{what} run")
    if spec is None:
        return None
    kinds = ", ".join(sorted(RUNNERS))
    n = len(ctx.errors)
    misplaced = [k for k in spec if k in RULE_KEYS and k not in RUNNERS]
    written = [k for k in spec if k not in misplaced]
    if misplaced and len(written) == 1:
        # `timeout:` indented one level too far: it read as a second run type. Said, and the
        # run type read on (its own errors in the same pass).
        for key in misplaced:
            ctx.error(spec, (key,), f"{what}: {key!r} is written under `run:`, but belongs to "
                      "the rule: indent it as `run:` is")
    elif len(spec) != 1:
        got = ", ".join(map(str, spec)) or "none"
        ctx.error(raw, ("run",), f"{what}: run must have exactly one run type of: {kinds}; "
                  f"got {got}")
        return None
    kind = (written or list(spec))[0]  # (`run: {timeout: 5m}` alone: an unknown run type)
    if kind not in RUNNERS:
        ctx.error(spec, (kind,), f"{what}: unknown run type {kind!r}"
                  f"{f.did_you_mean(kind, RUNNERS)}; expected one of: {kinds}")
        return None
    body = spec[kind]
    fallback = spec.line_of(kind)
    try:
        normalized = RUNNERS[kind].normalize(body if body is not None else LineDict())
    except ConfigError as exc:
        stand_ins: Mapping[str, Any] = getattr(RUNNERS[kind], "stand_ins", {})
        problems, rest, wrong = _errors_past(RUNNERS[kind].normalize, body, exc, stand_ins)
        for problem in problems:
            line = line_of(body, problem.path, fallback) if problem.path else fallback
            # Runners prefix their messages with the kind (`shell.argv must ...`).
            msg = problem.message if problem.message.startswith(kind) else \
                f"{kind}: {problem.message}"
            ctx.errors.append(ConfigError(f"{what}: run.{msg}", ctx.file, line))
        if rest is not None:  # the other keys' template syntax and paths, in the same pass
            tree = f.compile_leaves(ctx, rest, body, (), fallback, f"{what}: run.{kind}")
            # Not the keys found wrong, nor what a stand-in made (a shell `command`'s `argv`).
            made = bool(wrong & set(stand_ins))
            action_paths(ctx, kind, {k: v for k, v in tree.items()
                               if k not in wrong and (k in body or not made)}, body,
                   fallback, what)
        return None
    tree = f.compile_leaves(ctx, normalized, body, (), fallback, f"{what}: run.{kind}")
    action_paths(ctx, kind, tree, body, fallback, what)
    literal_secrets(ctx, kind, tree, body, fallback, what)
    return None if len(ctx.errors) > n else (kind, tree)


def _errors_past(call: Callable[[Any], Any], body: Any, first: ConfigError,
                 stand_ins: Mapping[str, Any]) -> tuple[list[ConfigError], Any, set[Any]]:
    """`first` and the errors after it, what `call` made of the keys that are right (or
    None), and the keys found wrong. An action's runner and a verifier stop at their first
    error, so `check` showed one a run at a time. `call` is asked again without each key
    found wrong (a required one given a stand-in value: `stand_ins`), for as long as the
    next error is about another key the rule writes (one about a key taken away, or about
    the whole block, is not the rule's)."""
    found = [first]
    removed: set[Any] = set()
    unstood: set[Any] = set()  # keys whose stand-in was refused too (`secret:` under basic)
    if not isinstance(body, LineDict):
        return found, None, removed
    key = first.path[0] if first.path else None
    while len(found) < MAX_BLOCK_ERRORS:
        if key is None or key not in body or (key in removed and key in unstood):
            return found, None, removed
        if key in removed:  # its stand-in was what failed: read on without it
            unstood.add(key)
        removed.add(key)
        rest = LineDict((k, v) for k, v in body.items() if k not in removed)
        rest.update({k: stand_ins[k] for k in removed if k in stand_ins and k not in unstood})
        try:
            result = call(rest)
        except ConfigError as exc:
            key = exc.path[0] if exc.path else None
            if key in removed and key in stand_ins and key not in unstood:
                continue  # (not the rule's error: the stand-in's)
            if key is None or key in removed or key not in body:
                return found, None, removed
            found.append(exc)
            continue
        return found, result, removed
    return found, None, removed


def _retry(ctx: f.Ctx, raw: LineDict, what: str) -> Retry | None:
    node = f.mapping(ctx, raw, "retry", f"{what} retry")
    if node is None:
        return None
    what = f"{what} retry"
    f.known_keys(ctx, node, RETRY_KEYS, what)
    d = Retry()
    attempts = f.integer(ctx, node, "attempts", f"{what} attempts", 1, MAX_ATTEMPTS) \
        if "attempts" in node \
        else d.attempts
    backoff = f.duration(ctx, node, "backoff", f"{what} backoff", positive=False) \
        if "backoff" in node else d.backoff
    max_backoff = f.duration(ctx, node, "max_backoff", f"{what} max_backoff", positive=False) \
        if "max_backoff" in node else max(d.max_backoff, backoff or 0)
    on = tuple(f.strings(ctx, node, "on", f"{what} on") or ()) if "on" in node else d.on
    for j, status in enumerate(on):
        if status not in RETRY_ON:
            path = ("on", j) if isinstance(node["on"], list) else ("on",)
            ctx.error(node, path, f"{what} on: unknown outcome {status!r}; expected any of: "
                      f"{', '.join(RETRY_ON)}")
            return None
    if attempts is None or backoff is None or max_backoff is None:
        return None
    if max_backoff < backoff:
        ctx.error(node, ("max_backoff",), f"{what}: max_backoff must not be less than backoff")
        return None
    return Retry(attempts=attempts, backoff=backoff, max_backoff=max_backoff, on=on)


def _concurrency(ctx: f.Ctx, raw: LineDict, what: str, name: str) -> Concurrency | None:
    node = f.mapping(ctx, raw, "concurrency", f"{what} concurrency")
    if node is None:
        return None
    what = f"{what} concurrency"
    f.known_keys(ctx, node, CONCURRENCY_KEYS, what)
    n = len(ctx.errors)
    key = None
    if "key" in node:
        key = f.template(ctx, node, "key", f"{what} key")
        if isinstance(key, Constant) and not key.source.strip():
            # Every run would fail with "concurrency key rendered empty".
            ctx.error(node, ("key",), f"{what}: key is empty; leave it out to use the rule's name")
    policy = node.get("policy", "queue")
    if policy not in POLICIES:
        ctx.error(node, ("policy",), f"{what}: unknown policy {policy!r}; expected one of: "
                  f"{', '.join(POLICIES)}")
    if len(ctx.errors) > n or ("key" in node and key is None):  # (each said, in one pass)
        return None
    return Concurrency(key=key, policy=policy)

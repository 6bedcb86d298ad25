"""What `check` says of an action's values beyond their types: paths that leave --root,
literals every run would refuse, literal secrets in the rules file, shell operators passed
as arguments, programs missing from PATH, a CA bundle that cannot be read. Each writes its
findings to the loader's context (`rules.fields.Ctx`), as errors or warnings."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from hookrunner.errors import ActionError, ConfigError
from hookrunner.rules import fields as f
from hookrunner.rules.yamlsrc import line_of
from hookrunner.templating import Constant

_NAMED_VALUES = ("env", "vars", "extravars", "headers")  # where a secret's name is its key


# Names of what goes with a secret, not of one: `TOKEN_FILE: ./pw`, `TOKEN_URL`, `SECRET_NAME`.
_NOT_SECRET_SUFFIXES = ("_file", "_path", "_url", "_uri", "_ttl", "_mode", "_name", "_id",
                        "_dir", "_type", "_header")
_MIN_SECRET = 8  # characters: `oauth`, `prod-db`, `3600` are settings, not credentials


def _token_like(name: str, value: str) -> bool:
    """Whether a literal under a secret-looking name looks like a credential: one word of
    at least _MIN_SECRET characters that is no path or plain URL, under a name that is not
    a secret's file, URL or setting."""
    if "://" in value:  # a URL is a secret where it carries credentials (redact_url says)
        from hookrunner.redact import redact_url

        return redact_url(value) != value
    if name.lower().replace("-", "_").endswith(_NOT_SECRET_SUFFIXES):
        return False
    word = value.removeprefix("Bearer ").removeprefix("Basic ").removeprefix("token ")
    if len(word) < _MIN_SECRET or any(c.isspace() for c in word) or value.isdigit():
        return False
    return not value.startswith(("/", "./", "../", "~/"))


def literal_secrets(ctx: f.Ctx, kind: str, tree: dict[str, Any], body: Any, fallback: int,
                     what: str) -> None:
    """`env: {API_TOKEN: abc123}`: each run's record keeps its action as rendered (the API
    and the console show such a value `[redacted]`, the database has it), and the rules
    file is often in a repository. (A path, `TOKEN_FILE: /etc/x`, is no secret.)"""
    from hookrunner.redact import secret_key

    for key in _NAMED_VALUES:
        values = tree.get(key)
        for name, value in values.items() if isinstance(values, dict) else ():
            if isinstance(name, str) and secret_key(name) and isinstance(value, Constant) \
                    and _token_like(name, value.source):
                ctx.warnings.append(
                    f"{ctx.file}:{line_of(body, (key, name), fallback)}: {what}: run.{kind}."
                    f"{key}.{name} is a literal secret in the rules file, kept with every "
                    "run's record: pass it from the server's environment instead (serve "
                    "--pass-env NAME" + ("; a header: {env: NAME})" if key == "headers" else ")"))


# What writes no directory before a path's template: spaces, `./`, Jinja comments.
_LEADING_NOTHING = re.compile(r"^(?:\s+|\./|\{#.*?#\})*", re.DOTALL)


def paths(ctx: f.Ctx, kind: str, tree: dict[str, Any], body: Any, fallback: int,
           what: str) -> None:
    """Paths whose every run would fail: one written without a template that leaves --root
    (`cwd: /etc`, `dir: ../x`), or a templated one outside the directory its key keeps
    templated values in (ansible's `inventory`: inventories/). A `check` error (a warning
    where the server loads rules), not only failed runs later. Templated values are also
    checked per run (their payload values)."""
    from hookrunner.actions.base import RUNNERS
    from hookrunner.actions.paths import confine

    def problem(message: str, path: tuple[str | int, ...]) -> None:
        error = ConfigError(f"{what}: run.{kind}.{message}", ctx.file, line_of(body, path, fallback))
        if ctx.strict:
            ctx.errors.append(error)
        else:  # its runs fail; the other rules load (a warning where rules load)
            ctx.warnings.append(f"{error}: its runs will fail")

    for key, base in getattr(RUNNERS[kind], "templated_paths", ()):
        item = tree.get(key)
        # (`./inventories/...` as well: the run's check reads the path normalized.)
        if item is not None and not isinstance(item, Constant) and (
                not re.sub(r"^(?:\./)+", "", item.source).startswith(base.rstrip("/") + "/")
                or ".." in item.source.split("/")):
            problem(f"{key}: a templated {key} must start with {base}/, without `..` (e.g. "
                    f"\"{base}/{{{{ payload.env }}}}.ini\"): elsewhere a payload value could name "
                    "any file under --root", (key,))
    for key, base in getattr(RUNNERS[kind], "written_paths", ()):
        value = tree.get(key)
        for i, item in enumerate(value if isinstance(value, list) else [value]):
            if item is not None and not isinstance(item, Constant) and \
                    _LEADING_NOTHING.sub("", item.source).startswith(("{{", "{%")):
                where = (key, i) if isinstance(value, list) else (key,)
                picks = (f"any file under {base}/ (a vars file too, which ansible prints "
                         "back when it cannot run it as a playbook)" if kind == "ansible" else
                         f"any path under {base or '--root'} (which configuration is applied, "
                         "or destroyed)")
                ctx.warnings.append(
                    f"{ctx.file}:{line_of(body, where, fallback)}: {what}: run.{kind}.{key} "
                    f"begins with a template: a payload value chooses {picks}; write the "
                    "part that does not vary (`deploy-{{ payload.env }}.yml`, "
                    "`envs/{{ payload.env }}`), or guard the value in `when`")
    if kind == "http":
        _http_url(tree, problem)
    _refused_literals(kind, tree, problem)
    env = tree.get("env") if kind == "shell" else None
    for name, value in env.items() if isinstance(env, dict) else ():
        if _PICKS_CODE.fullmatch(str(name)) and not isinstance(value, Constant):
            ctx.warnings.append(
                f"{ctx.file}:{line_of(body, ('env', name), fallback)}: {what}: run.shell.env."
                f"{name} is a template: a value chooses what code runs (the programs "
                "looked up, a library loaded, a script read at start), as a templated "
                "program would; write it out, or guard the value in `when`")
    if ctx.root is None:
        return
    def missing(message: str, path: tuple[str | int, ...]) -> None:
        # A warning even for `check`: the deploy may bring the file after the rules.
        line = line_of(body, path, fallback)
        ctx.warnings.append(f"{ctx.file}:{line}: {what}: run.{kind}.{message}: its runs will "
                            "fail until it does")

    paths = list(getattr(RUNNERS[kind], "paths", ()))
    argv = tree.get("argv")
    # A `command` is split into argv at load: its warnings name what the rule wrote.
    word = "command's first word" if isinstance(body, Mapping) and "command" in body \
        and "argv" not in body else "argv[0]"
    program = f"run.shell.{word}"
    if kind == "shell" and isinstance(argv, list) and argv:  # a program under --root
        first = argv[0]
        if isinstance(first, Constant) and "/" in first.source and \
                not first.source.startswith("/"):
            paths.append(("argv", ""))
    for key, base in paths:
        value = tree.get(key)
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items[:1] if key == "argv" else items):
            if not isinstance(item, Constant):
                continue
            where = (key, i) if isinstance(value, list) else (key,)
            try:
                found = confine(ctx.root, item.source, base=base)
            except ActionError as exc:
                problem(f"{word if key == 'argv' else key}: {exc}", where)
                continue
            if not found.exists():
                under = f"{base.rstrip('/')}/ under --root" if base else "--root"
                field = word if key == "argv" else \
                    f"{key}{f'[{i}]' if isinstance(value, list) else ''}"
                missing(f"{field}: {item.source!r} does not exist under {under}", where)
            elif key == "argv" and found.is_file() and not os.access(found, os.X_OK):
                line = line_of(body, where, fallback)
                ctx.warnings.append(f"{ctx.file}:{line}: {what}: {program}: "
                                    f"{item.source!r} is not executable (chmod +x it): its "
                                    "runs will fail until it is")
            elif key == "playbook" and kind == "ansible":
                _prompting(ctx, item.source, found, tree.get("extravars"),
                           line_of(body, where, fallback), what)
    if kind == "shell" and isinstance(argv, list):
        _shell_operators(ctx, argv, body, fallback, what)
    ca = tree.get("ca") if kind == "http" else None
    if isinstance(ca, Constant):
        _ca_bundle(ctx.root, ca.source, problem, missing)
    extravars = tree.get("extravars") if kind == "ansible" else None
    for key in extravars if isinstance(extravars, dict) else ():
        if isinstance(key, str) and ("{{" in key or "{%" in key):  # audit: silently literal
            ctx.warnings.append(
                f"{ctx.file}:{line_of(body, ('extravars', key), fallback)}: {what}: "
                f"run.ansible.extravars: the key {key!r} is not templated (only values are): "
                "Ansible gets a variable of that very name")
    if kind == "shell" and isinstance(argv, list) and argv and \
            _sender_picks_program(argv[0], ctx.root):
        ctx.warnings.append(
            f"{ctx.file}:{line_of(body, ('argv', 0), line_of(body, ('command',), fallback))}: "
            f"{what}: {program} is a template: a value picks the program to run. It "
            "must render to a file under --root (scripts/{{ ... }}.sh; guard the value in "
            "`when`), or the run fails")
    if kind == "shell" and isinstance(argv, list) and argv and isinstance(argv[0], Constant) \
            and argv[0].source and "/" not in argv[0].source:
        _on_path(ctx, argv[0].source, tree.get("env"), line_of(body, ("argv", 0), fallback),
                 what, program)
    binary = tree.get("binary", Constant("terraform")) if kind == "terraform" else None
    if isinstance(binary, Constant) and binary.source:  # `binary: tofu` where none is
        _on_path(ctx, binary.source, None, line_of(body, ("binary",), fallback), what,
                 "run.terraform.binary")


def _prompting(ctx: f.Ctx, playbook: str, found: Path, extravars: Any, line: int,
               what: str) -> None:
    """A warning where the play (`found`, confined) asks for input: nothing answers it
    (actions.prompts)."""
    from hookrunner.actions.prompts import prompts

    asked = prompts(found, extravars if isinstance(extravars, dict) else ())
    if asked:
        ctx.warnings.append(
            f"{ctx.file}:{line}: {what}: run.ansible.playbook {playbook!r} asks for input "
            f"({'; '.join(asked[:3])}{'; ...' if len(asked) > 3 else ''}): the play runs on a "
            "terminal no one answers, so its runs wait until their timeout; give a prompted "
            "variable in extravars, and pause for seconds")


def _sender_picks_program(program: Any, root: Path | None) -> bool:
    """A templated program whose rule writes no directory under --root before the template
    (`{{ payload.tool }}`, `/usr/bin/{{ x }}`; not `scripts/{{ x }}.sh`): each run renders it
    to a bare name or a path outside --root, which the shell action refuses."""
    from hookrunner.actions.shell import templated_program

    source = "" if isinstance(program, Constant) else str(getattr(program, "source", ""))
    if not templated_program(source):
        return False
    head = source.split("{{", 1)[0]
    if head.startswith("/"):
        from hookrunner.actions.paths import real

        try:
            return root is None or not real(Path(head)).is_relative_to(real(root))
        except ActionError:  # a symlink loop: no file under --root is named through it
            return True
    return "/" not in head


# Environment variables that choose code: where programs are found, what the dynamic loader
# or an interpreter loads or runs at start.
# (Not `ENV`, which only an interactive sh reads, nor CI's GIT_COMMIT/GIT_BRANCH.)
_PICKS_CODE = re.compile(r"PATH|LD_\w+|GCONV_PATH|BASH_ENV|SHELLOPTS|PS4|PYTHON(PATH|HOME|"
                         r"STARTUP)|NODE_OPTIONS|NODE_PATH|PERL5OPT|PERL5LIB|PERLLIB|RUBYOPT|"
                         r"RUBYLIB|GIT_(SSH|SSH_COMMAND|EXEC_PATH|CONFIG\w*|DIR|ASKPASS|"
                         r"PROXY_COMMAND|EXTERNAL_DIFF|PAGER|EDITOR|TEMPLATE_DIR)|"
                         r"JAVA_TOOL_OPTIONS|_JAVA_OPTIONS|CLASSPATH")


# Not `;` (`find -exec ... ;`), `<` (`expr 1 < 2`) or `&`: arguments often enough.
_OPERATORS = frozenset({"|", "||", "&&", ">", ">>", "2>&1"})


def _shell_operators(ctx: f.Ctx, argv: list[Any], body: Any, fallback: int, what: str) -> None:
    """`command: "build | tee log"` passes `|` and `tee` as arguments: no shell runs it."""
    for i, item in enumerate(argv[1:], start=1):
        if isinstance(item, Constant) and item.source in _OPERATORS:
            line = line_of(body, ("argv", i), line_of(body, ("command",), fallback))
            ctx.warnings.append(
                f"{ctx.file}:{line}: {what}: run.shell: {item.source!r} is passed to the "
                "program as an argument: no shell runs the action (for a pipeline or a "
                "redirection, write argv: [sh, -c, '...'])")
            return


def _on_path(ctx: f.Ctx, program: str, env: Any, line: int, what: str, field: str) -> None:
    """A bare program name is looked up on the action's PATH when it runs: where the rules
    load, this process's own (with the rule's `env: {PATH: ...}` if it sets one), which is
    the server's. `check` may run where PATH differs: a warning, never an error."""
    import shutil

    from hookrunner.actions.environment import VENV_BIN, with_path_entry

    declared = env.get("PATH") if isinstance(env, dict) else None
    if declared is not None and not isinstance(declared, Constant):
        return  # templated: known per run only
    path = declared.source if declared is not None else \
        with_path_entry(os.environ.get("PATH") or os.defpath, VENV_BIN)
    if shutil.which(program, path=path) is None:
        fails = "until it is there" if declared is not None else \
            "where the server's PATH lacks it too"
        ctx.warnings.append(f"{ctx.file}:{line}: {what}: {field}: {program!r} is not "
                            f"on PATH ({path}): its runs will fail {fails}")


def _http_url(tree: dict[str, Any],
              problem: Callable[[str, tuple[str | int, ...]], None]) -> None:
    """An http action's url and header values written without templates that every run
    would refuse (`ftp://...`, a port past 65535, a line break)."""
    from hookrunner.actions.http import literal_problem

    url = tree.get("url")
    if isinstance(url, Constant):
        said = literal_problem(url.source)
        if said is not None:
            problem(f"url: {said}", ("url",))
    headers = tree.get("headers")
    for name, value in (headers.items() if isinstance(headers, dict) else ()):
        if isinstance(value, Constant) and any(c in value.source for c in "\r\n\x00"):
            problem(f"headers.{name}: holds a line break or another control character",
                    ("headers", name))


def _refused_literals(kind: str, tree: dict[str, Any],
                      problem: Callable[[str, tuple[str | int, ...]], None]) -> None:
    """Values written without templates that every run would refuse, by the action's own
    run-time check: an ansible `limit` naming a file (`web1 @/etc/passwd`) or a `limit` or
    `tags` starting with `-`, a terraform `workspace` Terraform cannot have (`-bad`)."""
    from hookrunner.actions.ansible import host_pattern, tag_list
    from hookrunner.actions.terraform import workspace_name

    judges: dict[str, Callable[[Any], object]] = (
        {"limit": host_pattern, "tags": tag_list} if kind == "ansible" else
        {"workspace": workspace_name} if kind == "terraform" else {})
    for key, judge in judges.items():
        value = tree.get(key)
        items = value if isinstance(value, list) else [value]
        texts = [item.source for item in items if isinstance(item, Constant)]
        if not texts or len(texts) < len(items):
            continue  # (absent, or a template: its values are judged per run)
        try:
            judge(texts if isinstance(value, list) else texts[0])
        except ActionError as exc:
            problem(f"{key}: {str(exc).removeprefix(f'{kind}: ')}", (key,))
    argv = tree.get("argv") if kind == "shell" else None
    if isinstance(argv, list) and argv and isinstance(argv[0], Constant) and not argv[0].source:
        problem("argv[0]: the program's name is empty", ("argv", 0))
    for path, text in _constants(tree, ()):
        if "\x00" in text:  # (a lone surrogate is a YAML error already, at its escape)
            # Refused by every render ("renders a NUL character"), said there as a template's.
            shown = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)[1:]
            problem(f"{shown}: holds a NUL character (\\0), which no run can pass on or "
                    "store", path)


def _constants(tree: Any, path: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Each literal string of an action's compiled tree, with its path."""
    if isinstance(tree, Constant):
        yield path, tree.source
    elif isinstance(tree, dict):
        for key, value in tree.items():
            yield from _constants(value, (*path, key))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from _constants(value, (*path, i))


def _ca_bundle(root: Path, source: str, problem: Callable[[str, tuple[str | int, ...]], None],
               missing: Callable[[str, tuple[str | int, ...]], None]) -> None:
    """An http action's `ca`: absolute, or a path under --root, that loads as CA
    certificates (every https run fails otherwise)."""
    import ssl

    from hookrunner.actions.paths import confine

    path = Path(source)
    if not path.is_absolute():
        try:
            path = confine(root, source)
        except ActionError as exc:
            problem(f"ca: {exc}", ("ca",))
            return
    if not path.exists():
        missing(f"ca: {source!r} does not exist" + ("" if Path(source).is_absolute()
                                                     else " under --root"), ("ca",))
        return
    try:
        ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError) as exc:
        problem(f"ca: {source!r} does not load as CA certificates (PEM): "
                f"{getattr(exc, 'strerror', None) or exc}", ("ca",))

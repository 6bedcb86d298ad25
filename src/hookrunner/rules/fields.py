"""Field checks shared by the rules loader: each records a `file:line: message` and goes on.

Every check returns the parsed value, or `None` after recording an error, so one load reports
every problem of every file rather than the first.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hookrunner.errors import ConfigError
from hookrunner.rules.model import SCOPE_NAMES, Source, When
from hookrunner.rules.yamlsrc import LineDict, LineList, line_of, text_line
from hookrunner.templating import ANSIBLE_HINTS, Constant, Expression, Template, compile_expression
from hookrunner.templating import compile_template as _compile_template
from hookrunner.units import as_written, parse_duration, parse_size

T = TypeVar("T")
WHEN_GROUPS = ("all", "any", "not")
MIN_DURATION = 0.001  # seconds: what durations are shown in (`500ms`)


def _known_names(compiled: Constant | Template | Expression) -> None:
    """A name outside the scope is a typo (`paylaod.ref`): it would be undefined on every
    delivery, so the rule would never match or its runs would always fail."""
    unknown = sorted(compiled.names.difference(SCOPE_NAMES))
    if unknown:
        name, source = unknown[0], getattr(compiled, "source", "")
        raise ConfigError(f"unknown name {name!r}; a template sees "
                          f"{', '.join(SCOPE_NAMES)}{_unknown_hint(name, source)}")


_CHAIN = re.compile(r"(?<![\w'\"])[A-Za-z_][\w.\-/]*")


def _unknown_hint(name: str, source: str) -> str:
    """Why a name is unknown, where its surroundings tell: a key with `-` or `/` written
    with a dot (`payload.metadata.tenant-id` reads as `tenant - id`, `headers.X-GitHub-Event`
    as `X - GitHub - Event`), or text not quoted (`payload.ref == refs/heads/main`)."""
    if ("name", name) in ANSIBLE_HINTS:  # `lookup('env', 'X')`
        return f" ({ANSIBLE_HINTS['name', name]})"
    bare = re.sub(r"'[^']*'|\"[^\"]*\"", " ", source)  # (not what is quoted already)
    for chain in _CHAIN.findall(bare):
        parts = re.split(r"[.\-/]", chain)
        if name not in parts:
            continue
        if parts[0] not in SCOPE_NAMES:
            if "/" in chain or "-" in chain or re.search(
                    rf"(==|!=|\bin)\s*{re.escape(chain)}(?![\w.(\[])", bare):
                return f" (text needs quotes: \"{chain}\")"
            return did_you_mean(parts[0], SCOPE_NAMES) if parts[0] == name else ""
        for key in chain.split(".")[1:]:
            if name in re.split(r"[-/]", key):
                if "/" in key:
                    return (" (a key with '/' or '.' in it needs brackets: "
                            "payload.labels[\"app.kubernetes.io/name\"])")
                if "-" in key:
                    return f" (a key with '-' in it needs brackets: [\"{key}\"], not .{key})"
    return ""


def compile_template(text: str) -> Constant | Template:
    compiled = _compile_template(text)
    _known_names(compiled)
    return compiled


def _compile_when(text: str) -> Expression:
    compiled = compile_expression(text)
    _known_names(compiled)
    return compiled


@dataclass
class Ctx:
    """The file being loaded, and where its errors and warnings go."""

    file: str
    errors: list[ConfigError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    root: Path | None = None  # --root, where the paths rules name must stay
    strict: bool = False  # `check`: see load.load_rules
    # Hooks whose unreadable secret makes them unavailable rather than an error (see
    # load.load_rules `defer_secrets`), and why each is: `file:line: message`.
    defer_secrets: Callable[[str], bool] | None = None
    unavailable: dict[str, str] = field(default_factory=dict)
    # Lines whose value YAML reading refused already (`.inf`, read as 0.0): a second error
    # there (`tolerance: must be more than zero`) would be about a value no one wrote.
    refused_lines: set[int] = field(default_factory=set)

    def line(self, node: Any, *path: Any) -> int:
        return line_of(node, path)

    def source(self, node: Any, *path: Any) -> Source:
        return Source(self.file, self.line(node, *path))

    def error(self, node: Any, path: tuple[Any, ...], message: str,
              template_line: int | None = None) -> None:
        """`template_line`: the line of the value's own text at fault, said at its line of
        the file where the value is a literal block (`when: |`)."""
        line = text_line(node, path, template_line) or line_of(node, path)
        if line not in self.refused_lines:
            self.errors.append(ConfigError(message, self.file, line))

    def warn(self, node: Any, path: tuple[Any, ...], message: str) -> None:
        self.warnings.append(f"{self.file}:{line_of(node, path)}: {message}")


def type_name(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string"}.get(
        type(value), type(value).__name__)


def not_a_string(what: str, value: Any) -> str:
    """`what` must be a string, and why a YAML writer may have made it something else."""
    hint = (" (YAML reads an unquoted true or false as one: quote it, e.g. \"true\")"
            ) if isinstance(value, bool) else ""
    return f"{what} must be a string, got {type_name(value)}{hint}"


def quote_as_written(value: Any) -> str:
    """How to write `value`, a key YAML read as no text (`null:`, `0x1F:`, `yes:`), as the
    text meant: quoted as written, not as what YAML made of it (`'None'`, `'31'`)."""
    written = getattr(value, "written", None)
    if written is not None:
        return f"quote it ('{written}')"
    if value is None:
        return "quote it as written ('null' or '~')"
    if isinstance(value, bool):
        return "quote it as written ('true', 'false', 'on', ...)"
    return f"quote it ('{value}')"


def mapping(ctx: Ctx, parent: Any, key: Any, what: str) -> LineDict | None:
    value = parent[key]
    if isinstance(value, LineDict):
        return value
    ctx.error(parent, (key,), f"{what} must be a mapping, got {type_name(value)}")
    return None


def known_keys(ctx: Ctx, node: LineDict, allowed: Collection[str], what: str) -> None:
    for key in node:
        if key not in allowed:
            ctx.error(node, (key,), f"unknown key {key!r} in {what}{did_you_mean(key, allowed)}"
                      f"; allowed: {', '.join(sorted(allowed))}")


def did_you_mean(name: Any, known: Collection[str]) -> str:
    """` (did you mean 'when'?)` for a misspelt name (`wen`), else ""."""
    near = difflib.get_close_matches(str(name).lower(), list(known), n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(n) for n in near)}?)" if near else ""


def string(ctx: Ctx, parent: Any, key: Any, what: str) -> str | None:
    value = parent[key]
    if isinstance(value, str) and value.strip():
        return value
    got = "an empty one" if isinstance(value, str) else type_name(value)
    ctx.error(parent, (key,), f"{what} must be a non-empty string, got {got}")
    return None


def strings(ctx: Ctx, parent: Any, key: Any, what: str) -> list[str] | None:
    """One string or a non-empty list of them."""
    value = parent[key]
    if isinstance(value, str) and value.strip():
        return [value]
    if isinstance(value, list) and value:
        out = [string(ctx, value, i, f"{what}[{i}]") for i in range(len(value))]
        return [s for s in out if s is not None] if all(out) else None
    ctx.error(parent, (key,), f"{what} must be a string or a non-empty list of strings")
    return None


def parsed(ctx: Ctx, parent: Any, key: Any, what: str, parse: Callable[[Any], T]) -> T | None:
    try:
        return parse(parent[key])
    except ValueError as exc:
        ctx.error(parent, (key,), f"{what}: {exc}")
        return None


def duration(ctx: Ctx, parent: Any, key: Any, what: str, *, positive: bool = True) -> float | None:
    value = parsed(ctx, parent, key, what, parse_duration)
    if value is not None and positive and value <= 0:
        ctx.error(parent, (key,), f"{what} must be more than zero")
        return None
    if value is not None and positive and value < MIN_DURATION:
        # `timeout: 0.0001` showed as `0ms`, and every run timed out at once.
        ctx.error(parent, (key,), f"{what} must be at least 1ms, got {value:g}s")
        return None
    return value


def size(ctx: Ctx, parent: Any, key: Any, what: str) -> int | None:
    value = parsed(ctx, parent, key, what, parse_size)
    if value is not None and value <= 0:
        ctx.error(parent, (key,), f"{what} must be more than zero")
        return None
    return value


def integer(ctx: Ctx, parent: Any, key: Any, what: str, minimum: int, maximum: int) -> int | None:
    """A whole number within bounds: YAML's have no limit, and one past 2**63 was loaded,
    then failed every delivery on the store (a SQLite INTEGER) or on float arithmetic."""
    value = parent[key]
    if isinstance(value, int) and not isinstance(value, bool) and minimum <= value <= maximum:
        return value
    ctx.error(parent, (key,), f"{what} must be a whole number from {minimum} to {maximum:,}, "
                              f"got {shown(value)}")
    return None


def shown(value: Any, room: int = 40) -> str:
    """A value as an error quotes it: its repr, cut to `room` characters. An int of
    thousands of digits (YAML's hex has no limit) has no repr (Python refuses to make it)."""
    if isinstance(value, int) and value.bit_length() > 4 * room:
        return f"a number of about {int(value.bit_length() * 0.30103)} digits"
    text = as_written(value)
    return text if len(text) <= room else text[:room - 3] + "..."


def boolean(ctx: Ctx, parent: Any, key: Any, what: str) -> bool | None:
    value = parent[key]
    if isinstance(value, bool):
        return value
    ctx.error(parent, (key,), f"{what} must be true or false, got {shown(value)}")
    return None


def template(ctx: Ctx, parent: Any, key: Any, what: str) -> Constant | Template | None:
    value = parent[key]
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        ctx.error(parent, (key,), not_a_string(what, value))
        return None
    try:
        return compile_template(value)
    except ConfigError as exc:
        ctx.error(parent, (key,), f"{what}: {exc.message}", exc.template_line)
        return None


def compile_leaves(
    ctx: Ctx, tree: Any, raw: Any, path: tuple[Any, ...], fallback: int, what: str
) -> Any:
    """Compile every string leaf of a normalized spec; errors at the nearest line of `raw`."""
    if isinstance(tree, str):
        try:
            return compile_template(tree)
        except ConfigError as exc:
            where = what + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
            if path[:1] == ("argv",) and isinstance(raw, Mapping) and "argv" not in raw \
                    and "command" in raw:  # a shell `command`, split into argv at load
                where, path = f"{what}.command (word {path[1] + 1}: {tree!r})", ("command",)
            line = text_line(raw, path, exc.template_line) or line_of(raw, path, fallback) \
                or fallback
            ctx.errors.append(ConfigError(f"{where}: {exc.message}", ctx.file, line))
            return None
    if isinstance(tree, Mapping):
        return {k: compile_leaves(ctx, v, raw, (*path, k), fallback, what)
                for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return [compile_leaves(ctx, v, raw, (*path, i), fallback, what)
                for i, v in enumerate(tree)]
    return tree


def when(ctx: Ctx, parent: Any, key: Any, what: str = "") -> When | None:
    """A `when`: an expression, a list of them (all), or {all|any: [...]} / {not: when}.
    `what` (e.g. "rule 'deploy'") starts each message, as the rule's other errors do."""
    pre = f"{what}: " if what else ""
    value, src = parent[key], ctx.source(parent, key)
    if isinstance(value, str):
        if key in getattr(parent, "folded_dash", ()):
            ctx.error(parent, (key,), f"{pre}when: a line of it starts with '- ', which YAML "
                      f"keeps in the one expression ({value!r}), a subtraction to Jinja: for "
                      "a list of conditions, start "
                      "the list on the line after `when:`, each item on its own line (for "
                      "a subtraction, end the line before with the `-`, or quote the value)")
            return None
        try:
            compiled = _compile_when(value)
        except ConfigError as exc:
            braced = value.strip().startswith("{{") and value.strip().endswith("}}")
            hint = " (a when is an expression already: write it without {{ }})" if braced else ""
            if not hint and (value.count('"') % 2 or value.count("'") % 2):
                hint = (" (a quote is not closed: in a value YAML reads unquoted, ' #' starts "
                        "a comment and cuts the rest off; quote the whole value)")
            ctx.error(parent, (key,), f"{pre}when: {exc.message}{hint or _operator_hint(value)}",
                      exc.template_line)
            return None
        for clause in compiled.clauses():
            other = clause.text_vs_other
            if other is not None:
                convert = "" if isinstance(other, bool) else (
                    ", or convert (`| float`)" if isinstance(other, float)
                    else ", or convert (`| int`)")
                ctx.warn(parent, (key,), f"{pre}when: {clause.source}: query and header values "
                         f"are always text, never equal to {json.dumps(other)}: "
                         f"compare with a string ({_quoted(other)}){convert}")
        return When("expr", src, expr=compiled)
    if isinstance(value, LineList):
        return _group(ctx, "all", value, parent, key, src, what)
    if isinstance(value, LineDict):
        keys = list(value)
        bad = next((k for k in keys if k not in WHEN_GROUPS), None)
        if bad is not None:
            ctx.error(value, (bad,), f"{pre}unknown when key {bad!r}; expected one of: "
                      f"{', '.join(WHEN_GROUPS)}")
            return None
        if len(keys) != 1:
            ctx.error(parent, (key,), f"{pre}a when mapping must have exactly one key of: "
                      f"{', '.join(WHEN_GROUPS)}; got {', '.join(keys) or 'none'}")
            return None
        op = next(iter(value))
        if op == "not":
            child = when(ctx, value, op, what)
            return When("not", ctx.source(value, op), children=(child,)) if child else None
        items = value[op]
        if isinstance(items, str | LineDict):  # one condition: a `when` of its own
            child = when(ctx, value, op, what)
            return When(op, ctx.source(value, op), children=(child,)) if child else None
        if not isinstance(items, LineList):
            ctx.error(value, (op,), f"{pre}when.{op} must be a condition or a list of them")
            return None
        return _group(ctx, op, items, value, op, ctx.source(value, op), what)
    off = (" (YAML reads a bare true/false as a boolean: a rule matching every delivery of its "
           "hook has no `when`; one that never matches, `when: \"false\"`)"
           if isinstance(value, bool) else "")
    ctx.error(parent, (key,), f"{pre}when must be an expression string, a list of them, or a "
              f"mapping with one key of: {', '.join(WHEN_GROUPS)}; got {type_name(value)}{off}")
    return None


# Other languages' operators, which Jinja has under other names (outside quoted text), and
# whether they count inside a call's parentheses (`default(value=1)` passes an argument).
_OPERATORS = ((re.compile(r"&&"), "`and`, not `&&`", True),
              (re.compile(r"\|\|"), "`or`, not `||`", True),
              (re.compile(r"(?<![=!<>])=(?!=)"), "`==` to compare, not `=`", False),
              (re.compile(r"!(?!=)"), "`not x`, not `!x`", True))
_CALL_ARGS = re.compile(r"(?<=\w)\([^()]*\)")


def _operator_hint(source: str) -> str:
    """`a && b`, `a || b`, `x = "y"`, `!x`: what Jinja writes instead."""
    bare = flat = re.sub(r"'[^']*'|\"[^\"]*\"", " ", source)
    while _CALL_ARGS.search(flat):
        flat = _CALL_ARGS.sub(" ", flat)
    said = [say for pattern, say, in_calls in _OPERATORS
            if pattern.search(bare if in_calls else flat)]
    return f" (write {'; '.join(said)})" if said else ""


def _quoted(constant: Any) -> str:
    """`true` -> `"true"`, `3` -> `"3"`: the string a query or header would carry."""
    return f'"{json.dumps(constant)}"'


def _group(ctx: Ctx, op: Any, items: LineList, parent: Any, key: Any, src: Source,
           what: str) -> When | None:
    if not items:
        pre = f"{what}: " if what else ""
        ctx.error(parent, (key,), f"{pre}when: an empty list of conditions")
        return None
    children = [when(ctx, items, i, what) for i in range(len(items))]
    if any(c is None for c in children):
        return None
    return When(op, src, children=tuple(c for c in children if c is not None))

"""The commonest condition clauses, decided without a Jinja render.

`event == "push"`, `payload.action in ["opened", "reopened"]`, `payload.ref is
match("refs/tags/.*")`: a dotted path into the delivery, compared with a literal or given to a
test with a literal argument (`not` in front allowed). A render costs ~15 us, most of matching
a delivery; walking the path costs ~1 us.

It decides only where it is sure to agree with the render: every step of the path is a key of
a plain dict (a JSON object) and not a dict method's name (which Jinja's attribute lookup
would find first), and the value is a JSON scalar. Anything else (a missing key, an error, a
header object) returns None and the clause renders as before, so errors keep their exact
text. tests/unit/rules/test_fastclause.py checks both agree on generated payloads.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import nodes
from jinja2.exceptions import SecurityError

# Names of dict methods: `payload.items` is the key where the object has one (templating's
# getattr), else the method; such paths are left to Jinja. templating.request_keys uses it too.
DICT_ATTRS = frozenset(dir(dict))
_SCALARS = (str, int, float, bool, type(None))
_TESTS = ("match", "search", "glob", "in_cidr")


def _contains(value: Any, items: Any) -> bool:
    return value in items


def _not_contains(value: Any, items: Any) -> bool:
    return value not in items


# Jinja compiles each of these to the Python operator itself (the sandbox intercepts none).
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "lteq": operator.le,
    "gt": operator.gt, "gteq": operator.ge, "in": _contains, "notin": _not_contains,
}


class FastClause:
    """`evaluate(scope)` -> (truth, value of the left operand), or None: render it instead."""

    __slots__ = ("_check", "_name", "_negate", "_path")

    def __init__(self, name: str, path: tuple[str, ...], check: Callable[[Any], Any],
                 negate: bool) -> None:
        self._name = name
        self._path = path
        self._check = check
        self._negate = negate

    def evaluate(self, scope: Mapping[str, Any]) -> tuple[bool, Any] | None:
        value = _walk(scope, self._name, self._path)
        if value is ABSENT:
            return None
        try:
            truth = self._check(value)
        except SecurityError:  # a pattern's time ran out: a render would spend it again
            raise
        except Exception:  # e.g. "a" < 1: the render raises it with its message
            return None
        if type(truth) is not bool:
            return None
        return truth is not self._negate, value


class FastPath:
    """A template that is one such path (`{{ payload.head_commit.id }}`, an argv's or a
    concurrency key's commonest form): `value(scope)` is the JSON scalar it reaches, or
    ABSENT where the render must decide (the same guards as FastClause's)."""

    __slots__ = ("_name", "_path")

    def __init__(self, path: tuple[str, ...]) -> None:
        self._name, self._path = path[0], path[1:]

    def value(self, scope: Mapping[str, Any]) -> Any:
        return _walk(scope, self._name, self._path)


def _walk(scope: Mapping[str, Any], name: str, path: tuple[str, ...]) -> Any:
    value = scope.get(name, ABSENT)
    if value is ABSENT:
        return ABSENT  # a global, or undefined: Jinja's to decide
    for key in path:
        if type(value) is not dict or key in DICT_ATTRS or key not in value:
            return ABSENT
        value = value[key]
    return value if type(value) in _SCALARS else ABSENT


ABSENT: Any = object()


def compile_path(node: nodes.Expr) -> FastPath | None:
    """The fast form of a template's single expression, where it is a bare path."""
    path = _path(node)
    return None if path is None else FastPath(path)


def compile_fast(node: nodes.Expr, tests: Mapping[str, Any]) -> FastClause | None:
    """The fast form of a clause's expression tree, or None if it has none. Call it before
    the tree is rewritten for rendering."""
    negate = False
    while isinstance(node, nodes.Not):
        negate, node = not negate, node.node
    if isinstance(node, nodes.Compare):
        if len(node.ops) != 1 or node.ops[0].op not in _COMPARE:
            return None
        literal = _literal(node.ops[0].expr)
        if literal is ABSENT:
            return None
        compare, left = _COMPARE[node.ops[0].op], node.expr

        def check(value: Any) -> Any:
            return compare(value, literal)
    elif isinstance(node, nodes.Test):
        if (node.name not in _TESTS or node.name not in tests or len(node.args) != 1
                or node.kwargs or node.dyn_args or node.dyn_kwargs):
            return None
        arg = _literal(node.args[0])
        if not isinstance(arg, str):
            return None
        test, left = tests[node.name], node.node

        def check(value: Any) -> Any:
            return test(value, arg)
    else:
        return None
    path = _path(left)
    if path is None:
        return None
    return FastClause(path[0], path[1:], check, negate)


def _literal(node: nodes.Expr) -> Any:
    """A constant scalar, or a list/tuple of them; ABSENT for anything else."""
    if isinstance(node, nodes.Const):
        value = node.value
        if type(value) is float and not math.isfinite(value):
            return ABSENT  # `1e400`: Jinja writes it as the name `inf`, and the render fails
        return value if type(value) in _SCALARS else ABSENT
    if isinstance(node, nodes.List | nodes.Tuple):
        items = [_literal(item) for item in node.items]
        if any(item is ABSENT for item in items):
            return ABSENT
        return items if isinstance(node, nodes.List) else tuple(items)
    return ABSENT


def _path(node: nodes.Expr) -> tuple[str, ...] | None:
    """`payload.a["b"].c` as ("payload", "a", "b", "c"); None for any other form."""
    keys: list[str] = []
    while True:
        if isinstance(node, nodes.Getattr):
            keys.append(node.attr)
            node = node.node
        elif (isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const)
              and type(node.arg.value) is str):
            keys.append(node.arg.value)
            node = node.node
        elif isinstance(node, nodes.Name) and node.ctx == "load":
            keys.append(node.name)
            return tuple(reversed(keys))
        else:
            return None

"""What a template may build: bounds on the operations that turn a small input into a huge
string, number or loop, checked before the operation runs.

Templates render on the event loop while a request waits: an unbounded one (`center(2e9)`,
`(10 ** 10000) ** 1000`, two nested `range(100000)` loops, a regex that backtracks for
minutes) would stall every hook and could take gigabytes. The sandbox bounds `range()` alone
and our environment adds `*`; everything here raises `SecurityError`, which fails the render
with a clear reason (an error of that run, or of that condition).
"""

from __future__ import annotations

import contextvars
import functools
import math
import re
import string
from collections.abc import Callable, Mapping
from typing import Any

import regex
from jinja2.exceptions import SecurityError

MAX_TEXT = 1_000_000  # longest string or list a template may build, in characters or items
MAX_INT_BITS = 64 * 1024  # largest integer a template may compute (~19,700 digits)
MAX_ITERATIONS = 1_000_000  # range() items over one render (nested loops multiply)
REGEX_TIMEOUT = 0.05  # seconds one `match`/`search` may take
_CACHED_PATTERN = 1000  # longer patterns (a payload may choose one) are compiled, not cached

_budget: contextvars.ContextVar[list[int]] = contextvars.ContextVar("hookrunner_range_budget")
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _refuse(what: str) -> SecurityError:
    return SecurityError(f"{what} would be too large")


def _check_size(n: int, what: str) -> None:
    if n > MAX_TEXT:
        raise _refuse(what)


# ---- operators ----

def check_binop(operator: str, left: Any, right: Any) -> None:
    if operator == "*":
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and isinstance(n, int):
                _check_size(len(seq) * n, "the repetition's result")
    elif (operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0
          and abs(left) > 1 and right * math.log2(abs(left)) > MAX_INT_BITS):
        # |left| ** right has about right * log2|left| bits: refuse before computing it.
        raise _refuse("the power's result")  # (not the operand: it may be too long to print)
    elif operator == "%" and isinstance(left, str):
        _check_percent_format(left)


def _check_percent_format(fmt: str) -> None:
    for width, precision in _PERCENT_SPEC.findall(fmt):
        for n in (width, precision):
            if n == "*":
                raise SecurityError("a '*' width in a % format is not allowed")
            if n and int(n) > MAX_TEXT:
                raise _refuse(f"a width of {n}")


def _check_format_string(fmt: str) -> None:
    """`str.format` specs: no width past MAX_TEXT, no width taken from an argument."""
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # format() will say what is wrong with it
    for _, _, spec, _ in fields:
        if not spec:
            continue
        if "{" in spec:
            raise SecurityError("a nested {} in a format spec is not allowed")
        for n in re.findall(r"\d+", spec):
            if int(n) > MAX_TEXT:
                raise _refuse(f"a width of {n}")


# ---- str methods and filters ----

def _width_arg(args: tuple[Any, ...], kwargs: Mapping[str, Any], name: str, pos: int = 0) -> Any:
    return args[pos] if len(args) > pos else kwargs.get(name)


def check_call(obj: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """A call of a bound `str` method from a template (`'x'.center(10 ** 9)`). The sandbox
    hands out `str.format` wrapped; the bound method is the wrapper's `__wrapped__`."""
    owner = getattr(getattr(obj, "__wrapped__", obj), "__self__", None)
    if not isinstance(owner, str):
        return
    name = getattr(obj, "__name__", "")
    if name in ("center", "ljust", "rjust", "zfill"):
        width = _width_arg(args, kwargs, "width")
        if isinstance(width, int):
            _check_size(width, f"{name}({width})")
    elif name == "expandtabs":
        size = _width_arg(args, kwargs, "tabsize")
        if isinstance(size, int):
            _check_size(owner.count("\t") * size + len(owner), "expandtabs()")
    elif name == "replace" and len(args) >= 2:
        _check_replace(owner, args[0], args[1], args[2] if len(args) > 2 else -1)
    elif name == "join" and args:
        _check_join(owner, args[0])
    elif name in ("format", "format_map"):
        _check_format_string(owner)


def _check_replace(text: Any, old: Any, new: Any, count: Any = -1) -> None:
    if not (isinstance(text, str) and isinstance(old, str) and isinstance(new, str)):
        return
    hits = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    _check_size(len(text) + hits * (len(new) - len(old)), "replace()'s result")


def _check_join(separator: Any, items: Any) -> None:
    if not isinstance(items, list | tuple):
        return  # a generator: bounded by what it is drawn from
    sep = len(separator) if isinstance(separator, str) else 0
    total = sep * max(0, len(items) - 1)
    for item in items:
        total += len(item) if isinstance(item, str) else 16
        _check_size(total, "join()'s result")


def _bounded_filter(name: str, check: Callable[..., None], filter_: Callable[..., Any]) -> Any:
    @functools.wraps(filter_)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        check(*args, **kwargs)
        return filter_(*args, **kwargs)

    return bounded


def _center(value: Any, width: Any = 80, *_: Any, **__: Any) -> None:
    if isinstance(width, int):
        _check_size(width, f"center({width})")


def _indent(value: Any, width: Any = 4, *_: Any, **__: Any) -> None:
    if isinstance(width, str):
        width = len(width)
    if isinstance(width, int) and isinstance(value, str):
        _check_size(len(value) + (value.count("\n") + 1) * width, "indent()'s result")


def _replace(eval_ctx: Any, value: Any, old: Any, new: Any, count: Any = None) -> None:
    _check_replace(value, old, new, -1 if count is None else count)


def _join(eval_ctx: Any, value: Any, d: Any = "", attribute: Any = None) -> None:
    if attribute is None:
        _check_join(d, value)


def _format(value: Any, *args: Any, **kwargs: Any) -> None:
    if isinstance(value, str):
        _check_percent_format(value)


def _batch(value: Any, linecount: Any, fill_with: Any = None) -> None:
    if isinstance(linecount, int):
        _check_size(linecount, f"batch({linecount})")


def _slice(value: Any, slices: Any, fill_with: Any = None) -> None:
    if isinstance(slices, int):
        _check_size(slices, f"slice({slices})")


_FILTER_CHECKS: dict[str, Callable[..., None]] = {
    "center": _center, "indent": _indent, "replace": _replace, "join": _join,
    "format": _format, "batch": _batch, "slice": _slice,
}


def bounded_filters(filters: Mapping[str, Any]) -> dict[str, Any]:
    """The filters that can build a large value from small inputs, each checked first."""
    return {name: _bounded_filter(name, check, filters[name])
            for name, check in _FILTER_CHECKS.items() if name in filters}


# ---- loops ----

def start_render() -> contextvars.Token[list[int]]:
    """A fresh range() budget for one render; `end_render(token)` afterwards."""
    return _budget.set([MAX_ITERATIONS])


def end_render(token: contextvars.Token[list[int]]) -> None:
    _budget.reset(token)


def bounded_range(*args: int) -> range:
    """`range()` charged against the render's budget: two nested `range(100000)` loops are
    10 ** 10 iterations, though each range is within the sandbox's own bound."""
    rng = range(*args)
    budget = _budget.get(None)
    if budget is not None:
        budget[0] -= len(rng)
        if budget[0] < 0:
            raise SecurityError(f"the template's loops take more than {MAX_ITERATIONS} steps")
    elif len(rng) > MAX_ITERATIONS:
        raise SecurityError(f"range() of more than {MAX_ITERATIONS} items")
    return rng


# ---- regular expressions (the `match` and `search` tests) ----

def compile_regex(pattern: str) -> regex.Pattern[str]:
    return _cached_regex(pattern) if len(pattern) <= _CACHED_PATTERN else regex.compile(pattern)


@functools.lru_cache(maxsize=1024)
def _cached_regex(pattern: str) -> regex.Pattern[str]:
    return regex.compile(pattern)


def regex_find(pattern: str, text: str, *, anchored: bool) -> bool:
    """`match` or `search`, bounded in time: a backtracking pattern (`(a|aa)+$`) on a payload
    value would otherwise run for minutes on the event loop."""
    compiled = compile_regex(pattern)
    try:
        found = (compiled.match(text, timeout=REGEX_TIMEOUT) if anchored
                 else compiled.search(text, timeout=REGEX_TIMEOUT))
    except TimeoutError:
        raise SecurityError(f"the regular expression took longer than {REGEX_TIMEOUT} s "
                            "on this value") from None
    return found is not None


REGEX_ERRORS: tuple[type[Exception], ...] = (regex.error, ValueError, OverflowError)

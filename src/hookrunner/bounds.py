"""What a template may build: bounds on the operations that turn a small input into a huge
string, number or loop, checked before the operation runs.

Templates render on the event loop while a request waits: an unbounded one (`center(2e9)`,
`(10 ** 10000) ** 1000`, two nested `range(100000)` loops, a regex that backtracks for
minutes) would stall every hook and could take gigabytes. The sandbox bounds `range()` alone
and our environment adds `*`; everything here raises `SecurityError`, which fails the render
with a clear reason (an error of that run, or of that condition).
"""

from __future__ import annotations

import contextlib
import contextvars
import fnmatch
import functools
import math
import re
import string
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import regex
from jinja2.exceptions import SecurityError

from hookrunner import overrun

MAX_TEXT = 1_000_000  # longest string or list a template may build, in characters or items
MAX_INT_BITS = 64 * 1024  # largest integer a template may compute (~19,700 digits)
MAX_ITERATIONS = 1_000_000  # loop steps over one render (nested loops multiply)
REGEX_TIMEOUT = 0.05  # seconds one `match`/`search` may take
REGEX_GIL_KEPT = 65536  # characters of text matched without letting go of the GIL
_CACHED_PATTERN = 1000  # longer patterns (a payload may choose one) are compiled, not cached

RENDER_SECONDS = 0.5  # wall-clock time one render may take (checked between operations)
DELIVERY_SECONDS = 1.0  # ... and all the renders of one delivery together (start_delivery)
STEPS = "hookrunner_steps"  # the global every `{% for %}` iterates through (see templating)
CONCAT = "hookrunner_concat"  # the global every `a ~ b` becomes
DELIVERY_LIMIT = f"the delivery's templates took longer than {DELIVERY_SECONDS} s"


class _Render:
    """One render's budget: loop steps left, and when it must have ended."""

    __slots__ = ("clock", "deadline", "limit", "parsed", "steps", "token", "watch")

    def __init__(self) -> None:
        self.steps = MAX_ITERATIONS
        self.parsed = MAX_TEXT  # characters `| from_json` may still read
        self.clock = _clock.get()
        self.deadline = self.clock() + RENDER_SECONDS
        self.limit = f"the template took longer than {RENDER_SECONDS} s"
        shared = _delivery.get(None)
        if shared is not None and shared < self.deadline:
            self.deadline = shared
            self.limit = DELIVERY_LIMIT
        self.watch: overrun.Watch | None = None
        self.token: contextvars.Token[_Render] | None = None

    def check_time(self) -> None:
        if self.clock() > self.deadline:
            raise SecurityError(self.limit)


_render: contextvars.ContextVar[_Render] = contextvars.ContextVar("hookrunner_render")
# The budgets' clock: wall time on the event loop, where a render has the CPU to itself; the
# thread's own CPU time on offload's thread, where waiting for the GIL while the loop serves
# other requests is no work of the rule's (on the wall clock, busy servers failed slow rules
# that matched on an idle one).
_clock: contextvars.ContextVar[Callable[[], float]] = contextvars.ContextVar(
    "hookrunner_clock", default=time.monotonic)


def clock() -> Callable[[], float]:
    """This context's budget clock (see _clock)."""
    return _clock.get()


WAIT_FACTOR = 5  # on that thread, a budget also ends after this many times it in wall time


def use_thread_clock() -> None:
    """Budgets in this context count this thread's CPU time (see _clock), or a WAIT_FACTOR-th
    of the wall time, whichever is more: a delivery's 1 s budget ends after at most 5 s of
    its matching however busy the loop is (deliveries queued behind it on the thread wait
    for it besides)."""
    cpu0, wall0 = time.thread_time(), time.monotonic()

    def thread_clock() -> float:
        return max(time.thread_time() - cpu0, (time.monotonic() - wall0) / WAIT_FACTOR)

    _clock.set(thread_clock)
_delivery: contextvars.ContextVar[float] = contextvars.ContextVar("hookrunner_delivery")


def start_delivery() -> contextvars.Token[float]:
    """Every render until `end_delivery(token)` shares one deadline too: a hook with many
    conditions and templates could otherwise take RENDER_SECONDS for each of them."""
    return _delivery.set(clock()() + DELIVERY_SECONDS)


def end_delivery(token: contextvars.Token[float]) -> None:
    _delivery.reset(token)


@contextlib.contextmanager
def delivery() -> Iterator[None]:
    """`start_delivery`/`end_delivery` around a block, where a call's cost does not matter
    (the CLI; the accept path calls the two itself)."""
    token = start_delivery()
    try:
        yield
    finally:
        end_delivery(token)


def _check_time() -> None:
    state = _render.get(None)
    if state is not None:
        state.check_time()


def _refuse(what: str) -> SecurityError:
    return SecurityError(f"{what} would be too large")


def _check_size(n: int, what: str) -> None:
    if n > MAX_TEXT:
        raise _refuse(what)


def _weight(value: Any, limit: int = MAX_TEXT) -> int:
    """About how many characters `value` is as text: strings their length, containers their
    items' weight (walked only until past `limit`), anything else a number's worth."""
    total, todo = 0, [value]
    while todo and total <= limit:
        item = todo.pop()
        if isinstance(item, str | bytes):
            total += len(item) + 2
        elif isinstance(item, list | tuple):
            total += 2 + len(item)
            todo.extend(item)
        elif isinstance(item, dict):
            total += 2 + 2 * len(item)
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, int) and not isinstance(item, bool):
            total += item.bit_length() * 3 // 10 + 2  # its digits (a payload's: up to 4,300)
        else:
            total += 8
    return total


def _written(value: Any) -> Any:
    """`value` as a filter sees it that writes it out with str() first (Jinja's `replace`,
    `join`, `format`, `urlize`): a list or a number from the payload, not only text, so its
    bound applies to what the filter builds from it. Weighed before it is written."""
    if isinstance(value, str):
        return value
    _check_size(_weight(value), "the written-out value")
    return str(value)


# ---- operators ----

def check_binop(operator: str, left: Any, right: Any) -> None:
    _check_time()
    if operator == "+" and isinstance(left, str | bytes | list | tuple) and type(left) is type(right):
        _check_size(_weight(left) + _weight(right), "the sum")  # `s + s` doubles like `~`
    elif operator == "*" and isinstance(left, int) and isinstance(right, int):
        if abs(left).bit_length() + abs(right).bit_length() > MAX_INT_BITS:
            raise _refuse("the product")
    elif operator == "*":
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, str | bytes | list | tuple) and isinstance(n, int) and n > 1:
                # A list's weight, not its length: `['x' * 10**6] * 10**6` is a terabyte of
                # text once written out, though a million items.
                _check_size((len(seq) if isinstance(seq, str | bytes) else _weight(seq)) * n,
                            "the repetition's result")
    elif (operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0
          and abs(left) > 1 and right * math.log2(abs(left)) > MAX_INT_BITS):
        # |left| ** right has about right * log2|left| bits: refuse before computing it.
        raise _refuse("the power's result")  # (not the operand: it may be too long to print)
    elif operator == "%" and isinstance(left, str):
        _check_percent_format(left, right)


def _check_percent_format(fmt: str, values: Any = ()) -> None:
    """Each `%` conversion's width and precision, read as CPython does (a `%(key)` may hold
    nested parentheses, so a regex cannot find where the key ends), and all of them together,
    with the value each writes (`values`: a dict, a tuple, or one value): `'%(a)999999d' *
    1000` is a billion characters of small widths, `'%(a)s' * 100` a hundred copies of `a`."""
    i, end, total = 0, len(fmt), len(fmt)
    positional = list(values) if isinstance(values, tuple | list) else (
        [] if isinstance(values, dict) else [values])
    while (i := fmt.find("%", i)) != -1:
        i += 1
        if i < end and fmt[i] == "%":
            i += 1
            continue
        if i < end and fmt[i] == "(":
            depth, key_start = 1, i + 1
            i += 1
            while i < end and depth:
                depth += {"(": 1, ")": -1}.get(fmt[i], 0)
                i += 1
            if isinstance(values, dict):
                total += _weight(values.get(fmt[key_start:i - 1]))
        elif positional:
            total += _weight(positional.pop(0))
        while i < end and fmt[i] in "#0- +":
            i += 1
        for _ in ("width", "precision"):
            start = i
            while i < end and (fmt[i].isdigit() or fmt[i] == "*"):
                i += 1
            number = fmt[start:i]
            if "*" in number:
                raise SecurityError("a '*' width in a % format is not allowed")
            if number and int(number) > MAX_TEXT:
                raise _refuse(f"a width of {number}")
            total += int(number or 0)
            _check_size(total, "the formatted text")
            if i < end and fmt[i] == ".":
                i += 1
            else:
                break
        i += 1  # the conversion character (a `%%` included)


def _check_format(fmt: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """`str.format`, read once: no width past MAX_TEXT, none taken from an argument, and the
    result in all: the literal text, and each field the larger of its width and the value
    it names (`'{0}{0}{0}'` three times its argument; `'{0:999999}' * 1000` small widths, a
    billion characters)."""
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # format() will say what is wrong with it
    total, auto = len(fmt), 0
    for _, name, spec, _ in fields:
        width = 0
        if spec:
            if "{" in spec:
                raise SecurityError("a nested {} in a format spec is not allowed")
            for n in re.findall(r"\d+", spec):
                if int(n) > MAX_TEXT:
                    raise _refuse(f"a width of {n}")
                width += int(n)
        if name is None:
            total += width
        else:
            head = re.split(r"[.\[]", name, maxsplit=1)[0]
            if head == "":
                value, auto = (args[auto] if auto < len(args) else None), auto + 1
            elif head.isdigit():
                value = args[int(head)] if len(head) < 9 and int(head) < len(args) else None
            else:
                value = kwargs.get(head)
            total += max(width, _weight(value))
        _check_size(total, "the formatted text")


# ---- str methods and filters ----

def _width_arg(args: tuple[Any, ...], kwargs: Mapping[str, Any], name: str, pos: int = 0) -> Any:
    return args[pos] if len(args) > pos else kwargs.get(name)


def check_call(obj: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[Any, ...]:
    """Checks a call from a template; the arguments to make it with (a generator given to
    `str.join` is drawn here, under the bound, as the `join` filter's is)."""
    _check_time()
    if (args and getattr(obj, "__name__", "") == "join"
            and isinstance(getattr(obj, "__self__", None), str | bytes)):
        args = (_drawn(args[0], len(obj.__self__)), *args[1:])
    _check_str_method(obj, args, kwargs)
    return args


def _check_str_method(obj: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """A call of a bound `str` (or `bytes`) method from a template (`'x'.center(10 ** 9)`).
    The sandbox hands out `str.format` wrapped; the bound method is its `__wrapped__`."""
    owner = getattr(getattr(obj, "__wrapped__", obj), "__self__", None)
    if isinstance(owner, int) and getattr(obj, "__name__", "") == "to_bytes":
        length = _width_arg(args, kwargs, "length")  # `(1).to_bytes(1500000000, 'big')`
        if isinstance(length, int):
            _check_size(length, f"to_bytes({length})")
        return
    if not isinstance(owner, str | bytes):
        return
    name = getattr(obj, "__name__", "")
    if name in ("center", "ljust", "rjust", "zfill"):
        width = _width_arg(args, kwargs, "width")
        if isinstance(width, int):
            _check_size(width, f"{name}({width})")
    elif name == "expandtabs":
        size = _width_arg(args, kwargs, "tabsize")
        if isinstance(size, int):
            tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
            _check_size(tabs * size + len(owner), "expandtabs()")
    elif name == "replace" and len(args) >= 2:
        _check_replace(owner, args[0], args[1], args[2] if len(args) > 2 else -1)
    elif name == "join" and args:
        _check_join(owner, args[0])
    elif name in ("format", "format_map") and isinstance(owner, str):
        if name == "format_map":
            _check_format(owner, (), args[0] if args and isinstance(args[0], dict) else {})
        else:
            _check_format(owner, args, kwargs)
    elif name == "translate" and args and isinstance(args[0], dict | list | tuple):
        # A list or tuple is a table too (indexed by code point): `[big]` maps NUL to big.
        table = args[0].values() if isinstance(args[0], dict) else args[0]
        longest = max((_weight(v) for v in table), default=1)
        _check_size(len(owner) * longest, "translate()'s result")


def _check_replace(text: Any, old: Any, new: Any, count: Any = -1) -> None:
    if not (isinstance(text, str | bytes) and type(old) is type(text) and type(new) is type(text)):
        return
    same_kind: Any = text  # str with str, bytes with bytes (checked just above)
    hits = same_kind.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    _check_size(len(text) + hits * (len(new) - len(old)), "replace()'s result")


def _drawn(items: Any, separator: int) -> Any:
    """What is to be joined, as a list: a generator (`|map('replace', '', big)`) weighed item by
    item as it is drawn, each item possibly far bigger than what it was made from."""
    if isinstance(items, list | tuple | str | dict):
        return items
    drawn, total = [], 0
    for item in items:
        total += _weight(item) + separator
        _check_size(total, "join()'s result")
        drawn.append(item)
    return drawn


def _check_join(separator: Any, items: Any) -> None:
    if not isinstance(items, list | tuple):
        return  # a string or a dict: no bigger than itself
    sep = len(separator) if isinstance(separator, str | bytes) else len(_written(separator))
    total = sep * max(0, len(items) - 1)
    for item in items:
        total += _weight(item)
        _check_size(total, "join()'s result")


def _bounded_filter(check: Callable[..., None], filter_: Callable[..., Any]) -> Any:
    @functools.wraps(filter_)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _check_time()
        check(*args, **kwargs)
        return filter_(*args, **kwargs)

    return bounded


def _center(value: Any, width: Any = 80, *_: Any, **__: Any) -> None:
    if isinstance(width, int):
        _check_size(width, f"center({width})")
    _stringified(value)


def _stringified(value: Any, *_: Any, **__: Any) -> None:
    """A filter that writes a value that is not text out with str() first (`upper`, `trim`,
    `escape`, `safe`, ...): a dict of one big string many times over is cheap to hold and
    huge once written. Text passes as it is (their results are about its size)."""
    if not isinstance(value, str):
        _check_size(_weight(value), "the written-out value")


def _xmlattr(eval_ctx: Any, value: Any, *_: Any, **__: Any) -> None:
    _stringified(value)


def _indent(value: Any, width: Any = 4, *_: Any, **__: Any) -> None:
    if isinstance(width, str):
        width = len(width)
    if isinstance(width, int):  # (`" " * width` is built first, whatever `value` is)
        _check_size(width, f"indent({width})")
    if isinstance(width, int) and isinstance(value, str):
        _check_size(len(value) + (value.count("\n") + 1) * width, "indent()'s result")


def _replace(eval_ctx: Any, value: Any, old: Any, new: Any, count: Any = None) -> None:
    _check_replace(_written(value), _written(old), _written(new), -1 if count is None else count)


def _join(eval_ctx: Any, value: Any, d: Any = "", attribute: Any = None) -> None:
    if attribute is not None and isinstance(value, list | tuple):
        path = str(attribute).split(".")
        value = [_item_at(v, path) for v in value]
    _check_join(d, value)


def _bounded_join(join: Callable[..., Any]) -> Callable[..., Any]:
    """`join` of a generator (`|map('replace', '', big)|join`) is weighed item by item as it
    is drawn, not after: each item may be far bigger than what it was made from."""
    @functools.wraps(join)
    def bounded(eval_ctx: Any, value: Any, d: Any = "", attribute: Any = None) -> Any:
        _check_time()
        value = _drawn(value, len(_written(d)))
        _join(eval_ctx, value, d, attribute)
        return join(eval_ctx, value, d, attribute)

    return bounded


def _sum(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> None:
    if not isinstance(start, int | float):
        # Summing lists or strings copies the total at each step: quadratic, in C.
        raise SecurityError("sum() of lists or strings is not available; use join or batch")


def _serialized(value: Any, *_: Any, **__: Any) -> None:
    """`|string`, `|tojson`, `|pprint`: a nested list of one big string is cheap to hold (the
    same string many times) and huge once written out."""
    _check_size(_weight(value), "the written-out value")


def _item_at(value: Any, path: list[str]) -> Any:
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _wordwrap(environment: Any, s: Any, width: Any = 79, break_long_words: Any = True,
              wrapstring: Any = None, *_: Any, **__: Any) -> None:
    if isinstance(s, str) and isinstance(wrapstring, str) and isinstance(width, int):
        _check_size(len(s) + (len(s) // max(1, width) + 1) * len(wrapstring), "wordwrap()")


def _format(value: Any, *args: Any, **kwargs: Any) -> None:
    # (Jinja's: the value written out; keywords are a dict, else the arguments a tuple)
    _check_percent_format(_written(value), dict(kwargs) if kwargs else tuple(args))


def _tojson(environment: Any, value: Any, indent: Any = None, *_: Any, **__: Any) -> None:
    """`| tojson(indent=100000)`: each item's line is indented, a level deeper each nesting."""
    width = len(indent) if isinstance(indent, str) else indent if isinstance(indent, int) else 0
    weight = _weight(value)
    _check_size(weight, "the written-out value")
    if width > 0:
        items, depth = _shape(value)
        _check_size(weight + items * (depth * width + 1), "the written-out value")


def _shape(value: Any) -> tuple[int, int]:
    """How many items `value` holds in all, and how deeply they nest (walked only until past
    MAX_TEXT items)."""
    items, deepest, todo = 0, 0, [(value, 1)]
    while todo and items <= MAX_TEXT:
        item, depth = todo.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list | tuple):
            items += len(item)
            deepest = max(deepest, depth)
            todo.extend((v, depth + 1) for v in item)
    return items, deepest


def _urlize(eval_ctx: Any, value: Any, trim_url_limit: Any = None, nofollow: Any = False,
            target: Any = None, rel: Any = None, extra_schemes: Any = None) -> None:
    """Each word of `value` may become a link carrying `target` and `rel`."""
    value = _written(value)
    if isinstance(value, str):  # each word that may be a link: a `.`, `@` or `:` in it
        extra = sum(len(x) for x in (target, rel) if isinstance(x, str)) + 64
        links = sum(1 for word in value.split() if "." in word or "@" in word or ":" in word)
        _check_size(3 * len(value) + links * extra, "urlize()'s result")


def _batch(value: Any, linecount: Any, fill_with: Any = None) -> None:
    if isinstance(linecount, int):
        _check_size(linecount, f"batch({linecount})")


def _slice(value: Any, slices: Any, fill_with: Any = None) -> None:
    if isinstance(slices, int):
        _check_size(slices, f"slice({slices})")


def _from_json(value: Any, *_: Any, **__: Any) -> None:
    """The JSON one render parses, in all: its values take ~20 times their text's memory,
    and a template may call the filter many times on one large field."""
    state = _render.get(None)
    if state is not None and isinstance(value, str):
        state.parsed -= len(value)
        if state.parsed < 0:
            raise SecurityError(f"`| from_json` of more than {MAX_TEXT} characters in one "
                                "template would be too large")


_FILTER_CHECKS: dict[str, Callable[..., None]] = {
    "center": _center, "indent": _indent, "replace": _replace,
    "format": _format, "batch": _batch, "slice": _slice, "wordwrap": _wordwrap, "sum": _sum,
    "string": _serialized, "pprint": _serialized, "from_json": _from_json, "urlize": _urlize,
    "tojson": _tojson, "xmlattr": _xmlattr,
    **dict.fromkeys(("safe", "escape", "e", "forceescape", "trim", "striptags", "upper", "lower",
                     "title", "capitalize", "wordcount", "urlencode"), _stringified),
}


def bounded_filters(filters: Mapping[str, Any]) -> dict[str, Any]:
    """The filters that can build a large value from small inputs, each checked first."""
    bounded = {name: _bounded_filter(check, filters[name])
               for name, check in _FILTER_CHECKS.items() if name in filters}
    bounded["join"] = _bounded_join(filters["join"])  # it replaces a generator by a list
    return bounded


def check_written(value: Any) -> None:
    """A value about to be written out as text (JSON): refused past MAX_TEXT."""
    if isinstance(value, str | bytes):  # (a single `{{ value }}`)
        _check_size(len(value), "the rendered text")
    elif isinstance(value, list | tuple | dict | set | frozenset):
        _check_size(_weight(value), "the written-out value")


MAX_SPEC = 16 * MAX_TEXT  # a rendered action, all its values together (it is stored)


def check_spec(spec: Any) -> None:
    """A rendered action: each value is bounded, but an action may have many (an argv)."""
    if _weight(spec, MAX_SPEC) > MAX_SPEC:
        raise _refuse(f"the rendered action (over {MAX_SPEC} characters in all)")


# ---- loops ----

def start_render() -> _Render:
    """A fresh budget for one render. The render's `finally` must, before any call, set
    `state.watch.done = True` where there is a watch (hookrunner.overrun says why), then
    call `end_render(state)`, within the render's error handling: it raises the render's
    SecurityError where the watchdog cut it short."""
    state = _Render()
    state.watch = overrun.WATCHDOG.arm(max(0.0, state.deadline - state.clock()), state.limit)
    state.token = _render.set(state)
    return state


def end_render(state: _Render) -> None:
    try:
        if state.token is not None:
            _render.reset(state.token)
    finally:  # (also where an interruption lands just now)
        if state.watch is not None:
            overrun.WATCHDOG.disarm(state.watch)


def steps(iterable: Any) -> Iterator[Any]:
    """What a `{% for %}` loops over, each item charged against the render's budget: two
    nested loops over 100,000 items are 10 ** 10 steps, though each list is small enough.
    Every step also looks at the clock: a step may do a lot (a regex, a big `upper()`)."""
    state = _render.get(None)
    if state is None:
        raise SecurityError("a loop outside a render")  # every render sets its budget
    for item in iterable:
        state.steps -= 1
        if state.steps < 0:
            raise SecurityError(f"the template's loops take more than {MAX_ITERATIONS} steps")
        state.check_time()
        yield item


def concat(*parts: Any, write: Callable[[Any], str] = str) -> str:
    """`a ~ b ~ ...`, each part written as text by `write`, refused past MAX_TEXT: weighed
    before any part is written out (a nested list of one big string is small until then)."""
    _check_time()
    _check_size(sum(map(_weight, parts)), "the joined text (~)")
    return "".join(p if isinstance(p, str) else write(p) for p in parts)


def joined(pieces: Iterable[str]) -> str:
    """A render's output pieces, joined, refused once past MAX_TEXT (each piece is bounded,
    but a loop can yield a million of them)."""
    out: list[str] = []
    total = 0
    for piece in pieces:
        total += len(piece)
        if total > MAX_TEXT:
            raise _refuse("the rendered text")
        out.append(piece)
    return "".join(out)


# ---- regular expressions (the `match` and `search` tests) ----

MAX_PATTERN = 10_000  # characters of a pattern (a 690 KB alternation compiled for 8 s)
MAX_PATTERN_PARTS = 100_000  # what its counted repeats expand to (below: ~50 ms, ~13 MB)
_CACHED_COMPILE = 0.002  # seconds: patterns compiled faster are kept compiled (small ones)
_CACHE_SIZE = 128
_compiled: dict[str, regex.Pattern[str]] = {}
_compiled_lock = threading.Lock()  # (the event loop's and the match thread's renders)


def compile_regex(pattern: str, longest: int = MAX_PATTERN) -> regex.Pattern[str]:
    """`pattern` compiled, refused where compiling it would take long or much memory: a
    pattern from the payload (`is search(payload.p)`) of 17 characters, `(?:a{2000}){2000}`,
    held the event loop for seconds (a compile holds the GIL) and kept 550 MB cached.
    `longest`: its most characters (a glob's translation is longer than the glob)."""
    compiled = _compiled.get(pattern)
    if compiled is not None:
        return compiled
    if len(pattern) > longest:
        raise SecurityError(f"a regular expression of more than {MAX_PATTERN} characters is "
                            "not compiled")
    parts = _expanded(pattern)
    if _FOLDED.search(pattern):  # case-insensitive: each letter is several (`ß` is `ss` too)
        parts *= 3
    if parts > MAX_PATTERN_PARTS:
        raise SecurityError(f"the regular expression's counted repeats ({{n}}, {{n,m}}) make "
                            f"about {parts} parts, more than the {MAX_PATTERN_PARTS} compiled")
    started = time.perf_counter()
    # Not into `regex`'s own cache either (500 patterns, each as large as it is).
    compiled = regex.compile(pattern, cache_pattern=False)
    if time.perf_counter() - started <= _CACHED_COMPILE and len(pattern) <= _CACHED_PATTERN:
        with _compiled_lock:
            while len(_compiled) >= _CACHE_SIZE:
                del _compiled[next(iter(_compiled))]
            _compiled[pattern] = compiled
    return compiled


_FOLDED = re.compile(r"\(\?[a-zA-Z]*[ifIF]")  # an inline flag that folds case
# A count may hold spaces where the pattern is verbose (`(?x)a{2 000}` is a{2000}).
_COUNT = re.compile(r"\{\s*(\d[\d\s]*)?(?:(,)\s*(\d[\d\s]*)?)?\}")


def _expanded(pattern: str) -> int:
    """About how many parts `regex` builds for `pattern`: a counted repeat copies what it
    repeats, and nested ones multiply (an upper bound: alternatives add up, and `*`, `+`
    loop rather than copy)."""
    groups = [[0, 0]]  # per open group: [its parts so far, the parts of its last item]
    i, end = 0, len(pattern)
    while i < end:
        c, item = pattern[i], 1
        if c == "\\":
            i += 2
        elif c == "[":  # a class is one part, whatever is in it
            i += 1
            i += pattern[i:i + 1] == "^"
            i += pattern[i:i + 1] == "]"
            while i < end and pattern[i] != "]":
                i += 2 if pattern[i] == "\\" else 1
            i += 1
        elif c == "(":
            groups.append([0, 0])
            i += 1
            continue
        elif c == ")" and len(groups) > 1:
            total, last = groups.pop()
            item = total + last
            i += 1
        elif c == "{" and (m := _COUNT.match(pattern, i)) and (m.group(1) or m.group(3)):
            digits = max("".join((m.group(1) or "0").split()),
                         "".join((m.group(3) or "0").split()), key=lambda d: (len(d), d))
            count = int(digits) if len(digits) <= 9 else 10 ** 9
            groups[-1][1] *= max(1, count)
            i = m.end()
            continue
        else:
            i += 1
        top = groups[-1]
        top[0] += top[1]
        top[1] = item
    while len(groups) > 1:  # a group left open: regex will say so
        total, last = groups.pop()
        groups[-1][1] += total + last
    return groups[0][0] + groups[0][1]


def glob_find(pattern: str, text: str) -> bool:
    """`glob`, as `fnmatch.fnmatchcase` decides it, with the bounds and cache of `match`:
    fnmatch's own cache keeps 32,768 compiled patterns, each as large as a payload makes it
    (`is glob(payload.p)`: 3 MB for one of 50,000 characters, kept for good)."""
    translated = glob_regex(pattern)
    return regex_find(translated, text, anchored=True, longest=len(translated))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def glob_regex(pattern: str) -> str:
    """fnmatch's translation, for `regex`: a `[:` there is `[` and `:` as `re` reads it (in a
    set, `[a[:digit:]]`, fnmatch leaves it as written, and `regex` would begin a POSIX class
    there; elsewhere translate escaped the `[`, and an escaped `:` is a `:`)."""
    if len(pattern) > MAX_PATTERN:
        raise SecurityError(f"a glob pattern of more than {MAX_PATTERN} characters is not "
                            "compiled")
    return fnmatch.translate(pattern).replace("[:", "[\\:")


def regex_find(pattern: str, text: str, *, anchored: bool, longest: int = MAX_PATTERN) -> bool:
    """`match` or `search`, bounded in time: a backtracking pattern (`(a|aa)+$`) on a payload
    value would otherwise run for minutes on the event loop."""
    compiled = compile_regex(pattern, longest)
    # Within a render, its deadline; outside one (fastclause decides a clause without a
    # render), the delivery's: 100 rules of a backtracking pattern took 50 ms each, 6 s.
    state = _render.get(None)
    deadline = state.deadline if state is not None else _delivery.get(None)
    limit = REGEX_TIMEOUT
    if deadline is not None:
        now = (state.clock if state is not None else clock())()
        limit = min(REGEX_TIMEOUT, max(0.001, deadline - now))
    # `regex` lets go of the GIL while it matches a str; on the event loop, getting it back
    # waits for the thread that took it (~20 us measured, for a 1 us match). A long text
    # still lets go: the store's writer may work meanwhile.
    concurrent = len(text) > REGEX_GIL_KEPT
    try:
        found = (compiled.match(text, timeout=limit, concurrent=concurrent) if anchored
                 else compiled.search(text, timeout=limit, concurrent=concurrent))
    except TimeoutError:
        if limit < REGEX_TIMEOUT:  # the render's or the delivery's own time ran out: say that
            if state is not None:
                state.check_time()
            elif deadline is not None and clock()() > deadline:
                raise SecurityError(DELIVERY_LIMIT) from None
        raise SecurityError(f"the regular expression took longer than {REGEX_TIMEOUT} s "
                            "on this value") from None
    return found is not None


REGEX_ERRORS: tuple[type[Exception], ...] = (regex.error, ValueError, OverflowError)

"""The one sandboxed Jinja2 environment, and templates/expressions compiled once at load.

- `compile_expression(text)`: a `when` condition; `render(scope)` returns its native value.
- `compile_template(text)`: a string of `run`, `dedup` or a concurrency `key`. A string that is
  exactly one `{{ expr }}` renders to the expression's native value (`"{{ payload.replicas }}"`
  stays an int); a string without `{{`, `{%` or a whole `{# comment #}` is a constant;
  anything else renders to a string.
- Payload values are data: Jinja never re-renders a value, so a payload `{{ 7*7 }}` stays literal.
- Every render failure (undefined name, sandbox refusal, bad types) raises `TemplateError`;
  every compile failure raises `ConfigError` (no file/line: the loader adds them).
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import functools
import ipaddress
import json
import math
import re
import sys
from collections.abc import Iterator, Mapping, MappingView
from typing import Any, TypeVar, cast

import jinja2
from jinja2 import nodes
from jinja2.environment import TemplateExpression
from jinja2.exceptions import SecurityError
from jinja2.filters import do_urlencode
from jinja2.parser import Parser
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from hookrunner import bounds, clientip
from hookrunner.errors import ConfigError, TemplateError
from hookrunner.fastclause import ABSENT, DICT_ATTRS, FastPath, compile_fast, compile_path
from hookrunner.payload import UNSTORABLE, PayloadError, as_storable, parse_json
from hookrunner.redact import secret_key
from hookrunner.verify.base import Headers

__all__ = [
    "ENV", "MISSING", "Clause", "Constant", "Expression", "Template", "compile_expression",
    "compile_template", "render_tree", "to_plain",
]

MAX_DIGITS = 4300  # Python writes no longer int (sys.get_int_max_str_digits): JSON, argv, ...
_MAX_INT = 10**MAX_DIGITS - 1
_SINGLE_EXPR = re.compile(r"^\{\{-?(.*?)-?\}\}$", re.DOTALL)
# Useless here, and classic footholds: escapes, or (namespace) a value doubled in a loop.
_REFUSED_GLOBALS = ("cycler", "joiner", "lipsum", "namespace")


@functools.lru_cache(maxsize=1024)
def _network(net: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(net, strict=False)


def _text(value: Any, test: str) -> str | None:
    """The string a text test looks at: strings and numbers; null, a boolean or a missing value
    never matches. A list or an object is an error: `payload.tags is glob("prod*")` was
    silently false where the author meant any of its items."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list | tuple | Mapping):
        kind = "an object" if isinstance(value, Mapping) else "a list"
        raise Explained(f"`is {test}` tests text, and this value is {kind}: test its items, "
                         f"`| select(\"{test}\", ...) | list`")
    return None


def _test_match(value: Any, pattern: str) -> bool:
    text = _text(value, "match")
    return text is not None and bounds.regex_find(pattern, text, anchored=True)


def _test_search(value: Any, pattern: str) -> bool:
    text = _text(value, "search")
    return text is not None and bounds.regex_find(pattern, text, anchored=False)


def _test_glob(value: Any, pattern: str) -> bool:
    text = _text(value, "glob")
    return text is not None and bounds.glob_find(pattern, text)


def _test_in_cidr(value: Any, net: str | list[str]) -> bool:
    nets = [net] if isinstance(net, str) else list(net)
    if isinstance(value, jinja2.Undefined):
        # A missing (or misspelt) field is an error, as the README says, not simply false:
        # a deny rule's `not payload.ip is in_cidr(...)` matched every delivery without one.
        value._fail_with_undefined_error()
    text = _text(value, "in_cidr")
    if text is None:
        return False
    text = text.strip()
    if _SEPARATED.search(text):
        # `X-Forwarded-For: 203.0.113.9, 10.0.0.1` was silently in no network, and a deny
        # rule's `not ... is in_cidr(...)` let it through (the client writes the left items).
        raise Explained("`is in_cidr` tests one address, and this value holds several items "
                        "(a `,`, `;` or space between them): test its items, `....split(\",\") "
                        "| map(\"trim\") | select(\"in_cidr\", ...) | list`")
    if len(text) > _LONGEST_ADDRESS:  # a sender's megabyte of text is not one address
        return False
    try:  # as allow_ips reads one: `a.b.c.d:port`, `[v6]:port`, `::ffff:a.b.c.d`
        addr = ipaddress.ip_address(clientip.hop(text))
    except ValueError:
        return False  # not an address: not in any network
    return any(addr in _network(n) for n in nets)


# An IPv6 address with a zone and a port (`[fe80::1%eth0]:443`) is about the longest one.
_LONGEST_ADDRESS = 64
_SEPARATED = re.compile(r"[,;\s]")


class _Environment(ImmutableSandboxedEnvironment):
    # Intercepted, so each is checked (hookrunner.bounds); `%` also is never folded at compile
    # time then (`'%999999999d' % 1` built a gigabyte in `check`).
    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        bounds.check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        args = bounds.check_call(__obj, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        # `x.encode()` gives bytes, which no JSON holds: an argument got Python's `b'...'`.
        if attr == "encode" and isinstance(obj, str):
            return False
        return super().is_safe_attribute(obj, attr, value)

    def getattr(self, obj: Any, attribute: str) -> Any:
        # `payload.ref` on a JSON object: the sandbox tries the attribute first and reaches
        # the key through a caught AttributeError (~1 us each): the key is taken directly.
        # A key wins over a dict method of its name too: Jira's `changelog.items` is the
        # list, not `dict.items` (which `payload.items` still is where there is no such key).
        if type(obj) is dict:
            try:
                return obj[attribute]
            except (KeyError, TypeError):
                pass
        return super().getattr(obj, attribute)


# One instance: json.dumps with options builds an encoder per call (~5 us, twice a delivery).
_JSON = json.JSONEncoder(ensure_ascii=False, default=str)
_JSON_TEXT = json.encoder.encode_basestring  # what _JSON.encode does with a str


# Set while a hook's `dedup` renders: a `{{ }}` giving null (a field this event lacks or
# leaves null) would make one key of every such event, and drop all but the first.
_NULL_PART_FAILS: contextvars.ContextVar[bool] = contextvars.ContextVar("null_fails",
                                                                         default=False)


@contextlib.contextmanager
def null_parts_fail() -> Iterator[None]:
    token = _NULL_PART_FAILS.set(True)
    try:
        yield
    finally:
        _NULL_PART_FAILS.reset(token)


def _finalize(value: Any) -> Any:
    """Each `{{ }}` of a longer template, before it becomes text.

    A function is never a value: rendering one would print its repr (a memory address).
    JSON's other values print as JSON (`true`, `null`, `{"a": 1}`), as they do where a
    whole-value template becomes an argument (`actions.values.stringify`), rather than as
    Python's `True`, `None`, `{'a': 1}`."""
    if type(value) is str:  # the commonest by far: past the checks below (~0.6 us)
        return value
    if value is None and _NULL_PART_FAILS.get():
        raise ValueError("a {{ }} of it renders null (a field this event lacks or leaves "
                         "null): one key for every such event would drop all but the first")
    if isinstance(value, Headers):
        value = value.as_dict()
    if value is None or isinstance(value, bool | dict | list) or _sequence_like(value):
        bounds.check_written(value)
        return _JSON.encode(to_plain(value))
    if isinstance(value, int):
        _check_int(value)
    return _refuse_callables(value)


def as_text(value: Any) -> str:
    """A value as text, as `{{ }}` writes it (`_finalize`): JSON's values as JSON."""
    written = _finalize(value)
    return written if isinstance(written, str) else str(written)


def _spelled(value: Any) -> Any:
    """JSON's `null`, `true`, objects and lists as JSON text, where `str()` would write
    Python's `None`, `True`, `{'a': 1}`."""
    return as_text(value) if value is None or isinstance(value, bool | dict | list) \
        or _sequence_like(value) else value


def _urlencode(value: Any) -> str:
    """Jinja's, with JSON's spelling for values (`?v=null`, not `None`). A mapping, or a list
    of [name, value] pairs (a name may repeat: `tag=a&tag=b`), else one value; a list of
    anything else says what it takes (Jinja's "cannot unpack non-iterable int" did not)."""
    if isinstance(value, Headers):
        value = value.as_dict()
    if isinstance(value, Mapping):
        value = value.items()
    if isinstance(value, list | tuple) or _sequence_like(value):
        pairs = list(value)
        if not all(isinstance(p, list | tuple) and len(p) == 2 for p in pairs):
            raise ValueError("urlencode takes text, a mapping, or a list of [name, value] "
                             "pairs; for a list as JSON text: `| tojson | urlencode`")
        return str(do_urlencode([(_spelled(k), _spelled(v)) for k, v in pairs]))
    return str(do_urlencode(_spelled(value)))


def _sequence_like(value: Any) -> bool:
    """What Jinja's filters and Python hand back for a list: `map`/`select`/`unique`/`reverse`
    give generators, `(1, 2)` a tuple, `range()` a range, `d.keys()` a view. Written as a
    JSON list, never as `<generator object ...>` (a memory address) or `dict_keys([...])`."""
    return isinstance(value, tuple | set | frozenset | range | Iterator | MappingView)


def _check_int(value: int) -> None:
    if value.bit_length() >= _MAX_INT.bit_length() and abs(value) > _MAX_INT:
        raise ValueError(f"a number of more than {MAX_DIGITS} digits cannot be written out")


def _refuse_callables(value: Any) -> Any:
    if callable(value) and not isinstance(value, jinja2.Undefined):
        raise SecurityError(f"{getattr(value, '__name__', 'object')} is a function, not a value")
    return value


class _Undefined(jinja2.StrictUndefined):
    """Strict: a missing value is an error that names it, so a typo shows (a path through
    it too: a lenient one let `payload.typo.x is not none` match every delivery).

    Jinja names a missing key of one of our objects by its module path ("'hookrunner.verify
    .base.Headers object' has no attribute 'X-Foo'"); such a class says it plainly instead,
    through its `missing_message` (a format string taking the name)."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        missing = getattr(type(self._undefined_obj), "missing_message", None)
        if isinstance(missing, str) and isinstance(self._undefined_name, str):
            return missing.format(self._undefined_name)
        message: str = super()._undefined_message
        return message


_CASE_FILTERS = ("upper", "lower", "title", "capitalize")


def _not_of_null(name: str, fn: Any) -> Any:
    """`| upper` of null made "NONE" (`deploy.sh NONE`): an error that says to give a default."""
    @functools.wraps(fn)
    def wrapped(value: Any, *args: Any, **kwargs: Any) -> Any:
        if value is None:
            raise Explained(f"`| {name}` of null (a field that is null): give a default first, "
                             f"`| default(\"\", true) | {name}`")
        return fn(value, *args, **kwargs)
    return wrapped


_NO_DEFAULT: Any = object()  # `| int` / `| float` given no default of the author's


def _shown(value: Any) -> str:
    """A value a filter refused, as its message names it: text quoted (cut), else its kind."""
    return repr(value)[:80] if isinstance(value, str) else (_json_kind(value) or type(value).__name__)


def _not_a_number(name: str, value: Any) -> Explained:
    zero = "0" if name == "int" else "0.0"
    return Explained(f"`| {name}` of {_shown(value)}: not a number. Give the number to use then, "
                     f"`| {name}({zero})` (Jinja's silent default), or test the value first")


def _int_of(do_int: Any) -> Any:
    """`| int` of a number Python will not read (more than 4,300 digits) gave its default,
    0, in silence: `replicas: "{{ payload.replicas | int }}"` scaled to zero. So did text
    that is no number (`"six"`, `""`, a label not set): an error now, unless the rule gives
    the default itself (`| int(0)`)."""
    @functools.wraps(do_int)
    def checked(value: Any, default: Any = _NO_DEFAULT, base: Any = 10) -> Any:
        limit = sys.get_int_max_str_digits()  # (0: no limit; bases 2, 4, ... 32 have none)
        if isinstance(value, str) and limit and base not in (2, 4, 8, 16, 32):
            digits = value.strip().lstrip("+-").replace("_", "")
            if len(digits) > limit and digits.isdigit():
                raise Explained(f"`| int` of a number of {len(digits)} digits: at most "
                                f"{limit} are read")
        result = do_int(value, _NO_DEFAULT, base)
        if result is _NO_DEFAULT:
            if default is _NO_DEFAULT:
                raise _not_a_number("int", value)
            return default
        return result
    return checked


def _float_of(do_float: Any) -> Any:
    """`| float` of text that is no number gave 0.0 in silence: see _int_of."""
    @functools.wraps(do_float)
    def checked(value: Any, default: Any = _NO_DEFAULT) -> Any:
        result = do_float(value, _NO_DEFAULT)
        if result is _NO_DEFAULT:
            if default is _NO_DEFAULT:
                raise _not_a_number("float", value)
            return default
        return result
    return checked


# Text that reads as a yes or a no: the words YAML 1.1, Ansible's `bool` and most senders
# use (Grafana's and Alertmanager's labels are always text).
_TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
_FALSE_WORDS = frozenset({"false", "no", "off", "0"})


def _boolean_word(value: Any) -> bool | None:
    """True or False where `value` is text that reads as one, else None."""
    if isinstance(value, str) and len(value) <= 16:  # (a long text is no such word)
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    return None


def _to_bool(value: Any) -> bool:
    """`payload.apply_infra | bool`: a boolean as senders write one, strictly (Ansible's
    `bool` calls every other text false, so a typo'd "treu" quietly skipped a deploy)."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    if value is None or isinstance(value, bool) or value == "":  # ("": not set, as null)
        return bool(value)
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    word = _boolean_word(value)
    if word is None:
        raise Explained(f"`| bool` reads true/false, yes/no, on/off or 1/0 (or a JSON "
                        f"boolean, null or \"\"), and this value is {_shown(value)}")
    return word


def _truth_problem(value: Any) -> str | None:
    """Why `value` cannot be taken as true or false, or None."""
    if callable(value) and not isinstance(value, jinja2.Undefined):
        # `payload.keys` of a payload without `keys` is the mapping's method: it held for
        # every delivery. A key named like a method (keys, items, get, ...) takes brackets.
        name = getattr(value, "__name__", "")
        hint = f": a key named like a method takes brackets, [{name!r}], not .{name}" if name else ""
        return f"a function, not a value{hint}"
    if isinstance(value, Iterator) and not isinstance(value, str | bytes):
        # (select, map and the like give lists: see _as_list)
        return ("items given one at a time (what unique, batch, slice, reverse or items "
                "give), true even where there are none: add `| list`")
    if _boolean_word(value) is not None:
        # Any text but "" holds, so `payload.apply_infra | default(false)` applied for a
        # sender's "false": which the author meant is theirs to write.
        number = " or `| int`, or test that it is set (!= \"\")" if value.strip() in ("0", "1") else ""
        return (f"the text {value!r}, not a boolean, and every text but \"\" counts as "
                f"true: compare it (== \"{value}\") or convert it (| bool){number}")
    return None


# Jinja's give an iterator, true even when it yields nothing: `when: payload.alerts |
# selectattr(...)` held for every alert group, and `| length` of one was a TypeError.
# Ansible makes them lists; so do we, so a selection kept in a variable can be used twice.
_LIST_FILTERS = ("map", "select", "reject", "selectattr", "rejectattr")


def _as_list(filter_fn: Any) -> Any:
    @functools.wraps(filter_fn)  # (keeps Jinja's pass_context mark)
    def listed(*args: Any, **kwargs: Any) -> Any:
        return list(filter_fn(*args, **kwargs))
    return listed


_TESTED = "hookrunner_tested"  # the filter _Bounded's rewrite applies _tested by


def _tested(value: Any) -> bool:
    """A value in a yes/no place inside a template or condition (`not x`, `{% if x %}`,
    `x and y` of a condition): its truth, checked as a condition's value is."""
    problem = _truth_problem(value)
    if problem is not None:
        raise Explained(f"a yes/no test got {problem}")
    return bool(value)


_OF_UNDEFINED = ("defined", "undefined")  # the tests that are about a value's absence


def _of_defined(fn: Any) -> Any:
    """A test that fails on an undefined value as every other use of it does: Jinja's own
    (`none`, `sameas`, `string`, ...) look at it without touching it, so
    `payload.pull_requets is not none` held for every delivery, the typo unnoticed."""
    first = 1 if jinja2.utils._PassArg.from_obj(fn) is not None else 0  # (the environment)

    @functools.wraps(fn)
    def checked(*args: Any, **kwargs: Any) -> Any:
        for value in (*args[first:], *kwargs.values()):
            if isinstance(value, jinja2.Undefined):
                value._fail_with_undefined_error()
        return fn(*args, **kwargs)
    return checked


def _from_json(value: Any) -> Any:
    """`payload.data | from_json`: JSON sent as text inside a field, a form field beside
    others or a query parameter (adnanh/webhook's parse-parameters-as-json)."""
    if not isinstance(value, str):
        raise Explained(f"`| from_json` reads JSON text, and this value is "
                        f"{_json_kind(value) or type(value).__name__}")
    try:
        return parse_json(value)
    except PayloadError as exc:
        why = exc.message.replace("body is", "the text is").replace("body holds", "the text holds")
        raise Explained("`| from_json`: " + why) from None


def _json_default(value: Any) -> Any:
    if isinstance(value, Headers):
        return value.as_dict()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_LISTED = "hookrunner_listed"  # the global that keeps an iterator's items (see _listed)


def _listed(value: Any) -> Any:
    """The operand of `"dba" in <it>` as the clause and its explanation see it: an iterator
    (what `map` and `select` give) as the list of its items, since the `in` used them up and
    the explanation showed `[]` (`in` finds the same in either); anything else as it is.
    Only there: `map(...) == [...]` is false of an iterator, as the whole `when` says."""
    if isinstance(value, Iterator) and not isinstance(value, str | bytes):
        return list(value)
    return value


def _make_env() -> _Environment:
    env = _Environment(
        undefined=_Undefined,
        autoescape=False,
        finalize=_finalize,
        keep_trailing_newline=True,  # a YAML block scalar's final newline is part of the value
    )
    env.tests.update(match=_test_match, search=_test_search, glob=_test_glob,
                     in_cidr=_test_in_cidr)
    env.tests.update({name: _of_defined(test) for name, test in env.tests.items()
                      if name not in _OF_UNDEFINED})
    env.filters["urlencode"] = _urlencode
    env.filters["from_json"] = _from_json
    env.filters["bool"] = _to_bool
    # `{{ headers | tojson }}`: the request's headers as the JSON object `{{ headers }}` writes.
    env.policies["json.dumps_kwargs"] = {"sort_keys": True, "default": _json_default}
    for name in _CASE_FILTERS:
        env.filters[name] = _not_of_null(name, env.filters[name])
    env.filters["int"] = _int_of(env.filters["int"])
    env.filters["float"] = _float_of(env.filters["float"])
    for name in _LIST_FILTERS:
        env.filters[name] = _as_list(env.filters[name])
    env.filters.update(bounds.bounded_filters(env.filters))
    env.globals[bounds.STEPS] = bounds.steps
    env.globals[_LISTED] = _listed
    env.filters[_TESTED] = _tested
    env.globals[bounds.CONCAT] = functools.partial(bounds.concat, write=as_text)
    for name in _REFUSED_GLOBALS:
        env.globals.pop(name, None)
    return env


ENV = _make_env()


class Explained(ValueError):
    """A refusal of hookrunner's own that says what to do: shown without a class name."""


def _render_error(exc: Exception, source: str) -> TemplateError:
    if isinstance(exc, jinja2.UndefinedError):
        why = exc.message or "undefined value"
    elif isinstance(exc, SecurityError):
        why = f"refused by the sandbox: {exc}"
    elif isinstance(exc, RecursionError):  # a payload value hundreds of levels deep
        why = "a value is nested too deeply (hundreds of levels of lists or objects) to use here"
    elif isinstance(exc, Explained):
        why = str(exc)
    else:
        why = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, TypeError) and re.search(
                r"not supported between instances of '(str|NoneType)' and '(int|float)'|"
                r"not supported between instances of '(int|float)' and '(str|NoneType)'", str(exc)):
            # `payload.value > 90` where the sender writes "97.5"
            why += " (a number compared with text or null: convert it, `| float`, `| int`)"
        elif isinstance(exc, TypeError) and "'generator'" in str(exc):
            # `payload.tags | unique | length` (select, map and the like give lists)
            why += (" (unique, batch, slice, reverse and items give their items one at a "
                    "time: add `| list` before it)")
    error = TemplateError(f"{why} (in {source!r})")
    error.source = source
    return error


def _storable(text: str) -> str:
    """`text`, unless it holds what no store can: a NUL (PostgreSQL text) or a lone surrogate
    (not UTF-8). A payload has neither (payload.parse_body); a template can make them
    (`'%c' % 0`), and a run or key holding one failed the whole delivery with a 500."""
    if "\x00" in text or (not text.isascii() and UNSTORABLE.search(text)):
        raise ValueError("renders a NUL character or a lone surrogate, which cannot be stored")
    return text


def to_plain(value: Any, storable: bool = True) -> Any:
    """A native render result as JSON-able data; an undefined anywhere inside is an error,
    and so (unless not `storable`: an explanation's value) is text no store can hold."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        _check_int(value)
        return int(value)  # drops the rules' WrittenInt (it neither copies nor pickles)
    if isinstance(value, float):
        if not math.isfinite(value):  # `'nan' | float`: JSON, the stores and the API have none
            raise ValueError(f"{value} is not a finite number")
        return float(value)
    if isinstance(value, str):  # str(): drops Markup and other str subclasses
        return _storable(str(value)) if storable else str(value)
    if isinstance(value, Headers):
        value = value.as_dict()
    if isinstance(value, Mapping):
        return {(_storable(str(k)) if storable else str(k)): to_plain(v, storable)
                for k, v in value.items()}
    if isinstance(value, list) or _sequence_like(value):
        return [to_plain(v, storable) for v in value]
    _refuse_callables(value)
    return str(value)


# ---- static checks, so `hookrunner check` catches escapes before anything renders ----

class _Bounded(NodeTransformer):
    """Rewrites a parsed template before it is compiled, so the checks of hookrunner.bounds
    see what no sandbox hook does: each `{% for x in items %}` iterates
    `hookrunner_steps(items)` (one budget step per item), and each `a ~ b` is
    `hookrunner_concat(a, b)` (a doubling `~` in a loop is refused past the size bound)."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Call(nodes.Name(bounds.STEPS, "load"), [node.iter], [], None, None,
                               lineno=node.lineno)
        if node.test is not None:  # `{% for x in items if x.flag %}`: see visit_If
            node.test = _guarded(cast(nodes.Expr, node.test))
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Call(nodes.Name(bounds.CONCAT, "load"), list(node.nodes), [], None, None,
                          lineno=node.lineno)

    # Where a value is taken as yes or no, it goes through `hookrunner_tested` (_tested):
    # `{% if payload.force %}` and `not payload.draft` took a sender's "false" for true.
    def visit_If(self, node: nodes.If) -> nodes.Node:
        self.generic_visit(node)
        node.test = _guarded(cast(nodes.Expr, node.test))
        return node

    def visit_CondExpr(self, node: nodes.CondExpr) -> nodes.Node:
        self.generic_visit(node)
        node.test = _guarded(node.test)
        return node

    def visit_Not(self, node: nodes.Not) -> nodes.Node:
        self.generic_visit(node)
        node.node = _guarded(node.node)
        return node


def _guarded(node: nodes.Expr) -> nodes.Expr:
    """`node`, in a yes/no place, with its truth checked (_tested) where it may be a value
    that is not a boolean. `a and b` there gives one of its operands: each is checked."""
    if isinstance(node, nodes.And | nodes.Or):
        node.left, node.right = _guarded(node.left), _guarded(node.right)
        return node
    if isinstance(node, nodes.CondExpr):
        node.expr1 = _guarded(node.expr1)
        if node.expr2 is not None:
            node.expr2 = _guarded(node.expr2)
        return node
    if isinstance(node, nodes.Not | nodes.Compare | nodes.Test) or (
            isinstance(node, nodes.Const) and isinstance(node.value, bool)):
        return node  # a boolean already
    # A filter, not a call: the sandbox checks every call it makes (3x the render's time).
    return nodes.Filter(node, _TESTED, [], [], None, None, lineno=node.lineno)


def _guard_root(node: nodes.Expr) -> nodes.Expr:
    """A condition's whole expression: its own value is checked by _truth (and shown as it
    is by explanations), the operands an `and`/`or` or `if ... else` picks from are not."""
    return _guarded(node) if isinstance(node, nodes.And | nodes.Or | nodes.CondExpr) else node


_N = TypeVar("_N", bound=nodes.Node)


def _bound(tree: _N) -> _N:
    """The tree, rewritten (a root `a ~ b` becomes a call: an expression either way)."""
    return cast(_N, _Bounded().visit(tree))


# Statements a rule's template has no use for: there are no template files to include,
# import or extend, and a recursive macro or loop can double a string at each call.
_REFUSED_STATEMENTS = {
    nodes.Include: "{% include %}", nodes.Import: "{% import %}",
    nodes.FromImport: "{% from ... import %}", nodes.Extends: "{% extends %}",
    nodes.Macro: "{% macro %}", nodes.CallBlock: "{% call %}",
    # Block bodies render outside the output's size check (bounds.joined).
    nodes.AssignBlock: "{% set %}...{% endset %}", nodes.FilterBlock: "{% filter %}",
}


def _check_tree(tree: nodes.Node) -> None:
    for kind, statement in _REFUSED_STATEMENTS.items():
        if isinstance(tree, kind) or next(tree.find_all(kind), None) is not None:
            raise ConfigError(f"{statement} is not available in rules")
    if any(loop.recursive for loop in tree.find_all(nodes.For)):
        raise ConfigError("{% for ... recursive %} is not available in rules")
    # The rewritten loops and `~` call these by name: a template must not redefine them.
    for used in tree.find_all(nodes.Name):
        if used.name.startswith(_RESERVED):
            raise ConfigError(f"the name {used.name!r} is reserved")
    kinds = (nodes.Getattr, nodes.Getitem, nodes.Filter, nodes.Test, nodes.Const)
    for node in [tree, *tree.find_all(kinds)]:  # find_all skips the root itself
        if (isinstance(node, nodes.Const) and isinstance(node.value, float)
                and not math.isfinite(node.value)):
            # Jinja would write it as the name `inf`: every render would fail.
            raise ConfigError("a number in the expression is too large for a float")
        name: Any = None
        if isinstance(node, nodes.Getattr):
            name = node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            name = node.arg.value
        elif isinstance(node, nodes.Filter) and node.name == "attr" and node.args:
            arg = node.args[0]
            name = arg.value if isinstance(arg, nodes.Const) else None
        # Every known escape needs a dunder or a mangled `_Class__attr` name. A single leading
        # underscore stays legal for payload keys (`payload._links`, `payload._id`); the
        # sandbox still refuses `_x` attributes of objects at render time.
        if isinstance(name, str) and name.startswith("_") and "__" in name:
            raise ConfigError(f"access to {name!r} is not allowed (names with '__' are "
                              "Python internals)")
        if isinstance(node, nodes.Filter | nodes.Test):
            _check_call(node)


_OUR_TESTS = ("match", "search", "glob", "in_cidr")


# A pattern's own errors, and the sandbox's refusal of one too large (bounds.compile_regex).
_PATTERN_ERRORS: tuple[type[Exception], ...] = (*bounds.REGEX_ERRORS, SecurityError)


_IN_THE_ACTION = ("in the action: a script, or the playbook, where the payload is the var "
                  "`webhook` and Ansible's filters are there")
_NO_REGEX = ("there are no regex filters here: test with `is search(...)` or `is match(...)`; "
             f"for a literal replacement, `| replace(a, b)`; to rewrite a value, do it {_IN_THE_ACTION}")
# Ansible's filters, tests and names (kind, name), which the nearest Jinja name would get
# wrong (`regex_replace`: `replace`, literal) or which have none: what to write here instead.
ANSIBLE_HINTS = {
    ("filter", "regex_replace"): _NO_REGEX, ("filter", "regex_search"): _NO_REGEX,
    ("filter", "regex_findall"): _NO_REGEX,
    ("filter", "split"): 'use the method: `payload.x.split(",")`',
    ("filter", "ternary"): 'write `"a" if x else "b"`',
    ("filter", "combine"): "write `dict(a, **b)` (b's keys win; one level deep)",
    ("filter", "to_json"): "write `| tojson`",
    ("filter", "to_nice_json"): "write `| tojson(indent=2)`",
    ("filter", "to_yaml"): "not available: `| tojson` (JSON is YAML too)",
    ("filter", "to_nice_yaml"): "not available: `| tojson(indent=2)` (JSON is YAML too)",
    ("filter", "from_yaml"): "not available: `| from_json` reads JSON text",
    ("filter", "b64decode"): f"not available: decode {_IN_THE_ACTION}",
    ("filter", "b64encode"): f"not available: encode {_IN_THE_ACTION}",
    ("filter", "hash"): f"not available: hash {_IN_THE_ACTION}",
    ("filter", "password_hash"): f"not available: hash {_IN_THE_ACTION}",
    ("filter", "dict2items"): "write `| items` (or `| dictsort`, by key): [key, value] pairs",
    ("filter", "items2dict"): "write `dict(pairs)`, of [key, value] pairs",
    ("filter", "flatten"): "not available (nor `sum` of lists): loop over the inner lists "
                           "with `{% for %}`",
    ("filter", "mandatory"): "not needed: a value not there already fails the run (in `when`: "
                             "the rule does not match)",
    ("filter", "quote"): "not needed: no shell runs the action, each argv item (each word of "
                         "`command`) is one argument; for `sh -c`, pass values as arguments: "
                         "`argv: [sh, -c, 'echo \"$1\"', sh, \"{{ payload.x }}\"]`",
    ("test", "regex"): "write `is search(...)` (or `is match(...)`, anchored at the start)",
    ("name", "lookup"): "not available: templates read only the delivery; read files and "
                        "the environment in the action",
}


_RESERVED = "hookrunner_"  # hookrunner's own filters and tests (and names): not a rule's


def _unknown(kind: str, name: str, where: str = "") -> ConfigError | None:
    """The error for a filter or test name that is not there, with the likely intended one."""
    if name.startswith(_RESERVED):
        return ConfigError(f"the {kind} name {name!r} is reserved")
    known = [n for n in (ENV.filters if kind == "filter" else ENV.tests)
             if not n.startswith(_RESERVED)]
    if name in known:
        return None
    near = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    hint = f": {ANSIBLE_HINTS[kind, name]}" if (kind, name) in ANSIBLE_HINTS else (
        f": did you mean {' or '.join(repr(n) for n in near)}?" if near else
        f" (the {kind}s: {', '.join(sorted(known))})")
    return ConfigError(f"unknown {kind} {name!r}{where}{hint}")


# The filters that take a filter or test by name, and where: `map('upper')`,
# `select('match', 'x')`, `selectattr('ref', 'match', 'x')`.
_NAME_ARG = {"map": ("filter", 0), "select": ("test", 0), "reject": ("test", 0),
             "selectattr": ("test", 1), "rejectattr": ("test", 1)}


def _check_named(node: nodes.Filter) -> None:
    """A filter or test named as a string is looked up only at render time: check it now."""
    kind, at = _NAME_ARG.get(node.name, ("", -1))
    arg = node.args[at] if 0 <= at < len(node.args) else None
    if not isinstance(arg, nodes.Const):
        return  # (`map(attribute=...)`, `select()`, or a name not written in the rule)
    name = arg.value
    error = _unknown(kind, name, f" named in `{node.name}`") if isinstance(name, str) else None
    if error is not None:
        raise error
    if kind == "test" and name in _OUR_TESTS and not (node.dyn_args or node.dyn_kwargs):
        # `select("match", "(")`: the pattern, checked now as `is match("(")`'s is.
        _check_test_arg(name, node.args[at + 1:], node.kwargs)


def _check_call(node: nodes.Filter | nodes.Test) -> None:
    kind = "filter" if isinstance(node, nodes.Filter) else "test"
    error = _unknown(kind, node.name)
    if error is not None:
        raise error
    if isinstance(node, nodes.Filter):
        _check_named(node)
        _check_constant(node)
    if node.name not in _OUR_TESTS:
        return
    if node.dyn_args or node.dyn_kwargs:
        raise ConfigError(f"test {node.name!r} takes one argument: {_ARGUMENT_OF[node.name]}")
    _check_test_arg(node.name, node.args, node.kwargs)


_ARGUMENT_OF = {"in_cidr": "a network (or a list of them)", "match": "a pattern",
                "search": "a pattern", "glob": "a pattern"}


def _check_test_arg(name: str, args: list[nodes.Expr], kwargs: list[Any]) -> None:
    """The argument of one of hookrunner's tests (`is match(...)`, or named in a `select`)."""
    if len(args) != 1 or kwargs:
        raise ConfigError(f"test {name!r} takes one argument: {_ARGUMENT_OF[name]}")
    # A constant pattern or network is checked now rather than on the first delivery.
    try:
        arg = args[0].as_const()
    except nodes.Impossible:
        return
    try:
        if name == "in_cidr":
            nets = arg if isinstance(arg, list | tuple) else [arg]
            if not nets or not all(isinstance(n, str) for n in nets):
                raise ValueError("expected a network or a list of networks, as strings")
            for net in nets:
                _network(net)
        elif not isinstance(arg, str):
            raise ValueError(f"expected a string, got {type(arg).__name__}")
        elif name == "glob":
            translated = bounds.glob_regex(arg)
            bounds.compile_regex(translated, len(translated))
        else:
            bounds.compile_regex(arg)
            if "\b" in arg:
                # Jinja reads `'\bfoo\b'` as text with backspaces, and the pattern then
                # never matched anything, silently.
                raise ValueError("the pattern holds a backspace character, which is what "
                                 "Jinja makes of \\b in a string: for a word boundary, "
                                 "write \\\\b (`is search('\\\\bfoo\\\\b')`)")
    except _PATTERN_ERRORS as exc:
        raise ConfigError(f"bad argument to test {name!r}: {exc}") from None


def _check_constant(node: nodes.Filter) -> None:
    """A filter of constants is computed when the template is compiled: a result that cannot
    be written back as Python (`'nan' | float`) made every render fail with a NameError."""
    try:
        value = node.as_const()
    except Exception:  # Impossible, or the filter refusing these constants: left to render
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{value} is not a finite number (JSON has no such value)")


def _syntax_error(exc: jinja2.TemplateSyntaxError, text: str) -> ConfigError:
    where = f" (line {exc.lineno} of the template)" if "\n" in text.strip() else ""
    error = ConfigError(f"template syntax error: {exc.message}{where} in {text!r}")
    if where:  # said at its own line where the text is a literal block (yamlsrc.text_line)
        error.template_line = exc.lineno
    return error


def _parse_expression(text: str) -> nodes.Expr:
    try:
        parser = Parser(ENV, text, state="variable")
        expr = parser.parse_expression()
        if not parser.stream.eos:
            raise jinja2.TemplateSyntaxError("unexpected text after the expression",
                                             parser.stream.current.lineno)
    except jinja2.TemplateSyntaxError as exc:
        raise _syntax_error(exc, text) from None
    expr.set_environment(ENV)
    return expr


def _compile_node(expr: nodes.Expr) -> TemplateExpression:
    body = [nodes.Assign(nodes.Name("result", "store"), _bound(expr), lineno=1)]
    try:
        template = ENV.from_string(nodes.Template(body, lineno=1))
    except jinja2.TemplateSyntaxError as exc:  # e.g. an unknown filter
        raise ConfigError(exc.message or str(exc)) from None
    return TemplateExpression(template, undefined_to_none=False)


class Scope(dict[str, Any]):
    """The names of one delivery, carrying the Jinja context built from them.

    Every condition and template of a delivery renders in that one context: building a
    context per expression was most of the cost of matching (measured: ~20 us each, five or
    more per request)."""

    __slots__ = ("context",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.context: Context | None = None


def _context_for(fn: TemplateExpression, scope: Mapping[str, Any]) -> Context:
    template: jinja2.Template = fn._template  # every expression comes from ENV: same globals
    if not isinstance(scope, Scope):
        return template.new_context(dict(scope))
    if scope.context is None:
        scope.context = template.new_context(dict(scope))
    else:
        # What one template assigned (`result`, a `{% set %}`) must not leak into the next.
        scope.context.vars.clear()
        scope.context.exported_vars.clear()
    return scope.context


def _run(fn: TemplateExpression, scope: Mapping[str, Any]) -> Context:
    """Render `fn` in the scope's shared context; its variables hold the results."""
    context = _context_for(fn, scope)
    state = bounds.start_render()
    try:
        for _ in fn._template.root_render_func(context):
            pass
    finally:
        if state.watch is not None:  # first, before any call (see bounds.start_render)
            state.watch.done = True
        bounds.end_render(state)
    return context


def _evaluate(fn: TemplateExpression, scope: Mapping[str, Any]) -> Any:
    """`fn(scope)`, in the scope's shared context (TemplateExpression.__call__ builds one)."""
    return _run(fn, scope).vars["result"]


def _call(
    fn: TemplateExpression, scope: Mapping[str, Any], source: str, plain: bool = False
) -> Any:
    try:
        value = _evaluate(fn, scope)
        if isinstance(value, jinja2.Undefined):
            value._fail_with_undefined_error()
        if plain:
            bounds.check_written(value)  # it is stored and given to the action as JSON
            return to_plain(value)
        return value
    except Exception as exc:  # a template can raise anything its values raise
        raise _render_error(exc, source) from None


# ---- compiled objects (the `Compiled` protocol of rules.model) ----

def _names(tree: nodes.Node) -> frozenset[str]:
    """The names a template or expression reads from its scope: the rules loader checks them
    against the scope. A name the template itself assigns anywhere (`set`, a `for` target,
    `with`) is its own, even where Jinja would find it unset on some path (`{% if %}{% set z
    %}{% endif %}{{ z | default('') }}`); globals (`range`, `dict`) and `loop` are Jinja's."""
    found = list(tree.find_all(nodes.Name))
    if isinstance(tree, nodes.Name):
        found.append(tree)
    stored = {n.name for n in found if n.ctx in ("store", "param")}
    loaded = {n.name for n in found if n.ctx == "load"}
    return frozenset(loaded - stored - set(ENV.globals) - {"loop"})


class Constant:
    """A string with no Jinja in it: rendered as is."""

    __slots__ = ("source",)
    names: frozenset[str] = frozenset()
    keys: frozenset[str] | None = frozenset()  # the request values it reads (request_keys)

    def __init__(self, source: str) -> None:
        self.source = source

    def render(self, scope: Mapping[str, Any]) -> Any:
        return self.source

    def __repr__(self) -> str:
        return f"Constant({self.source!r})"


class Template:
    """A string with Jinja in it; renders to a string, or to a native value if it is a single
    `{{ expr }}`."""

    __slots__ = ("_fast", "_native", "_template", "keys", "names", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            tree = ENV.parse(source)
        except jinja2.TemplateSyntaxError as exc:
            raise _syntax_error(exc, source) from None
        _check_tree(tree)
        self.names = _names(tree)
        self.keys = request_keys(tree)
        self._native: TemplateExpression | None = None
        self._template: jinja2.Template | None = None
        self._fast: FastPath | None = None
        m = _SINGLE_EXPR.match(source)
        body = tree.body
        out = body[0].nodes if len(body) == 1 and isinstance(body[0], nodes.Output) else []
        if m and len(out) == 1 and not isinstance(out[0], nodes.TemplateData):
            expr = _parse_expression(m.group(1))
            self._fast = compile_path(expr)  # (before compiling rewrites the tree)
            self._native = _compile_node(expr)
            return  # compiling costs ~0.5 ms: only the form that will render
        try:
            self._template = ENV.from_string(_bound(tree))
        except jinja2.TemplateSyntaxError as exc:
            raise _syntax_error(exc, source) from None

    @property
    def is_native(self) -> bool:
        return self._native is not None

    def render(self, scope: Mapping[str, Any]) -> Any:
        if self._native is not None:
            if self._fast is not None:
                # A path to a JSON scalar needs no render (~15 us, a new Jinja context for an
                # action's first); any doubt or error, and the render decides, in its words.
                value = self._fast.value(scope)
                if value is not ABSENT:
                    try:
                        bounds.check_written(value)
                        return to_plain(value)
                    except Exception:  # the render below raises it, in its own words
                        pass
            return _call(self._native, scope, self.source, plain=True)
        assert self._template is not None
        try:
            state = bounds.start_render()
            try:
                context = self._template.new_context(dict(scope))
                text = bounds.joined(self._template.root_render_func(context))
            finally:
                if state.watch is not None:  # first, before any call (bounds.start_render)
                    state.watch.done = True
                bounds.end_render(state)  # (within the except: it may end the render too)
            return _storable(text)
        except Exception as exc:
            raise _render_error(exc, self.source) from None

    def __repr__(self) -> str:
        return f"Template({self.source!r})"


class _Missing:
    def __repr__(self) -> str:
        return "undefined"


MISSING: Any = _Missing()  # the value of an undefined left operand, in explanations


_REQUEST = ("headers", "query")
_LOOKUPS = ("get", "get_all")  # `headers.get("X-Api-Key")`: the key is the call's argument
# Names that read the whole object, not a key of it: a dict's methods, and the Headers' own
# (`headers.as_dict()["x-api-key"]` was taken for a header named `as_dict`, not secret).
_WHOLE_ATTRS = DICT_ATTRS | frozenset(n for n in dir(Headers) if not n.startswith("__"))


def request_keys(tree: nodes.Node) -> frozenset[str] | None:
    """The header and query keys (lower-cased) an expression reads the values of, or None
    where it may read any: the whole `headers`/`query`, a key it computes
    (`headers[payload.k]`), or a method such as `items()`. `'X' in headers` reads no value."""
    parents: dict[int, nodes.Node] = {}
    todo = [tree]
    while todo:
        node = todo.pop()
        for child in node.iter_child_nodes():
            parents[id(child)] = node
            todo.append(child)
    keys: set[str] = set()
    for name in [tree, *tree.find_all(nodes.Name)]:
        if not isinstance(name, nodes.Name) or name.name not in _REQUEST:
            continue
        parent = parents.get(id(name))
        key: Any = None
        if isinstance(parent, nodes.Getattr) and parent.node is name:
            call = parents.get(id(parent))
            if parent.attr in _LOOKUPS and isinstance(call, nodes.Call) and call.node is parent:
                key = call.args[0].value if call.args and isinstance(call.args[0], nodes.Const) else None
            elif parent.attr not in _WHOLE_ATTRS:  # `items`, `as_dict`: the whole object
                key = parent.attr
        elif isinstance(parent, nodes.Getitem) and parent.node is name:
            key = parent.arg.value if isinstance(parent.arg, nodes.Const) else None
        elif isinstance(parent, nodes.Operand) and parent.op in ("in", "notin"):
            compare = parents.get(id(parent))
            if isinstance(compare, nodes.Compare) and isinstance(compare.expr, nodes.Const):
                continue  # a membership test of a literal name: no value is read
        if not isinstance(key, str):
            return None
        keys.add(key.lower())
    return frozenset(keys)


def reads_secret(keys: frozenset[str] | None, also: frozenset[str] = frozenset()) -> bool:
    """Whether an explanation of what reads `keys` may show a secret: a secret-named header
    or query value, one of `also` (a verifier's own headers), or any value (None). Whatever
    it derived (`.split(' ')[1]`, `| lower`, `[:8]`) could be the secret or part of it."""
    return keys is None or any(k in also or secret_key(k) for k in keys)


class Clause:
    """One top-level `and`/`or` operand of a condition, evaluated alone for explanations.

    Compiled as `{% set left = <left operand> %}{% set result = <clause, reading left> %}`:
    one render yields both the truth and the left side's value (two renders cost twice).
    The commonest forms are decided without rendering (see fastclause)."""

    __slots__ = ("_fast", "_fn", "_has_left", "compared", "keys", "source", "text_vs_other")

    def __init__(self, source: str, node: nodes.Expr) -> None:
        self.source = source
        self.keys = request_keys(node)  # what its explanation may show (see reads_secret)
        self._fast = compile_fast(node, ENV.tests)  # before _compile_clause rewrites `node`
        # `x == <constant>` / `x != <constant>`: the constant (see type_mismatch)
        self.compared = _compared_constant(node)
        self.text_vs_other = _text_vs_other(node, self.compared)  # (before the rewrite too)
        self._fn, self._has_left = _compile_clause(node)

    def evaluate(self, scope: Mapping[str, Any]) -> tuple[bool, Any]:
        """(truth of the clause, value of its left operand or of the clause itself)."""
        if self._fast is not None:
            try:
                decided = self._fast.evaluate(scope)
            except SecurityError as exc:  # as the render says it (bounds.regex_find)
                raise _render_error(exc, self.source) from None
            if decided is not None:
                return decided
        try:
            context = _run(self._fn, scope)
            value = context.vars["result"]
            if isinstance(value, jinja2.Undefined):
                value._fail_with_undefined_error()
            left = context.vars[_LEFT] if self._has_left else value
        except Exception as exc:  # a template can raise anything its values raise
            raise _render_error(exc, self.source) from None
        truth = _truth(value, self.source)
        # `payload.x is defined` holds or fails, yet `payload.x` alone is undefined.
        return truth, MISSING if isinstance(left, jinja2.Undefined) else left


_LEFT = "hookrunner_left"  # the template variable holding a clause's left operand
_NONE = object()  # no constant compared


def _compared_constant(node: nodes.Expr) -> Any:
    """The constant of `x == c` or `x != c`, or of `c == x` (a literal number, string, boolean
    or none; `-1` too), else _NONE."""
    if isinstance(node, nodes.Compare) and len(node.ops) == 1 and node.ops[0].op in ("eq", "ne"):
        for side in (node.ops[0].expr, node.expr):
            value = _constant(side)
            if value is not _NONE:
                return value
    return _NONE


def _constant(node: nodes.Expr) -> Any:
    if isinstance(node, nodes.Neg) and isinstance(node.node, nodes.Const) \
            and isinstance(node.node.value, int | float) and not isinstance(node.node.value, bool):
        return -node.node.value
    if isinstance(node, nodes.Const) and (node.value is None or isinstance(
            node.value, bool | int | float | str)):
        return node.value
    return _NONE


def _text_vs_other(node: nodes.Expr, compared: Any) -> Any:
    """`query.x == 1`, `headers["X-Count"] != true`, `query.n in [1, 2]`: query and header
    values are always text, so such a clause never holds (or never fails) whatever is sent (a
    `check` warning). The number or boolean compared with, else None."""
    if not isinstance(node, nodes.Compare) or len(node.ops) != 1:
        return None
    op = node.ops[0]
    if op.op in ("in", "notin") and isinstance(op.expr, nodes.List | nodes.Tuple) \
            and _query_or_header(node.expr):
        items = (_constant(item) for item in op.expr.items)
        return next((item for item in items if _not_text(item)), None)
    if not _not_text(compared):
        return None
    # either way round: `1 == query.n` too
    return compared if _query_or_header(node.expr) or _query_or_header(op.expr) else None


def _not_text(value: Any) -> bool:
    return value is not _NONE and value is not None and not isinstance(value, str)


def _query_or_header(node: nodes.Expr) -> bool:
    """`query.x`, `headers["X"]`, `query.get("x")`, or `client_ip`: a value that is text."""
    if isinstance(node, nodes.Name):
        return node.name == "client_ip"
    if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr) \
            and node.node.attr == "get" and not node.args[1:] and not node.kwargs:
        node = node.node
    return isinstance(node, nodes.Getattr | nodes.Getitem) and isinstance(node.node, nodes.Name) \
        and node.node.name in ("query", "headers")


def _json_kind(value: Any) -> str | None:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return None


def type_mismatch(clause: Clause, left: Any) -> str | None:
    """Why `x == c` can never hold for this `x`: `(a boolean, compared with a string: never
    equal)`, for an explanation (`payload.merged == "true"` on a JSON `true` is a silent
    no-match otherwise); None where the kinds agree or no constant is compared."""
    right = clause.compared
    if right is _NONE or left is MISSING:
        return None
    mine, theirs = _json_kind(left), _json_kind(right)
    if mine is None or theirs is None or mine == theirs \
            or {mine, theirs} == {"a boolean", "a number"}:  # (true == 1 holds: not "never")
        return None
    return f"({mine}, compared with {theirs}: never equal)"


def _compile_clause(node: nodes.Expr) -> tuple[TemplateExpression, bool]:
    """The clause as a template that also stores its left operand (if it has one)."""
    node = _bound(_guard_root(node))
    holder = _left_holder(node)
    if holder is None:
        return _compile_node(node), False
    owner, attr = holder
    left: nodes.Expr = getattr(owner, attr)
    setattr(owner, attr, nodes.Name(_LEFT, "load", lineno=1))
    if isinstance(owner, nodes.Operand):  # `"dba" in <iterator>`: the `in` uses it up
        left = nodes.Call(nodes.Name(_LISTED, "load"), [left], [], None, None, lineno=1)
    body = [nodes.Assign(nodes.Name(_LEFT, "store"), left, lineno=1),
            nodes.Assign(nodes.Name("result", "store"), node, lineno=1)]
    try:
        template = ENV.from_string(nodes.Template(body, lineno=1))
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(exc.message or str(exc)) from None
    return TemplateExpression(template, undefined_to_none=False), True


def _left_holder(node: nodes.Expr) -> tuple[nodes.Node, str] | None:
    """The node and field that hold the operand an explanation shows: the left one (`a` of
    `a == b`, `not a is x`), or the right one of `"literal" in b`."""
    if isinstance(node, nodes.Not):
        return _left_holder(node.node)
    if isinstance(node, nodes.Compare):
        if isinstance(node.expr, nodes.Const) and len(node.ops) == 1 \
                and node.ops[0].op in ("in", "notin") and not any(
                    n.name in ("headers", "query") for n in node.ops[0].find_all(nodes.Name)):
            # `"dba" in payload.teams`: the teams are the news (never `'X-Key' in headers`:
            # every header, a token among them)
            return node.ops[0], "expr"
        return node, "expr"
    if isinstance(node, nodes.Test):
        return node, "node"
    return None


def _truth(value: Any, source: str) -> bool:
    problem = _truth_problem(value)
    if problem is not None:
        error = TemplateError(f"the condition's value is {problem} (in {source!r})")
        error.source = source
        raise error
    try:
        return bool(value)
    except Exception as exc:
        raise _render_error(exc, source) from None


class Expression:
    """A compiled `when` expression."""

    __slots__ = ("_clauses", "_fn", "_ops", "names", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        tree = _parse_expression(source)
        _check_tree(tree)
        self.names = _names(tree)
        self._fn = _compile_node(_guard_root(tree))
        self._clauses: tuple[Clause, ...] | None = None
        self._ops: list[str] | None = None  # the and/or between the clauses, in order

    def render(self, scope: Mapping[str, Any]) -> Any:
        return _call(self._fn, scope, self.source)

    def test(self, scope: Mapping[str, Any]) -> bool:
        return _truth(self.render(scope), self.source)

    def clauses(self) -> tuple[Clause, ...]:
        """The top-level and/or operands (compiled on first use: only explanations need them)."""
        if self._clauses is None:
            clauses, self._ops = _split(self.source)
            self._clauses = tuple(clauses)
        return self._clauses

    def short_circuit(self, truths: list[bool | None]) -> tuple[bool | None, list[int]]:
        """From each clause's truth (None: it failed): the expression's truth as Jinja
        reaches it (None where that needs the whole expression: not split, or an error the
        verdict depends on, whose exact text re-rendering the whole gives), and the clauses
        Jinja never evaluates. `a and b or c`: `and` chains (it binds closer) joined by `or`;
        an `and` chain stops at its first false clause, the `or` at its first true chain."""
        self.clauses()
        if self._ops is None:
            return None, []
        chains: list[list[int]] = [[0]]
        for i, op in enumerate(self._ops, start=1):
            if op == "or":
                chains.append([i])
            else:
                chains[-1].append(i)
        skipped: list[int] = []
        for c, chain in enumerate(chains):
            for j, i in enumerate(chain):
                if truths[i] is None:  # evaluated, and failed: the whole decides
                    return None, skipped
                if not truths[i]:
                    skipped += chain[j + 1:]
                    break
            else:
                return True, skipped + [i for rest in chains[c + 1:] for i in rest]
        return False, skipped


def _split(source: str) -> tuple[list[Clause], list[str] | None]:
    """Split on the and/or at bracket depth 0, each part compiled alone; and the joiners
    between them, in order ([] for a single clause), None where the expression is not split.

    Jinja nodes carry no column offsets and no parentheses, so the tokens give the cut points.
    With mixed and/or (`a or b and c`) each operand is still reported on its own; the rule's
    result always comes from the whole expression. A conditional expression
    (`x if a and b else y`) is not split.
    """
    whole = [Clause(source.strip(), _parse_expression(source))]
    tokens = list(ENV.lexer.tokeniter(source, None, state="variable"))
    if "".join(t[2] for t in tokens) != source:
        return whole, None
    texts: list[str] = []
    joiners: list[str] = []
    pos = start = depth = 0
    for _, kind, value in tokens:
        if kind == "operator" and value in "([{":
            depth += 1
        elif kind == "operator" and value in ")]}":
            depth -= 1
        elif kind == "name" and depth == 0 and value in ("if", "else"):
            return whole, None
        elif kind == "name" and depth == 0 and value in ("and", "or"):
            texts.append(source[start:pos].strip())
            joiners.append(value)
            start = pos + len(value)
        pos += len(value)
    texts.append(source[start:].strip())
    if len(texts) == 1:
        return whole, []  # one clause: its truth is the verdict
    try:
        return [Clause(text, _parse_expression(text)) for text in texts], joiners
    except ConfigError:
        return whole, None


def compile_expression(text: str) -> Expression:
    """Compile a `when` expression; raise ConfigError on bad syntax or a refused name."""
    if not text.strip():
        raise ConfigError("empty expression")
    return _within_limits(Expression, text)


def compile_template(text: str) -> Constant | Template:
    """Compile a templated string; raise ConfigError on bad syntax or a refused name."""
    # A whole `{# comment #}` counts too: with or without a `{{ }}` beside it, it is dropped.
    if "{{" not in text and "{%" not in text and "#}" not in text.partition("{#")[2]:
        return Constant(text)
    return _within_limits(Template, text)


def _within_limits(kind: type[_C], text: str) -> _C:
    """Compiled, or a ConfigError where it is past what Python compiles: 200 `or` terms or
    70 nested parentheses hit its parser's limits (a traceback from `check`, and a load
    error with no line from `serve`)."""
    try:
        return _reused(kind, text)
    except (RecursionError, SyntaxError, MemoryError) as exc:
        how = ("split it into a list of conditions (`when: [a, b]`, all must hold) or "
               "`any:`, or test membership with `in [...]`") if kind is Expression else \
            "split it into smaller templates, or nest fewer blocks"
        raise ConfigError(f"too long or too deeply nested for Python to compile "
                          f"({type(exc).__name__}): {how}") from None


# Within a load of the rules (`reusing_compiled`): what this load compiled so far, by kind
# and source. _LAST_LOAD: what the last load used, for the next one.
_THIS_LOAD: contextvars.ContextVar[dict[tuple[type, str], Any] | None] = contextvars.ContextVar(
    "this_load", default=None)
_LAST_LOAD: dict[tuple[type, str], Any] = {}
_C = TypeVar("_C", Expression, Template)


def _reused(kind: type[_C], text: str) -> _C:
    this = _THIS_LOAD.get()
    if this is None:
        return kind(text)
    key = (kind, text)
    found = this.get(key) or _LAST_LOAD.get(key)
    if found is None:
        found = kind(text)  # errors are not kept: each load reports its own
    this[key] = found
    return cast(_C, found)


@contextlib.contextmanager
def reusing_compiled() -> Iterator[None]:
    """A load of the rules takes an expression or template of the same text as compiled
    already, by itself or the load before (they hold no state of a rule or a delivery):
    compiling costs ~7 ms a rule, so a reload of 1,000 unchanged rules took ~7 s. Only what
    this load used is kept for the next."""
    global _LAST_LOAD
    this: dict[tuple[type, str], Any] = {}
    token = _THIS_LOAD.set(this)
    try:
        yield
    finally:
        _THIS_LOAD.reset(token)
    _LAST_LOAD = this


def render_tree(tree: Any, scope: Mapping[str, Any]) -> Any:
    """Render a nested dict/list whose leaves are compiled templates or plain values."""
    kind = type(tree)  # the common kinds first, by type: Mapping's isinstance is an ABC's
    if kind is Template:
        return tree.render(scope)
    if kind is dict:
        return {str(k): render_tree(v, scope) for k, v in tree.items()}
    if kind is list:
        return [render_tree(v, scope) for v in tree]
    if isinstance(tree, Template):
        return tree.render(scope)  # plain, and checked by _storable, as it rendered
    if isinstance(tree, Constant | Expression):
        try:
            return to_plain(tree.render(scope))
        except ValueError as exc:
            raise _render_error(exc, tree.source) from None
    if isinstance(tree, Mapping):
        return {str(k): render_tree(v, scope) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return [render_tree(v, scope) for v in tree]
    return to_plain(tree)


def describe(value: Any, limit: int = 200) -> str:
    """A short JSON-ish rendering of a value, for explanations."""
    if type(value) is str:  # most compared values: JSON text for it, in one call
        text = _JSON_TEXT(value)  # (escapes NUL: only non-ASCII can be unstorable)
        text = text if text.isascii() else as_storable(text)
        return text if len(text) <= limit else text[: limit - 1] + "…"
    if value is MISSING:
        return "undefined"
    if callable(value) and not isinstance(value, jinja2.Undefined):
        return "(a function, not a value)"  # never a repr with a memory address
    try:
        text = _JSON.encode(to_plain(value, storable=False))  # shown as U+FFFD below
    except RecursionError:
        return "(nested too deeply to show)"
    except Exception as exc:
        try:
            text = repr(value)
        except Exception:  # an int past MAX_DIGITS has no repr either
            text = f"({exc})"
    text = as_storable(text)  # what a store could not hold (`'%c' % 0`)
    return text if len(text) <= limit else text[: limit - 1] + "…"

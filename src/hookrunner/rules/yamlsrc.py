"""YAML with line numbers: every mapping key and sequence item remembers where it was written.

`parse_yaml(text, file)` returns plain-looking data made of `LineDict` / `LineList` (subclasses
of dict / list) so that an error deep in `rules[2].run.shell.argv[1]` reports that item's line.
A key written twice in one mapping is an error (PyYAML silently keeps the last one). Only
`true`/`false` are booleans (YAML 1.2): `on`, `off`, `yes`, `no` stay strings.
"""

from __future__ import annotations

import bisect
import math
import re
from typing import Any, cast

import yaml

from hookrunner.errors import ConfigError

__all__ = ["LineDict", "LineList", "line_of", "parse_yaml", "text_line"]


class LineDict(dict[Any, Any]):
    """A mapping; `line` is where it starts, `key_lines[k]` where key `k` is written."""

    line: int = 0
    key_lines: dict[Any, int]
    # Keys whose plain (unquoted) value runs on to a line starting with `- `: YAML folds
    # `when: a\n  - b` into "a - b", where a list was meant (fields.when refuses it).
    folded_dash: frozenset[Any] = frozenset()
    # Keys whose value is a literal block (`when: |`): the line of its text's first line, so
    # an error at line N of the text is said at its own line of the file.
    block_lines: dict[Any, int] | None = None

    def line_of(self, key: Any) -> int:
        return self.key_lines.get(key, self.line) if hasattr(self, "key_lines") else self.line


class LineList(list[Any]):
    """A sequence; `line` is where it starts, `item_lines[i]` where item `i` is written."""

    line: int = 0
    item_lines: list[int]
    folded_dash: frozenset[int] = frozenset()  # items folded as LineDict.folded_dash says

    def line_of(self, index: int) -> int:
        lines = getattr(self, "item_lines", [])
        return lines[index] if 0 <= index < len(lines) else self.line


# Line breaks to YAML that no editor or `grep -n` counts as one: after one, every line YAML
# reports would be one too far.
_EXOTIC_BREAKS = re.compile("[\x85\u2028\u2029]")
_BREAKS = re.compile(r"\r\n|\r|\n")


# A line starting with `- ` then what starts a condition: a name, `(`, a quote, or a number,
# list or mapping (`- 10 <= payload.replicas`) after a line that ends an operand. After an
# operator or an opening bracket, `- 1` is a negative number (`payload.a >` then `- 1`).
_DASH_LINE = re.compile(r"\n[ \t]*- [ \t]*(?:[A-Za-z_(\"']|(?P<literal>[0-9\[{-]))")
_ENDS_OPERAND = re.compile(r"[\w)\]}\"'][ \t]*$")
_ENDS_KEYWORD = re.compile(r"(?<![\w.])(?:and|or|not|in|is|if|else)[ \t]*$")  # operators too


class _Loader(yaml.SafeLoader):
    def __init__(self, stream: str, file: str) -> None:
        super().__init__(stream)
        self.file = file
        self.problems: list[ConfigError] = []
        self._breaks = ([m.end() for m in _BREAKS.finditer(stream)]
                        if _EXOTIC_BREAKS.search(stream) else None)

    def line_at(self, mark: yaml.Mark) -> int:
        """The 1-based line of `mark`, as an editor counts lines."""
        if self._breaks is None:
            return int(mark.line) + 1
        return bisect.bisect_right(self._breaks, mark.index) + 1


def _in_flow(text: str, index: int) -> bool:
    """Whether `index` is inside a `[...]` or `{...}` opened earlier on its line (outside
    quotes, roughly): where YAML's flow syntax gives unquoted text its own meaning."""
    start = text.rfind("\n", 0, index) + 1
    depth, quote = 0, ""
    for char in text[start:index]:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth = max(0, depth - 1)
    return depth > 0


def _unquoted_hidden_break(text: str) -> re.Match[str] | None:
    """The first YAML-only line break outside a quoted value (in a comment, a plain value, a
    key), where it changes what YAML reads; one inside quotes is part of the value."""
    if _EXOTIC_BREAKS.search(text) is None:  # (nearly always: no second pass)
        return None
    starts: list[int] = []
    ends: list[int] = []
    scanned = len(text)
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if isinstance(token, yaml.ScalarToken) and token.style in ("'", '"'):
                starts.append(token.start_mark.index)
                ends.append(token.end_mark.index)
    except yaml.MarkedYAMLError as exc:  # up to the error: a break there may be its cause
        scanned = exc.problem_mark.index if exc.problem_mark is not None else 0
    except yaml.YAMLError:
        scanned = 0
    for found in _EXOTIC_BREAKS.finditer(text, 0, scanned + 1):
        # The quoted value starting last at or before it (values do not overlap).
        i = bisect.bisect_right(starts, found.start()) - 1
        if i < 0 or found.start() >= ends[i]:
            return found
    return None


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> Any:
    data = LineDict()
    data.line = loader.line_at(node.start_mark)
    data.key_lines = {}
    yield data
    # Duplicates are looked for among the keys written here; `<<` merged keys may be overridden.
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
            continue
        key = loader.construct_object(key_node)
        line = loader.line_at(key_node.start_mark)
        if key in seen:
            loader.problems.append(ConfigError(
                f"duplicate key {key!r} (first written at line {seen[key]})", loader.file, line))
        seen[key] = line
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            loader.problems.append(ConfigError(
                "a mapping key must be a scalar", loader.file, loader.line_at(key_node.start_mark)))
            continue
        data[key] = _value(loader, value_node, key)
        data.key_lines[key] = loader.line_at(key_node.start_mark)
        if _folded_dash(loader, value_node):
            data.folded_dash = data.folded_dash | {key}
        if isinstance(value_node, yaml.ScalarNode) and value_node.style == "|":
            # Its text starts on the line after the `|` (a literal block keeps its lines).
            data.block_lines = {**(data.block_lines or {}),
                                key: loader.line_at(value_node.start_mark) + 1}


def _folded_dash(loader: _Loader, node: yaml.Node) -> bool:
    """A plain scalar, or a `>`/`|` block, that runs on to a line starting with `- ` (see
    LineDict.folded_dash; in a block the line stays, and Jinja reads it as a subtraction too).
    A quoted value is taken as written."""
    return isinstance(node, yaml.ScalarNode) and node.style in (None, ">", "|") \
        and node.start_mark.line != node.end_mark.line \
        and _dash_line(loader.buffer, node.start_mark.index, node.end_mark.index)


def _dash_line(text: str, start: int, end: int) -> bool:
    for m in _DASH_LINE.finditer(text, start, end):
        if m.group("literal") is None or (_ENDS_OPERAND.search(text, start, m.start())
                                          and not _ENDS_KEYWORD.search(text, start, m.start())):
            return True
    return False


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> Any:
    data = LineList()
    data.line = loader.line_at(node.start_mark)
    data.item_lines = [loader.line_at(child.start_mark) for child in node.value]
    data.folded_dash = frozenset(i for i, child in enumerate(node.value)
                                 if _folded_dash(loader, child))
    yield data
    data.extend(_value(loader, child) for child in node.value)


_CONDITION_KEYS = ("when", "all", "any", "not")


def _value(loader: _Loader, node: yaml.Node, key: Any = None) -> Any:
    """A value as constructed; a template written unquoted (`- {{ payload.ref }}`, which YAML
    reads as a mapping in a mapping) as its text, with the one error that says to quote it
    (the schema's `must be a string, got a mapping` pointed elsewhere)."""
    if _unquoted_template(node):
        text = loader.buffer[node.start_mark.index:node.end_mark.index]
        what, fix = ("a template", f"quote the whole value ({_quoted(text)})")
        if key in _CONDITION_KEYS:  # quoted, its braces would be an error still
            what, fix = ("a condition", "a `when` is an expression already: write it without "
                         f"the braces ({key}: {_plain(text[2:-2].strip())})")
        loader.problems.append(ConfigError(f"{text} is read by YAML as a mapping, not {what}: "
                                           f"{fix}", loader.file, loader.line_at(node.start_mark)))
        return text
    return loader.construct_object(node, deep=True)


def _quoted(text: str) -> str:
    """`text` as a quoted YAML value: in single quotes where double quotes would need
    escapes (`"{{ x | default("a") }}"` is itself a YAML error)."""
    if '"' in text or "\\" in text:
        return "'" + text.replace("'", "''") + "'"
    return f'"{text}"'


def _plain(text: str) -> str:
    """`text` as a YAML value: as it is where YAML reads it so (`payload.a == "x"`), else
    quoted (`"x" in payload.y` would end at the quote)."""
    if text[:1] in "\"'!&*[]{}|>%@`#,?:-" or ": " in text or " #" in text:
        return _quoted(text)
    return text


def _unquoted_template(node: yaml.Node) -> bool:
    """`{{ x }}` as YAML parses it: a flow mapping whose one key is a flow mapping of one key
    with no value, and no value of its own."""
    def one_empty(n: yaml.Node) -> yaml.Node | None:
        if isinstance(n, yaml.MappingNode) and n.flow_style and len(n.value) == 1:
            key, value = n.value[0]
            if isinstance(value, yaml.ScalarNode) and value.tag.endswith(":null") and not value.value:
                return cast(yaml.Node, key)
        return None

    inner = one_empty(node)
    return inner is not None and one_empty(inner) is not None


class WrittenInt(int):
    """An int that YAML read from other text than its own digits (`0123` is 83, `0x1F` 31,
    `12_345` 12345, `12:30` 750): where the text matters (a secret, an argument), the loader
    can tell."""

    written: str

    def __new__(cls, value: int, written: str) -> WrittenInt:
        self = super().__new__(cls, value)
        self.written = written
        return self


class WrittenFloat(float):
    """A float that YAML read from other text than its own (`3.10` is 3.1, `1e3` 1000.0):
    where a string is expected (an argument), the text as written is taken."""

    written: str

    def __new__(cls, value: float, written: str) -> WrittenFloat:
        self = super().__new__(cls, value)
        self.written = written
        return self


def _construct_int(loader: _Loader, node: yaml.ScalarNode) -> Any:
    try:
        value = yaml.SafeLoader.construct_yaml_int(loader, node)
        written = node.value == str(value)
    except ValueError:  # past the 4,300 digits Python converts between int and text
        problem = NonFinite(f"a number of {len(node.value):,} characters is too long to be "
                            "read", loader.file, loader.line_at(node.start_mark))
        problem.alone = _one_value_line(node.start_mark)
        loader.problems.append(problem)
        return 0  # (as for .inf: what its field says of it at that line is not said)
    return value if written else WrittenInt(value, node.value)


class NonFinite(ConfigError):
    """`.inf` or `.nan` where a number was written, or a number too long to read: read as 0
    to go on loading. `alone`: the only value on its line (`tolerance: .inf`), so any other
    error there is about it."""

    alone = False


# A line holding one key (or list item) and one value, not a flow mapping's: its
# non-finite value (_ALONE), or any one (_ONE_VALUE).
_ONE_KEY = r"\s*(?:-\s+)*(?:[^\s{}\[\],#][^{}\[\],#]*?:\s+)?"
_ALONE = re.compile(_ONE_KEY + r"[-+]?\.(?:inf|nan)\s*(?:#.*)?", re.IGNORECASE)
_ONE_VALUE = re.compile(_ONE_KEY + r"[^\s{}\[\],#]+\s*(?:#.*)?")


def _one_value_line(mark: yaml.Mark) -> bool:
    """Whether the value at `mark` is the only one on its line (`burst: 0xfff...`)."""
    return _line_matches(mark, _ONE_VALUE)


def _alone_on_line(mark: yaml.Mark) -> bool:
    return _line_matches(mark, _ALONE)


def _line_matches(mark: yaml.Mark, pattern: re.Pattern[str]) -> bool:
    buffer = getattr(mark, "buffer", None)
    if not isinstance(buffer, str):
        return False
    start = buffer.rfind("\n", 0, mark.index) + 1
    end = buffer.find("\n", mark.index)
    return pattern.fullmatch(buffer[start:end if end >= 0 else len(buffer)].rstrip("\0")) is not None


def _construct_float(loader: _Loader, node: yaml.ScalarNode) -> Any:
    value = yaml.SafeLoader.construct_yaml_float(loader, node)
    if not math.isfinite(value):  # `.inf`, `.nan`: JSON, the stores and actions have none
        problem = NonFinite(f"{node.value!r} is not a finite number", loader.file,
                            loader.line_at(node.start_mark))
        problem.alone = _alone_on_line(node.start_mark)
        loader.problems.append(problem)
        return 0.0  # (what its field then says of it at that line is not said: Ctx.error)
    return value if node.value == str(value) else WrittenFloat(value, node.value)


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)
_Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)
_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)

# YAML 1.2 booleans: only true/false. YAML 1.1 also reads on/off/yes/no as booleans, which
# would turn `retry: {on: [failed]}` into the key True.
# Dates stay strings too: a template compares them with payload strings.
_BOOL = "tag:yaml.org,2002:bool"
_DROPPED = (_BOOL, "tag:yaml.org,2002:timestamp")
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _DROPPED]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


# Values one file may hold once its aliases are expanded. Aliases share what they name, but
# everything after loading walks the values as a tree: ten levels of ten `*ref`s in an
# 11-line file are 10 ** 10 values (it stalled a live server's reloads, and `check`, for good).
MAX_VALUES = 200_000


_SURROGATE = re.compile("[\ud800-\udfff]")


def _surrogates(data: Any, file: str) -> list[ConfigError]:
    """Each text holding a lone surrogate (`"\\ud800"`; PyYAML does not join an escaped pair,
    `"\\ud83d\\ude00"`, into one character either): no store can hold it, so a rule named
    so, or a value sent so, failed every delivery it met with a 500."""
    found: list[ConfigError] = []
    todo: list[tuple[Any, int]] = [(data, getattr(data, "line", 0))]
    while todo:
        value, line = todo.pop()
        if isinstance(value, LineDict):
            todo.extend((x, value.line_of(k)) for k, v in value.items() for x in (k, v))
        elif isinstance(value, LineList):
            todo.extend((v, value.line_of(i)) for i, v in enumerate(value))
        elif isinstance(value, str) and _SURROGATE.search(value) and \
                line not in {e.line for e in found}:  # (an alias, a `<<` merge: once)
            found.append(ConfigError(
                "a `\\u` escape of half a character (a lone surrogate, U+D800 to U+DFFF), "
                "which is no text: write the character itself, or `\\U0001F600` for one "
                "past U+FFFF", file, line))
    return found


def _too_many_values(data: Any) -> bool:
    count, todo = 0, [data]
    while todo:
        value = todo.pop()
        count += 1
        if count > MAX_VALUES:
            return True
        if isinstance(value, dict):
            todo.extend(value.values())
        elif isinstance(value, list):
            todo.extend(value)
    return False


# A `{{` where a plain (unquoted) value starts: after `key: `, `- `, `[` or `, `.
_UNQUOTED_TEMPLATE = re.compile(r"(?:^\s*-\s+|:\s+|[\[,]\s*)\{\{")
_UNQUOTED_CONDITION = re.compile(r"^\s*(?:-\s+)?(?:when|all|any|not):\s+\{\{")


def _line_before(text: str, index: int) -> tuple[int, str] | None:
    """The line before the one holding `index`, skipping blank and comment lines: (its
    index in `text`, its text)."""
    start = text.rfind("\n", 0, index)
    while start > 0:
        prev = text.rfind("\n", 0, start) + 1
        line = text[prev:start]
        if line.strip() and not line.lstrip().startswith("#"):
            return prev, line
        start = prev - 1
    return None


def _line(text: str, index: int) -> str:
    """The line of `text` that holds `index`."""
    start = text.rfind("\n", 0, index) + 1
    end = text.find("\n", index)
    return text[start:end if end >= 0 else len(text)]


_FLOW_CONTEXTS = {"while parsing a flow mapping": "{", "while parsing a flow sequence": "["}
_CLOSING = {"{": "}", "[": "]"}


def _unclosed(exc: yaml.MarkedYAMLError, text: str) -> tuple[str, yaml.Mark] | None:
    """The `{` or `[` (and where it opened) that the syntax error `exc` is inside of: a
    half-written file's unclosed bracket is reported where YAML gave up, lines later or past
    the file's end. PyYAML's context mark where it names the collection; where it names only
    the node it expected (`hooks: [`), the innermost left open before the error, scanned."""
    if exc.context in _FLOW_CONTEXTS and exc.context_mark is not None:
        return _FLOW_CONTEXTS[exc.context], exc.context_mark
    if exc.context != "while parsing a flow node" or exc.problem_mark is None:
        return None
    opened: list[yaml.Token] = []
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if token.start_mark.index >= exc.problem_mark.index:
                break
            if isinstance(token, yaml.FlowSequenceStartToken | yaml.FlowMappingStartToken):
                opened.append(token)
            elif isinstance(token, yaml.FlowSequenceEndToken | yaml.FlowMappingEndToken) \
                    and opened:
                opened.pop()
    except yaml.YAMLError:  # (the parser's error came first: what was scanned is enough)
        pass
    if not opened:
        return None
    token = opened[-1]
    return ("[" if isinstance(token, yaml.FlowSequenceStartToken) else "{"), token.start_mark


def parse_yaml(text: str, file: str) -> tuple[Any, list[ConfigError]]:
    """The document's data and every problem found (a syntax error ends parsing)."""
    try:
        loader = _Loader(text, file)  # its reader refuses control characters at once
    except yaml.reader.ReaderError as exc:
        line = len(_BREAKS.findall(text[: exc.position])) + 1
        what = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        return None, [ConfigError(
            f"a control character ({what}) that YAML does not allow: write it as an escape in a "
            "double-quoted string (\"\\x01\")", file, line)]
    if (hidden := _unquoted_hidden_break(text)) is not None:
        # `# note<U+2028>more: x`: the rest of a comment read as a key of its own. Editors
        # show no break there: no hint about the text around it would help.
        return None, [ConfigError(
            f"an invisible line break (U+{ord(hidden[0]):04X}) that YAML reads as the end of a "
            "line, though editors do not: delete it, or write it as an escape in a "
            f"double-quoted string (\"\\u{ord(hidden[0]):04x}\")", file,
            len(_BREAKS.findall(text[:hidden.start()])) + 1)]
    try:
        data = loader.get_single_data()
        if _too_many_values(data):
            return None, [ConfigError(
                f"the file holds more than {MAX_VALUES} values once its YAML aliases (*name) "
                "are expanded", file, 1)]  # the whole file: no one line holds them
    except RecursionError:  # where the reader stopped: the deep part, or the file's end
        last = max(1, len(_BREAKS.findall(text)))
        return None, [ConfigError(
            "nested too deeply (hundreds of levels of lists or mappings)", file,
            min(loader.line_at(loader.get_mark()), last))]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if exc.context_mark is not None and "end of stream" in (exc.problem or ""):
            mark = exc.context_mark  # an unclosed quote or bracket: where it opened
        line = loader.line_at(mark) if mark else 0
        what = " ".join(p for p in (exc.context, exc.problem) if p)
        before = _line_before(text, mark.index) if mark is not None else None
        opened = _unclosed(exc, text)
        if opened is not None and "<stream end>" in (exc.problem or ""):
            # PyYAML says `got '<stream end>'`, not "end of stream": said at the line after
            # the last one, it was no help
            line = loader.line_at(opened[1])
            what = (f"the `{opened[0]}` opened here (column {opened[1].column + 1}) is not "
                    f"closed: a `{_CLOSING[opened[0]]}` is missing")
        elif "found character '\\t'" in (exc.problem or "") and mark is not None:
            # (before the hints about brackets: `[a,\tb]` is this too)
            what += (" (YAML indents with spaces, not tabs: replace the tab with spaces)"
                     if not _line(text, mark.index)[:mark.column].strip() else
                     " (a tab outside a quoted value is not a space to YAML: write spaces)")
        elif exc.problem == "could not find expected ':'" and exc.context_mark is not None:
            # `when event == "push"`: said at the line after, where YAML gave up
            line = loader.line_at(exc.context_mark)
            what = "this line has no `:` after its key (`when: ...`, `hook: ...`)"
        elif exc.problem == "mapping values are not allowed here" and before is not None \
                and mark is not None and before[1].strip() and ":" not in before[1] \
                and ": " not in text[text.rfind("\n", 0, mark.index) + 1:mark.index]:
            # `- name r1` (or `-name: r1`) on the line before: not a key, so this one's is
            # taken for part of a value
            line = len(_BREAKS.findall(text[:before[0]])) + 1
            what = ("this line has no `: ` after its key (`- name: r1`, with a space after "
                    "`-` and `:`), so YAML reads the next line's key as part of its value")
        elif "unknown escape character" in (exc.problem or ""):
            # `when: "\[skip ci\]" not in ...`, `- "... search(\"\\d+\")"`
            what += (" (in a double-quoted YAML value a backslash starts an escape: put the "
                     "value in single quotes, where it is kept as written and a ' is written "
                     "''; only a pattern takes one, `is search(\"\\[skip ci\\]\")`: `in` and "
                     "`==` compare text as it is, `\"[skip ci]\" in ...`)")
        elif mark is not None and _UNQUOTED_CONDITION.search(_line(text, mark.index)):
            what += (" (a `when` is an expression already: write it without {{ }}, "
                     "`when: payload.x == 'a'`)")
        elif mark is not None and _UNQUOTED_TEMPLATE.search(_line(text, mark.index)):
            # `- {{ payload.ref }}-suffix`: YAML read `{{ ... }}` as a mapping, then text after it
            what += (" (a value starting with `{{` is read by YAML as a mapping: quote the "
                     "whole value, `- \"{{ payload.ref }}-suffix\"`)")
        elif exc.problem == "mapping values are not allowed here":
            what += " (a value holding ': ', such as a `when` expression, must be quoted)"
        elif ("found '<scalar>'" in (exc.problem or "") and mark is not None
              and text[:mark.index].rstrip(" \t")[-1:] in ("'", '"')):
            # `when: "dba" in payload.teams`: YAML took "dba" as the whole value
            what += (" (a value that starts with a quote ends where the quote closes: quote "
                     "the whole value, `when: '\"dba\" in payload.teams'`)")
        elif opened is not None and loader.line_at(opened[1]) != line:
            # `a: {verify: none` then more lines: YAML gives up at a later line
            bracket, at = opened
            what += (f" (inside the `{bracket}` opened at line {loader.line_at(at)}, column "
                     f"{at.column + 1}: a `{_CLOSING[bracket]}` missing there, or an item here "
                     "holding `[`, `]`, `{`, `}`, `,`, `|` or `: ` that must be quoted)")
        elif mark is not None and _in_flow(text, mark.index):
            # `any: [a, headers["X"] | default("")]`: a `[`, `]`, `,`, `|` ends or breaks an
            # unquoted item of a [...] list (or {...} mapping)
            what += (" (inside [...] or {...}, an item holding `[`, `]`, `{`, `}`, `,`, `|` "
                     "or `: ` must be quoted: `any: ['a == 1', 'headers[\"X\"] == \"y\"']`, "
                     "or write the list one `- item` a line)")
        return None, [ConfigError(f"YAML syntax error: {what}", file, line)]
    except yaml.YAMLError as exc:
        return None, [ConfigError(f"YAML error: {exc}", file, 0)]
    finally:
        loader.dispose()
    return data, sorted(loader.problems + _surrogates(data, file), key=lambda p: p.line)


def text_line(node: Any, path: tuple[Any, ...], at: int | None) -> int | None:
    """The file's line of line `at` of the literal block (`key: |`) at `path` under `node`,
    or None where the value is no such block (its lines are folded, or written on one)."""
    if at is None or not path:
        return None
    for step in path[:-1]:
        if not isinstance(node, LineDict | LineList) or step not in (
                node if isinstance(node, LineDict) else range(len(node))):
            return None
        node = node[step]
    blocks = getattr(node, "block_lines", None)
    if not blocks or path[-1] not in blocks:
        return None
    return int(blocks[path[-1]]) + at - 1


def line_of(node: Any, path: tuple[Any, ...], default: int = 0) -> int:
    """The line of the deepest part of `path` under `node` that exists in the file."""
    line = getattr(node, "line", 0) or default
    for step in path:
        found = (isinstance(node, LineDict) and step in node) or (
            isinstance(node, LineList) and isinstance(step, int) and 0 <= step < len(node))
        if not found:
            break
        line = node.line_of(step)
        node = node[step]
    return line

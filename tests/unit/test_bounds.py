"""What a template may build: each way of turning a small payload into a huge string, number,
loop or regex search is refused before it runs, with a reason; ordinary uses still work."""

from __future__ import annotations

from typing import Any

import pytest

from hookrunner import bounds
from hookrunner.errors import ConfigError, TemplateError
from hookrunner.templating import compile_expression, compile_template

BIG = 2_000_000_000


@pytest.mark.parametrize(("text", "scope", "why"), [
    ("{{ p.s | center(p.w) }}", {"s": "a", "w": BIG}, "center"),
    ("{{ p.s.center(p.w) }}", {"s": "a", "w": BIG}, "center"),
    ("{{ p.s.ljust(p.w) }}{{ p.s.zfill(p.w) }}", {"s": "a", "w": BIG}, "too large"),
    ("{{ p.s | replace('a', 'a' * 1000000) }}", {"s": "a" * 2000}, "replace"),
    ("{{ p.s.replace('a', p.r) }}", {"s": "a" * 2000, "r": "b" * 1000}, "replace"),
    ("{{ (['a' * 1000000] * 1000) | join }}", {}, "join"),
    ("{{ ''.join(['a' * 1000000] * 1000) }}", {}, "join"),
    ("{{ p.s | indent(p.w) }}", {"s": "a\n" * 1000, "w": 100000}, "indent"),
    ("{{ ('%' ~ p.w ~ 'd') | format(1) }}", {"w": BIG}, "width"),
    ("{{ '%999999999d' % 1 }}", {}, "width"),
    ("{{ '%*d' % (p.w, 1) }}", {"w": BIG}, "'*' width"),
    ("{{ '{:>999999999}'.format(1) }}", {}, "width"),
    ("{{ '{:{}}'.format(1, p.w) }}", {"w": BIG}, "nested"),
    ("{{ ((p.b ** 10000) ** p.e) > 0 }}", {"b": 10, "e": 1000}, "**"),
    ("{{ p.b ** p.e }}", {"b": 10, "e": 100000}, "**"),
    ("{{ [1] | batch(p.n, 0) | list }}", {"n": BIG}, "batch"),
    ("{% for i in range(p.n) %}{% for j in range(p.n) %}{% endfor %}{% endfor %}x",
     {"n": 20000}, "loops take more than"),
    ("{% set ns = namespace(s='a') %}{{ ns.s }}", {}, "namespace"),
    # Found in review: loops over anything, weight rather than length, and other amplifiers.
    ("{% for a in p.xs %}{% for b in p.xs %}{% endfor %}{% endfor %}x", {"xs": [0] * 3000},
     "loops take more than"),
    ("{% for i in [0] * 50000 %}{% for j in [0] * 50000 %}{% endfor %}{% endfor %}", {},
     "loops take more than"),
    ("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", {}, "rendered text"),
    ("{{ ['x' * 1000000] * 1000000 }}", {}, "repetition"),
    ("{{ ([[0] * 1000000] * 60000) | join }}", {}, "too large"),
    ("{{ ([{'a': 'x' * 1000000}] * 2000) | join(attribute='a') }}", {}, "join"),
    ("{% set a = 'x' * 1000000 %}{% set a = a ~ a %}{{ a | length }}", {}, "(~)"),
    ("{{ ('x' * 1000000).translate({120: 'y' * 1000000}) }}", {}, "translate"),
    ("{{ ('x' * 100000) | wordwrap(1, true, 'y' * 1000) }}", {}, "wordwrap"),
    ("{{ 'x'.encode().center(2000000000) }}", {}, "center"),
    ("{{ '%(a(b)c)999999999s' % {'a(b)c': 1} }}", {}, "width"),
    ("{{ p.s is match('(a|aa)+$') }}", {"s": "a" * 40 + "!"}, "regular expression took longer"),
    ("{{ p.s is search(p.re) }}", {"s": "a" * 40 + "!", "re": "(a|aa)+$"}, "took longer"),
    # Found in the second review.
    ("{{ (range(100000) | map('string') | map('replace', '', 'x' * 1000) | join) | length }}",
     {}, "join"),
    ("{{ ''.join(range(100000) | map('string') | map('replace', '', 'x' * 1000)) }}", {},
     "join"),
    ("{% set s = 'a' * 1000000 %}{{ (s + s) | length }}", {}, "sum"),
    ("{{ ('{0}' * 300).format('a' * 1000000) | length }}", {}, "formatted"),
    ("{{ ('%(a)s' * 300) % {'a': 'a' * 1000000} }}", {}, "formatted"),
    ("{% set s = 'x' * 1000000 %}{% set l = [s, s, s] %}{{ l | string | length }}", {},
     "written-out"),
    ("{% set s = 'x' * 1000000 %}{% set l = [s, s, s] %}{{ l }}", {}, "written-out"),
    ("{{ (2 ** 65000 - 1) * (2 ** 65000 - 1) }}", {}, "product"),
    ("{% set hookrunner_steps = ''.join %}{% for c in 'ab' %}{% endfor %}", {}, "reserved"),
    ("{{ range(1000) | batch(1) | sum(start=[]) }}", {}, "sum()"),
    ("{% for i in range(100000) %}{% if ('a' * 24 ~ 'b') is match('(a|aa)+$') %}{% endif %}"
     "{% endfor %}", {}, "took longer"),
    # Found in session 23's audit: small widths or fields adding up, and other amplifiers.
    ("{{ ('{0:999999}' * p.n).format(1) }}", {"n": 1100}, "formatted"),
    ("{{ ('%(a)999999d' * p.n) % {'a': 1} }}", {"n": 1100}, "formatted"),
    ("{{ ('%(a)s' * 100) | format(a='x' * 1000000) }}", {}, "formatted"),
    ("{{ range(1000) | list | tojson(indent=100000) }}", {}, "written-out"),
    ("{{ ('www.a.co ' * 1000) | urlize(target='x' * 100000) }}", {}, "urlize"),
    ("{{ (1).to_bytes(p.n, 'big') | length }}", {"n": 1500000000}, "to_bytes"),
    ("{{ 'x' * 999999 ~ 'yy' }}", {}, "(~)"),
    ("{{ ('x' * 999999).ljust(1000001) }}", {}, "too large"),
    # Session 32's review: a filter writes a list or a number out with str() first, so its
    # bound is on that text, not only where the payload gave text.
    ("{{ p.t | replace('{n}', p.n) }}", {"t": "{n}" * 2000, "n": ["x" * 2000]},
     "replace()'s result"),
    ("{{ p.t | replace('{n}', p.n) }}", {"t": "{n}" * 2000, "n": 10 ** 1999},
     "replace()'s result"),
    ("{{ p.t | replace(p.o, 'x' * 2000) }}", {"t": ["ab"] * 1000, "o": "'"},
     "replace()'s result"),
    ("{{ range(2000) | join(p.sep) }}", {"sep": ["x" * 2000]}, "join()'s result"),
    ("{{ p.l | join }}", {"l": [10 ** 4000] * 300}, "join()'s result"),
    ("{{ p.f | format(1) }}", {"f": ["%3000000s"]}, "width"),
    ("{{ p.s | indent(p.w) }}", {"s": ["a"], "w": BIG}, f"indent({BIG})"),
    ("{{ p.w | urlize(target='x' * 100000) }}", {"w": ["www.a.co"] * 1000}, "urlize()'s result"),
    # Session 33's probe: a list is a translate table too, and more filters write a dict or
    # a list out with str() first.
    ("{{ ('\\x00' * p.n).translate([p.s * 100000]) | length }}", {"n": 300, "s": "abcdefghij"},
     "translate()'s result"),
    *((f"{{{{ dict.fromkeys(range(p.n), p.s * 100000) | {f} | length }}}}",
       {"n": 100, "s": "x"}, "written-out")
      for f in ("safe", "escape", "e", "forceescape", "trim", "striptags", "upper", "lower",
                "title", "capitalize", "wordcount", "urlencode", "center(1)")),
    ("{{ {'a': p.s * 1000000, 'b': p.s * 1000000} | xmlattr | length }}", {"s": "x"},
     "written-out"),
])
def test_what_would_be_too_large_or_too_slow_is_refused(text: str, scope: dict[str, Any],
                                                       why: str, monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    if why == "loops take more than":
        # The step bound, not the clock's: a million steps took longer than the render's
        # 0.5 s on a loaded machine, and the time limit answered first.
        monkeypatch.setattr(bounds, "MAX_ITERATIONS", 10_000)
    try:
        compiled = compile_template(text)
    except ConfigError as exc:  # refused when the rule is loaded: as good
        assert why in exc.message, exc.message
        return
    with pytest.raises(TemplateError, match=r"refused by the sandbox|undefined") as info:
        compiled.render({"p": scope})
    assert why in str(info.value), info.value


@pytest.mark.parametrize("text", ["{% set x %}a{% endset %}{{ x }}",
                                  "{% filter upper %}a{% endfilter %}"])
def test_block_bodies_are_not_available(text: str) -> None:
    with pytest.raises(ConfigError, match="not available in rules"):
        compile_template(text)


def test_a_constant_format_is_not_built_when_the_rule_is_compiled() -> None:
    """Jinja folds constants at compile time: `check` itself built a gigabyte here."""
    condition = compile_expression("'%999999999d' % 1 != ''")  # compiles at once, builds nothing
    with pytest.raises(TemplateError, match="width"):
        condition.render({})


@pytest.mark.parametrize(("text", "shown"), [
    ("{{ p.s | center(9) }}", "ab".center(9)),
    ("{{ p.s.rjust(4, '0') }}", "00ab"),
    ("{{ p.l | join(',') }}", "a,b,c"),
    ("{{ '%05.1f' % 3.14159 }}", "003.1"),
    ("{{ '{:>4}'.format(p.s) }}", "  ab"),
    ("{{ 2 ** 64 }}", 18446744073709551616),
    ("{% for i in range(3) %}{% for j in range(2) %}{{ i }}{{ j }} {% endfor %}{% endfor %}",
     "00 01 10 11 20 21 "),
    ("{{ p.l | batch(2) | list }}", [["a", "b"], ["c"]]),
    ("{{ p.s | replace('a', 'xx') }}", "xxb"),
    ("{{ p.s is match('a+b$') }}", True),
    ("{{ '%s-%s' % (p.s, 1) }}{{ '%(x)05d' % {'x': 7} }}{{ '100%% %s' % 'ok' }}", "ab-100007100% ok"),
    ("{{ p.s ~ '-' ~ p.l | join('+') }}", "ab-a+b+c"),
    ("{% for c in p.l %}{{ loop.index }}{{ c }}{% endfor %}", "1a2b3c"),
    ("{{ p.l | map('upper') | join }}", "ABC"),
    ("{{ '-'.join(p.l | map('upper')) }}", "A-B-C"),
    ("{{ p.s | upper }}{{ p.l | lower }}{{ p.l | trim }}", "AB['a', 'b', 'c']['a', 'b', 'c']"),
    ("{{ 'ab'.translate([0, 1]) }}", "ab"),
])
def test_ordinary_uses_still_work(text: str, shown: Any) -> None:
    assert compile_template(text).render({"p": {"s": "ab", "l": ["a", "b", "c"]}}) == shown


def test_the_renders_of_one_delivery_share_a_deadline() -> None:
    """Each condition may take up to 0.5 s; a delivery's renders together no more than 1 s."""
    from hookrunner import bounds

    slow = compile_template("{% for i in range(100000) %}{% if ('a' * 16 ~ 'b') is "
                            "match('(a|aa)+$') %}{% endif %}{% endfor %}")
    token = bounds.start_delivery()
    try:
        reasons = []
        for _ in range(4):
            with pytest.raises(TemplateError) as info:
                slow.render({})
            reasons.append(str(info.value))
    finally:
        bounds.end_delivery(token)
    assert "took longer than 0.5 s" in reasons[0]
    assert "the delivery's templates took longer than 1.0 s" in reasons[-1], reasons


def test_conditions_decided_without_a_render_share_the_deliverys_deadline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`payload.s is match(...)` is decided without a Jinja render (fastclause), and its
    regex had 50 ms whatever was left of the delivery's 1 s, then was rendered again after a
    time-out: 100 rules of a backtracking pattern held the event loop for 6 s."""
    from hookrunner import bounds

    limits: list[float] = []  # each search's time limit, as the regex module is given it
    real = bounds.compile_regex

    class Recorded:
        def __init__(self, pattern: str, longest: int = bounds.MAX_PATTERN) -> None:
            self._compiled = real(pattern, longest)

        def match(self, text: str, **kwargs: Any) -> Any:
            limits.append(kwargs["timeout"])
            return self._compiled.match(text, **kwargs)

    monkeypatch.setattr(bounds, "compile_regex", Recorded)
    clause = compile_expression('payload.s is match("(a|aa)+$")').clauses()[0]
    assert clause._fast is not None  # the fast path is what this tests
    scope = {"payload": {"s": "a" * 60 + "b"}}
    token = bounds.start_delivery()
    try:
        reasons = []
        for _ in range(40):  # at least 50 ms each until the delivery's 1 s is spent
            with pytest.raises(TemplateError) as info:
                clause.evaluate(scope)
            reasons.append(str(info.value))
    finally:
        bounds.end_delivery(token)
    assert reasons[0] == ("refused by the sandbox: the regular expression took longer than "
                          "0.05 s on this value (in 'payload.s is match(\"(a|aa)+$\")')")
    assert "the delivery's templates took longer than 1.0 s" in reasons[-1], reasons
    assert len(limits) == 40, "a clause that timed out was searched again by a render"
    assert limits[-1] == 0.001, "the search past the delivery's deadline had its own 50 ms"


@pytest.mark.parametrize(("text", "payload"), [
    # Filters that walk a list in Python have none of the render's own checks: a minute
    # of the event loop from a two-byte payload.
    ("(payload.s * 1000000) | map('upper') | map('lower') | map('upper') | map('lower')"
     " | map('upper') | map('lower') | map('upper') | map('lower') | list | length > 0",
     {"s": "a"}),
    ('"dba" in payload.alerts | map(attribute="labels.team", default="")', {"alerts": [{}] * 2_000_000}),
    ('payload.v | select("gt", 95) | map("string") | map("int") | list | length > 0',
     {"v": list(range(300_000))}),
])
def test_a_render_past_its_time_in_filters_is_cut_short(text: str, payload: Any) -> None:
    """The watchdog interrupts it (hookrunner.overrun); afterwards nothing of it is left:
    the thread's later code and renders run as usual."""
    from hookrunner.rules.match import build_scope

    scope = build_scope(hook="h", delivery_id="d", received_at=0, headers=[], event=None,
                        query={}, payload=payload)
    with pytest.raises(TemplateError, match=r"took longer than 0\.5 s"):
        compile_expression(text).test(scope)
    with pytest.raises(TemplateError, match=r"took longer than 0\.5 s"):
        compile_template("{{ " + text + " }}").render(scope)
    small = {**scope, "payload": {"s": "a", "alerts": [], "v": [1]}}
    upper = compile_template("{{ payload.s | upper }}")
    assert all(upper.render(small) == "A" for _ in range(2000))
    total = 0
    for i in range(200_000):  # plain Python on this thread: no stray interruption lands
        total += i
    assert total == 19_999_900_000


@pytest.mark.parametrize(("pattern", "why"), [
    ("(?:a{2000}){2000}", r"counted repeats \({n}, {n,m}\) make about 4004000 parts"),
    ("a{99999999999}", "counted repeats"),
    ("(?x)(?:a{2 000}){2 000}", "counted repeats"),  # verbose: a count may hold spaces
    ("(?fi)(?:\u00df{300}){300}", "counted repeats"),  # folded case: 3 parts a letter
    ("|".join(f"w{i}" for i in range(3000)), "more than 10000 characters"),
])
def test_a_pattern_too_costly_to_compile_is_refused(pattern: str, why: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A payload's pattern (`is search(payload.p)`) of 17 characters compiled for seconds,
    holding the GIL, and was kept cached at 550 MB."""
    from hookrunner.rules.match import build_scope

    # Kept compiled when compiled within 2 ms: more on a loaded machine (not what is tested).
    monkeypatch.setattr(bounds, "_CACHED_COMPILE", 60.0)

    scope = build_scope(hook="h", delivery_id="d", received_at=0, headers=[], event=None,
                        query={}, payload={"s": "abc", "p": pattern})
    with pytest.raises(TemplateError, match=why):
        compile_expression("payload.s is search(payload.p)").test(scope)
    assert pattern not in bounds._compiled
    fine = {**scope, "payload": {"s": "refs/heads/main", "p": "^refs/heads/(main|rel-[0-9]{1,3})$"}}
    assert compile_expression("payload.s is match(payload.p)").test(fine) is True
    assert "^refs/heads/(main|rel-[0-9]{1,3})$" in bounds._compiled  # small: kept compiled


def test_a_glob_pattern_from_the_payload_is_bounded_and_not_kept(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`is glob(payload.p)` went straight to fnmatch, whose cache keeps 32,768 compiled
    patterns of any size (3 MB for one of 50,000 characters, kept for good)."""
    import fnmatch

    from hookrunner.rules.match import build_scope

    def scope(s: str, p: str) -> dict[str, Any]:
        return build_scope(hook="h", delivery_id="d", received_at=0, headers=[], event=None,
                           query={}, payload={"s": s, "p": p})

    test = compile_expression("payload.s is glob(payload.p)").test
    fnmatch._compile_pattern.cache_clear()
    long = "[a]*" * 12500
    with pytest.raises(TemplateError, match="glob pattern of more than 10000 characters"):
        test(scope("abc", long))
    monkeypatch.setattr(bounds, "_CACHED_COMPILE", 60.0)  # (what is kept, on a loaded machine)
    for i in range(300):  # many distinct long ones: compiled, used, let go
        assert test(scope("ab", f"a{'?' * 2000}{i}")) is False
    assert fnmatch._compile_pattern.cache_info().currsize == 0
    assert len(bounds._compiled) <= 128
    assert all(len(p) < 1100 for p in bounds._compiled)
    for s, p in (("refs/heads/main", "refs/heads/*"), ("a.b", "a?b"), ("x]", "[!a]]"),
                 ("*", "[*]"), ("a\nb", "a*b"), (":]", "[[:alpha:]]"), ("x]", "[![:space:]]*")):
        assert test(scope(s, p)) is fnmatch.fnmatchcase(s, p) is True, (s, p)
    # `regex` reads `[:digit:]` in a set as a POSIX class; fnmatch (`re`) as characters.
    for s, p in (("a1", "[a-z[:digit:]]*"), ("a", "[[:alpha:]]")):
        assert test(scope(s, p)) is fnmatch.fnmatchcase(s, p) is False, (s, p)


def test_a_constant_glob_is_checked_when_the_rule_is_loaded() -> None:
    with pytest.raises(ConfigError, match="glob pattern of more than 10000 characters"):
        compile_expression(f"payload.s is glob('{'a' * 10001}')")
    assert compile_expression("payload.s is glob('[a-z[:digit:]]*')") is not None


def test_a_single_expression_template_is_bounded_as_any_rendered_text() -> None:
    """`{{ ('{0:999999}' * payload.n).format(1) }}` in an argv: a 100 MB argument was
    stored (the store grew 300 MB), and 1100 of them a 500 with the delivery lost."""
    compiled = compile_template("{{ p.s }}")  # (a 5 MiB body may hold a long field)
    assert compiled.render({"p": {"s": "x" * 1_000_000}}) == "x" * 1_000_000  # at the bound
    with pytest.raises(TemplateError, match="rendered text would be too large"):
        compiled.render({"p": {"s": "x" * 1_000_001}})


def test_a_rendered_action_is_bounded_in_all() -> None:
    from hookrunner.rules import load_rules_text
    from hookrunner.rules.match import build_scope, render_action

    args = ", ".join(["'{{ payload.s }}'"] * 20)
    rule = f"  - {{name: a, hook: h, run: {{shell: {{argv: [x, {args}]}}}}}}\n"
    ruleset = load_rules_text({"r.yaml": "hooks:\n  h: {verify: none}\nrules:\n" + rule})
    scope = build_scope(hook="h", delivery_id="d", received_at=0, headers=[], event=None,
                        query={}, payload={"s": "y" * 900_000})
    with pytest.raises(TemplateError, match=r"the rendered action \(over 16000000 characters"):
        render_action(ruleset.rules[0], scope)
    small = {**scope, "payload": {"s": "y" * 1000}}
    assert render_action(ruleset.rules[0], small)["argv"][1] == "y" * 1000


@pytest.mark.parametrize(("text", "scope"), [
    # What the bounds must not refuse: each field weighs the value it writes, an indent the
    # items it indents, urlize the words that may be links.
    ("{{ ('%s: %s' | format('title', p.big)) | length }}", {"big": "x" * 600_000}),
    ("{{ ('%s: %s' % ('title', p.big)) | length }}", {"big": "x" * 600_000}),
    ("{{ '{}: {}'.format('title', p.big) | length }}", {"big": "x" * 600_000}),
    ("{{ '%(a)s-%(b)s' | format(a=p.big, b='y') | length }}", {"big": "x" * 600_000}),
    ("{{ (p.l | tojson(indent=2)) | length }}", {"l": [{"k": "v" * 30}] * 9_000}),
    ("{{ (p.t | urlize) | length }}", {"t": "plain words of prose " * 2_000}),
])
def test_ordinary_large_values_still_format(text: str, scope: dict[str, Any]) -> None:
    assert int(compile_template(text).render({"p": scope})) > 0

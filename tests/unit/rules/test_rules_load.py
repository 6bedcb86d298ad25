"""Loading rules files: every error reported as `file:line: message`, warnings, merging."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from hookrunner.errors import ConfigErrors
from hookrunner.rules import load_rules, load_rules_text
from hookrunner.rules.match import build_scope, evaluate
from hookrunner.rules.model import DEFAULT_MAX_BODY, RateLimit, Retry
from hookrunner.rules.report import format_check
from hookrunner.templating import Template

HOOK = """\
hooks:
  gh:
    verify: {none: {}}
"""


def errors_of(files: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        load_rules_text({k: textwrap.dedent(v) for k, v in files.items()})
    return [str(e) for e in info.value.errors]


def one(text: str) -> dict[str, str]:
    return {"r.yaml": HOOK + textwrap.dedent(text)}


# Lines 1-3 of every case are HOOK; the case's own text starts at line 4.
ERROR_CASES = [
    ("unknown top key", "extra: 1\n", "r.yaml:4: unknown key 'extra' in a rules file; allowed: "
     "hooks, rules"),
    ("rules not a list", "rules: {a: 1}\n", "r.yaml:4: rules must be a list, got a mapping"),
    ("rule not a mapping", "rules:\n  - just text\n", "r.yaml:5: rules[0] must be a mapping"),
    ("missing run", "rules:\n  - name: a\n    hook: gh\n", "r.yaml:5: rule 'a': 'run' is required"),
    ("missing name", "rules:\n  - hook: gh\n    run: {shell: {argv: [x]}}\n",
     "r.yaml:5: rules[0]: 'name' is required"),
    ("unknown rule key", "rules:\n  - name: a\n    hook: gh\n    run: {shell: {argv: [x]}}\n"
     "    colour: red\n", "r.yaml:8: unknown key 'colour' in rule 'a'; allowed: concurrency, "
     "description, hook, name, retry, run, timeout, when"),
    ("name not a string", "rules:\n  - name: [a]\n    hook: gh\n    run: {shell: {argv: [x]}}\n",
     "r.yaml:5: rules[0] name must be a non-empty string, got a list"),
    ("unknown hook", "rules:\n  - name: a\n    hook: [gh, nope]\n    run: {shell: {argv: [x]}}\n",
     "r.yaml:6: unknown hook 'nope'; defined hooks: gh"),
    ("two run types", "rules:\n  - name: a\n    hook: gh\n    run:\n      shell: {argv: [x]}\n"
     "      http: {url: x}\n", "r.yaml:7: rule 'a': run must have exactly one run type"),
    ("no run type", "rules:\n  - name: a\n    hook: gh\n    run: {}\n",
     "r.yaml:7: rule 'a': run must have exactly one run type"),
    ("unknown run type", "rules:\n  - name: a\n    hook: gh\n    run:\n      telnet: {}\n",
     "r.yaml:8: rule 'a': unknown run type 'telnet'"),
    ("runner error at its key", "rules:\n  - name: a\n    hook: gh\n    run:\n      shell:\n"
     "        argv: [x]\n        colour: red\n", "r.yaml:10: rule 'a': run.shell: unknown key "
     "'colour'"),
    ("template syntax in argv item", "rules:\n  - name: a\n    hook: gh\n    run:\n      shell:\n"
     "        argv:\n          - x\n          - '{{ payload.x '\n",
     "r.yaml:11: rule 'a': run.shell.argv[1]: template syntax error"),
    ("escape in env value", "rules:\n  - name: a\n    hook: gh\n    run:\n      shell:\n"
     "        argv: [x]\n        env:\n          A: '{{ x.__class__ }}'\n",
     "r.yaml:11: rule 'a': run.shell.env.A: access to '__class__' is not allowed"),
    ("bad when syntax", "rules:\n  - name: a\n    hook: gh\n    when: a ==\n"
     "    run: {shell: {argv: [x]}}\n", "r.yaml:7: rule 'a': when: template syntax error"),
    ("bad when list item", "rules:\n  - name: a\n    hook: gh\n    when:\n      - a\n      - b c\n"
     "    run: {shell: {argv: [x]}}\n", "r.yaml:9: rule 'a': when: template syntax error"),
    ("unknown when key", "rules:\n  - name: a\n    hook: gh\n    when:\n      maybe: [a]\n"
     "    run: {shell: {argv: [x]}}\n", "r.yaml:8: rule 'a': unknown when key 'maybe'; expected one of: "
     "all, any, not"),
    ("two when keys", "rules:\n  - name: a\n    hook: gh\n    when: {all: [a], any: [b]}\n"
     "    run: {shell: {argv: [x]}}\n", "r.yaml:7: rule 'a': a when mapping must have exactly one key"),
    ("nested bad when", "rules:\n  - name: a\n    hook: gh\n    when:\n      any:\n        - a\n"
     "        - not:\n            all: [b, 'c ==']\n    run: {shell: {argv: [x]}}\n",
     "r.yaml:11: rule 'a': when: template syntax error"),
    ("when any of a number", "rules:\n  - name: a\n    hook: gh\n    when: {any: 3}\n"
     "    run: {shell: {argv: [x]}}\n", "r.yaml:7: rule 'a': when.any must be a condition or a list of them"),
    ("when number", "rules:\n  - name: a\n    hook: gh\n    when: 3\n"
     "    run: {shell: {argv: [x]}}\n", "r.yaml:7: rule 'a': when must be an expression string"),
    ("empty when", "rules:\n  - name: a\n    hook: gh\n    when: []\n"
     "    run: {shell: {argv: [x]}}\n", "r.yaml:7: rule 'a': when: an empty list of conditions"),
    ("unquoted true in argv", "rules:\n  - name: a\n    hook: gh\n    run: {shell: {argv: [true]}}\n",
     "r.yaml:7: rule 'a': run.shell.argv[0] must be a string, got a boolean (YAML reads an unquoted "
     "true or false as one: quote it, e.g. \"true\")"),
    ("bad timeout", "rules:\n  - name: a\n    hook: gh\n    run: {shell: {argv: [x]}}\n"
     "    timeout: soon\n", "r.yaml:8: rule 'a' timeout: expected a duration"),
    ("zero timeout", "rules:\n  - name: a\n    hook: gh\n    run: {shell: {argv: [x]}}\n"
     "    timeout: 0s\n", "r.yaml:8: rule 'a' timeout must be more than zero"),
    ("timeout under a millisecond", "rules:\n  - name: a\n    hook: gh\n    run: {shell: {argv: [x]}}\n"
     "    timeout: 0.0001\n", "r.yaml:8: rule 'a' timeout must be at least 1ms, got 0.0001s"),
    ("retry attempts", "rules:\n  - name: a\n    hook: gh\n    run: {shell: {argv: [x]}}\n"
     "    retry:\n      attempts: 0\n", "r.yaml:9: rule 'a' retry attempts must be a whole "
     "number from 1 to 10,000, got 0"),
    ("retry attempts past a SQLite integer", "rules:\n  - name: a\n    hook: gh\n"
     "    run: {shell: {argv: [x]}}\n    retry:\n      attempts: 99999999999999999999999\n",
     "r.yaml:9: rule 'a' retry attempts must be a whole number from 1 to 10,000, got "
     "99999999999999999999999"),
    ("retry backoff", "rules:\n  - name: a\n    hook: gh\n    run: {shell: {argv: [x]}}\n"
     "    retry:\n      backoff: later\n", "r.yaml:9: rule 'a' retry backoff: expected a "
     "duration"),
    ("retry on", "rules:\n  - name: a\n    hook: gh\n    run: {shell: {argv: [x]}}\n"
     "    retry:\n      on:\n        - failed\n        - crashed\n", "r.yaml:11: rule 'a' retry "
     "on: unknown outcome 'crashed'; expected any of: failed, timed_out"),
    ("retry max below backoff", "rules:\n  - name: a\n    hook: gh\n"
     "    run: {shell: {argv: [x]}}\n    retry:\n      backoff: 1m\n      max_backoff: 10s\n",
     "r.yaml:10: rule 'a' retry: max_backoff must not be less than backoff"),
    ("retry unknown key", "rules:\n  - name: a\n    hook: gh\n    run: {shell: {argv: [x]}}\n"
     "    retry:\n      tries: 3\n", "r.yaml:9: unknown key 'tries' in rule 'a' retry"),
    ("bad policy", "rules:\n  - name: a\n    hook: gh\n    run: {shell: {argv: [x]}}\n"
     "    concurrency:\n      policy: yolo\n", "r.yaml:9: rule 'a' concurrency: unknown policy "
     "'yolo'; expected one of: queue, skip, replace, coalesce"),
    ("bad concurrency key", "rules:\n  - name: a\n    hook: gh\n    run: {shell: {argv: [x]}}\n"
     "    concurrency:\n      key: '{% if %}'\n", "r.yaml:9: rule 'a' concurrency key: template "
     "syntax error"),
    ("duplicate key", "rules:\n  - name: a\n    hook: gh\n    run: {shell: {argv: [x]}}\n"
     "    timeout: 1s\n    timeout: 2s\n", "r.yaml:9: duplicate key 'timeout' (first written "
     "at line 8)"),
    ("yaml syntax", "rules: [\n", "r.yaml:4: YAML syntax error: the `[` opened here (column 8) "
     "is not closed: a `]` is missing"),  # where it opened, not past the end (line 5)
    # An invisible line break to YAML (U+2028) in a comment: the rest read as a key `more`.
    ("line separator", "# note\u2028more: text\nrules: []\n", "r.yaml:4: an invisible line "
     "break (U+2028) that YAML reads as the end of a line, though editors do not: delete it, "
     'or write it as an escape in a double-quoted string ("\\u2028")'),
    # In a quoted value YAML folded it into a space.
    ("next line", 'rules: []\n# x: "a\x85b"\n', "r.yaml:5: an invisible line break (U+0085)"),
    # Templates that could never work are refused here, not on every delivery.
    ("a misspelt name in when", "rules:\n  - name: a\n    hook: gh\n    when: paylaod.ref == 'x'\n"
     "    run: {shell: {argv: [x]}}\n", "r.yaml:7: rule 'a': when: unknown name 'paylaod'; a template sees "
     "payload, headers, query, event, hook, delivery_id, received_at"),
    ("a misspelt name in run", "rules:\n  - name: a\n    hook: gh\n"
     "    run: {shell: {argv: [x, '{{ self.r }}']}}\n", "r.yaml:7: rule 'a': run.shell.argv[1]: "
     "unknown name 'self'"),
    ("include", "rules:\n  - name: a\n    hook: gh\n    run: {shell: {argv: [x, \"{% include 'f' %}\"]}}\n",
     "r.yaml:7: rule 'a': run.shell.argv[1]: {% include %} is not available in rules"),
    ("macro", "rules:\n  - name: a\n    hook: gh\n"
     "    run: {shell: {argv: [x, '{% macro m() %}{% endmacro %}']}}\n",
     "r.yaml:7: rule 'a': run.shell.argv[1]: {% macro %} is not available in rules"),
    ("a test without its argument", "rules:\n  - name: a\n    hook: gh\n"
     "    when: payload.ref is match\n    run: {shell: {argv: [x]}}\n",
     "r.yaml:7: rule 'a': when: test 'match' takes one argument: a pattern"),
    ("a pattern that is not a string", "rules:\n  - name: a\n    hook: gh\n"
     "    when: payload.ref is match(1)\n    run: {shell: {argv: [x]}}\n",
     "r.yaml:7: rule 'a': when: bad argument to test 'match': expected a string, got int"),
    ("a bad network in a list", "rules:\n  - name: a\n    hook: gh\n"
     "    when: headers.ip is in_cidr(['10.0.0.0/8', 'bogus'])\n    run: {shell: {argv: [x]}}\n",
     "r.yaml:7: rule 'a': when: bad argument to test 'in_cidr'"),
    # The limits on a pattern's size raise the sandbox's error: `check` printed a traceback.
    ("a pattern of too many counted repeats", "rules:\n  - name: a\n    hook: gh\n"
     "    when: payload.ref is match('(?:a{2000}){2000}')\n    run: {shell: {argv: [x]}}\n",
     "r.yaml:7: rule 'a': when: bad argument to test 'match': the regular expression's counted "
     "repeats ({n}, {n,m}) make about 4004000 parts"),
    ("a pattern too long", "rules:\n  - name: a\n    hook: gh\n"
     "    run: {shell: {argv: [x, \"{{ payload.ref is search('" + "a" * 10001 + "') }}\"]}}\n",
     "r.yaml:7: rule 'a': run.shell.argv[1]: bad argument to test 'search': a regular "
     "expression of more than"),
    ("a constant that is not a finite number", "rules:\n  - name: a\n    hook: gh\n"
     "    run: {shell: {argv: [x, \"{{ 'nan' | float }}\"]}}\n",
     "r.yaml:7: rule 'a': run.shell.argv[1]: nan is not a finite number"),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in ERROR_CASES],
                         ids=[c[0] for c in ERROR_CASES])
def test_rule_errors_name_file_and_line(text: str, expected: str) -> None:
    """Each rule error is reported once, at the line of the offending key or item."""
    errors = errors_of(one(text))
    assert any(e.startswith(expected) for e in errors), errors


HOOK_ERROR_CASES = [
    ("no verify", "  h:\n    max_body: 1MiB\n", "r.yaml:2: hook 'h': 'verify' is required"),
    ("two verifiers", "  h:\n    verify: {none: {}, token: {secret: x}}\n",
     "r.yaml:3: hook 'h': verify must name exactly one verifier (github, hmac, token, none, ...);"
     " got 2: none, token"),
    ("no verifier", "  h:\n    verify: {}\n",
     "r.yaml:3: hook 'h': verify must name exactly one verifier (github, hmac, token, none, ...);"
     " it names none"),
    ("verify without a value", "  h:\n    verify:\n", "r.yaml:3: hook 'h': verify must be a mapping"),
    ("an unknown option at its own line",
     "  h:\n    verify:\n      stripe:\n        secret: {env: X}\n        tolerence: 1m\n",
     "r.yaml:6: hook 'h': verify.stripe: unknown option 'tolerence'; expected one of: secret, tolerance"),
    ("an option of none", "  h:\n    verify: {none: {foo: 1}}\n",
     "r.yaml:3: hook 'h': verify.none: unknown option 'foo'; this verifier takes no options"),
    ("an unquoted number as a secret", "  h:\n    verify:\n      token: {secret: 0123}\n",
     "r.yaml:4: hook 'h': verify.token: secret: YAML reads this as a number, not as the text "
     "written; quote a literal secret"),
    ("unknown verifier", "  h:\n    verify:\n      pgp: {}\n",
     "r.yaml:4: hook 'h': unknown verifier 'pgp'; expected one of:"),
    ("verifier option", "  h:\n    verify:\n      hmac:\n        secret: x\n        header: X-S\n"
     "        algorithm: md5\n", "r.yaml:7: hook 'h': verify.hmac: algorithm:"),
    ("unknown hook key", "  h:\n    verify: {none: {}}\n    path: /x\n",
     "r.yaml:4: unknown key 'path' in hook 'h'; allowed: allow_ips, dedup, description, "
     "max_body, rate_limit, verify"),
    ("bad cidr", "  h:\n    verify: {none: {}}\n    allow_ips:\n      - 10.0.0.0/8\n"
     "      - 10.0.0.0/33\n", "r.yaml:6: hook 'h' allow_ips: '10.0.0.0/33' is not an IP "
     "address or CIDR network"),
    ("bad size", "  h:\n    verify: {none: {}}\n    max_body: huge\n",
     "r.yaml:4: hook 'h' max_body: expected a size"),
    ("bad dedup", "  h:\n    verify: {none: {}}\n    dedup: '{{ payload.id '\n",
     "r.yaml:4: hook 'h' dedup: template syntax error"),
    ("bad rate", "  h:\n    verify: {none: {}}\n    rate_limit: {rate: fast}\n",
     "r.yaml:4: hook 'h' rate_limit: expected a rate like 10/s"),
    ("bad burst", "  h:\n    verify: {none: {}}\n    rate_limit:\n      rate: 5/s\n"
     "      burst: 0\n", "r.yaml:6: hook 'h' rate_limit burst must be a whole number from 1 "
     "to 1,000,000,000, got 0"),
    # Past what SQLite or a float holds: loaded, they failed every delivery with a 500.
    ("a burst of 400 digits", "  h:\n    verify: {none: {}}\n    rate_limit:\n      rate: 5/s\n"
     "      burst: " + "9" * 400 + "\n", "r.yaml:6: hook 'h' rate_limit burst must be a whole "
     "number from 1 to 1,000,000,000, got a number of about 400 digits"),
    ("a rate of 400 digits", "  h:\n    verify: {none: {}}\n    rate_limit: " + "9" * 400 + "\n",
     "r.yaml:4: hook 'h' rate_limit: expected a rate like 10/s, 600/m, 1000/h or a number of "
     "requests per second (from one a day to 1,000,000,000/s), got a number of about 400 "
     "digits"),
    ("a rate of 400 digits a second", "  h:\n    verify: {none: {}}\n    rate_limit: "
     + "9" * 400 + "/s\n", "r.yaml:4: hook 'h' rate_limit: expected a rate like 10/s"),
    ("a rate past the bound", "  h:\n    verify: {none: {}}\n    rate_limit: {rate: 2000000000}\n",
     "r.yaml:4: hook 'h' rate_limit: expected a rate like 10/s, 600/m, 1000/h or a number of "
     "requests per second (from one a day to 1,000,000,000/s), got 2000000000"),
    ("a rate below one a day", "  h:\n    verify: {none: {}}\n    rate_limit: 1.0e-320\n",
     "r.yaml:4: hook 'h' rate_limit: expected a rate like 10/s, 600/m, 1000/h or a number of "
     "requests per second (from one a day to 1,000,000,000/s), got 1e-320"),
    ("a count past the burst's bound", "  h:\n    verify: {none: {}}\n    rate_limit: "
     "2000000000/h\n", "r.yaml:4: hook 'h' rate_limit: the rate's count (2,000,000,000) is its "
     "burst, which is at most 1,000,000,000: give a `burst`, or write the rate per second"),
    ("a burst of a hex number's thousands of digits", "  h:\n    verify: {none: {}}\n"
     "    rate_limit:\n      rate: 5/s\n      burst: 0x" + "f" * 4000 + "\n",
     "r.yaml:6: a number of 4,002 characters is too long to be read"),
    ("a burst of 5,000 digits", "  h:\n    verify: {none: {}}\n"
     "    rate_limit:\n      rate: 5/s\n      burst: " + "9" * 5000 + "\n",
     "r.yaml:6: a number of 5,000 characters is too long to be read"),
    ("bad hook id", "  'a b':\n    verify: {none: {}}\n", "r.yaml:2: bad hook id 'a b'"),
    ("hook id of dots", "  '..':\n    verify: {none: {}}\n", "r.yaml:2: bad hook id '..': use "
     "letters, digits, '_', '.', '-', starting with a letter or digit"),
    ("hook not a mapping", "  h: yes\n", "r.yaml:2: hook 'h' must be a mapping, got a string"),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in HOOK_ERROR_CASES],
                         ids=[c[0] for c in HOOK_ERROR_CASES])
def test_hook_errors_name_file_and_line(text: str, expected: str) -> None:
    """Each hook error is reported at the line of the offending key."""
    errors = errors_of({"r.yaml": "hooks:\n" + text})
    assert any(e.startswith(expected) for e in errors), errors


def test_every_error_of_an_action_is_reported_in_one_check() -> None:
    """A runner stops at its first error: `check` showed the next only once that was fixed."""
    errors = errors_of(one("""
        rules:
          - name: s
            hook: gh
            run:
              shell:
                argv: [true, x]
                env: [1, 2]
                cwd: [5]
                stdin: body
          - name: h
            hook: gh
            run:
              http:
                url: [1]
                method: FETCH
                json: {}
                body: x
          - name: t
            hook: gh
            run: {terraform: {dir: [x], command: fly}}
    """))
    assert errors == [
        "r.yaml:10: rule 's': run.shell.argv[0] must be a string, got a boolean (YAML reads an "
        'unquoted true or false as one: quote it, e.g. "true")',
        "r.yaml:11: rule 's': run.shell.env must be a mapping",
        "r.yaml:12: rule 's': run.shell.cwd must be a string, got a list",
        "r.yaml:13: rule 's': run.shell.stdin must be 'payload'",
        "r.yaml:18: rule 'h': run.http.url must be a string, got a list",
        "r.yaml:19: rule 'h': run.http.method must be one of GET, POST, PUT, PATCH, DELETE, "
        "HEAD, OPTIONS",
        "r.yaml:21: rule 'h': run.http: give 'json' or 'body', not both",
        "r.yaml:24: rule 't': run.terraform.dir must be a string, got a list",
        "r.yaml:24: rule 't': run.terraform.command must be one of plan, apply, destroy",
    ], errors


def test_an_unknown_key_that_is_no_string_is_named_at_its_line_and_read_past() -> None:
    errors = errors_of(one("""
        rules:
          - name: s
            hook: gh
            run:
              shell:
                argv: [x]
                cwd: [1]
                1: x
    """))
    assert [e.split(": ", 1)[0] for e in errors] == ["r.yaml:11", "r.yaml:12"], errors
    assert "unknown key 1 " in errors[1], errors


def test_every_error_of_a_verifier_is_reported_in_one_check(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A verifier stopped at its first error too: a secret, then a header, then an
    algorithm, one `check` each. A required option read past gets a stand-in."""
    monkeypatch.delenv("HR_TEST_UNSET", raising=False)
    errors = errors_of({"r.yaml": textwrap.dedent("""
        hooks:
          h:
            verify:
              hmac:
                secret: {env: HR_TEST_UNSET}
                header: 5
                algorithm: md5
                bogus: 1
          b:
            verify: {basic: {username: "a:b", password: {env: HR_TEST_UNSET}}}
        """)})
    assert errors == [
        "r.yaml:6: hook 'h': verify.hmac: secret: environment variable HR_TEST_UNSET is not set "
        "or empty",
        "r.yaml:7: hook 'h': verify.hmac: header: expected a non-empty string",
        "r.yaml:8: hook 'h': verify.hmac: algorithm: expected one of sha1, sha256, sha512, got "
        "'md5'",
        "r.yaml:9: hook 'h': verify.hmac: unknown option 'bogus'; expected one of: algorithm, "
        "encoding, header, prefix, secret, timestamp_header, tolerance",
        "r.yaml:11: hook 'b': verify.basic: username: expected a non-empty string without ':'",
        "r.yaml:11: hook 'b': verify.basic: password: environment variable HR_TEST_UNSET is not "
        "set or empty",
    ], errors


def test_every_error_of_a_rate_limit_and_a_concurrency_is_reported_in_one_check() -> None:
    errors = errors_of({"r.yaml": textwrap.dedent("""
        hooks:
          h:
            verify: {none: {}}
            rate_limit: {rate: fast, burst: -1, per_client: maybe}
        rules:
          - {name: r, hook: h, concurrency: {key: "{{ x", policy: sometimes}, run: {shell: {argv: [echo]}}}
        """)})
    assert [e.split(": ", 1)[1].split(":")[0] for e in errors] == [
        "hook 'h' rate_limit",
        "hook 'h' rate_limit burst must be a whole number from 1 to 1,000,000,000, got -1",
        "hook 'h' rate_limit per_client must be true or false, got 'maybe'",
        "rule 'r' concurrency key", "rule 'r' concurrency"], errors


def test_a_stand_in_the_verifier_does_not_take_hides_no_other_error() -> None:
    """`secret:` under basic was given a stand-in again, refused again, and the loop ended
    there: the username's error went unsaid."""
    errors = errors_of({"r.yaml": "hooks:\n  b:\n    verify: {basic: {secret: y, username: "
                                  "'a:b', password: x}}\n  g:\n    verify: {github: {header: X, "
                                  "secret: 1.5}}\n"})
    assert [e.split(": ", 3)[3].split(":")[0] for e in errors] == [
        "unknown option 'secret'; expected one of", "username", "unknown option 'header'; "
        "expected one of", "secret"], errors


def test_a_verifier_missing_what_it_requires_says_only_that() -> None:
    """No error is made up by reading on past one (a stand-in is only for a wrong value)."""
    errors = errors_of({"r.yaml": "hooks:\n  h:\n    verify: {hmac: {header: X-Sig, "
                                  "algorithm: md5}}\n"})
    assert errors == ["r.yaml:3: hook 'h': verify.hmac: missing required option 'secret'"], errors
    # Said at the verifier's name: its first option's line read as the one at fault.
    errors = errors_of({"r.yaml": "hooks:\n  h:\n    verify:\n      hmac:\n        secret: x\n"})
    assert errors == ["r.yaml:4: hook 'h': verify.hmac: missing required option 'header'"], errors


def test_template_syntax_errors_are_listed_with_an_actions_other_errors() -> None:
    """They showed only once the action's keys were right."""
    errors = errors_of(one("""
        rules:
          - name: s
            hook: gh
            run:
              shell:
                argv: ["true", "{{ x "]
                cwd: [5]
    """))
    assert errors == [
        "r.yaml:10: rule 's': run.shell.argv[1]: template syntax error: unexpected end of "
        "template, expected 'end of print statement'. in '{{ x '",
        "r.yaml:11: rule 's': run.shell.cwd must be a string, got a list",
    ], errors


def test_an_action_missing_what_it_requires_says_only_that() -> None:
    """No error is made up by reading on past one (a stand-in is only for a wrong value)."""
    errors = errors_of(one("""
        rules:
          - {name: s, hook: gh, run: {shell: {env: {A: x}}}}
          - {name: a, hook: gh, run: {ansible: {limit: web}}}
    """))
    assert errors == [
        "r.yaml:6: rule 's': run.shell: exactly one of 'argv' or 'command' is required",
        "r.yaml:7: rule 'a': run.ansible: 'playbook' is required",
    ], errors


def test_every_error_is_reported_not_just_the_first() -> None:
    """One load lists the errors of every file, in file then line order."""
    errors = errors_of({
        "a.yaml": "hooks:\n  h:\n    verify: {nope: {}}\n",
        "b.yaml": "rules:\n  - name: r\n    hook: h\n    run: {shell: {argv: [x]}}\n"
                  "    timeout: never\n    retry: {attempts: -1}\n",
    })
    assert [e.split(": ")[0] for e in errors] == ["a.yaml:3", "b.yaml:5", "b.yaml:6"]


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (HOOK, HOOK, "b.yaml:2: duplicate hook id 'gh' (also defined at a.yaml:2)"),
        (HOOK + "rules:\n  - name: r\n    hook: gh\n    run: {shell: {argv: [x]}}\n",
         "rules:\n  - {name: r, hook: gh, run: {shell: {argv: [y]}}}\n",
         "b.yaml:2: duplicate rule name 'r' (also defined at a.yaml:5)"),
    ],
)
def test_duplicates_across_files_name_both_places(a: str, b: str, expected: str) -> None:
    """A hook id or rule name defined twice names both places."""
    assert expected in errors_of({"a.yaml": a, "b.yaml": b})


@pytest.mark.parametrize("name", ['"a\\nb"', '"x\\e[31m"', '"tab\\there"', "x" * 201])
def test_a_rule_name_is_one_printable_line(name: str) -> None:
    """audit: a name with a line break and an escape sequence forged lines in `hookrunner
    runs` and drove the terminal."""
    errors = errors_of(one(f"""
        rules:
          - name: {name}
            hook: gh
            run: {{shell: {{argv: [x]}}}}
        """))
    assert len(errors) == 1 and errors[0].startswith("r.yaml:6: rule ") and errors[0].endswith(
        "a rule name is one line of at most 200 characters, without control characters"), errors


def test_a_valid_file_loads_into_the_model() -> None:
    """The contract's example shape loads, with defaults and compiled templates."""
    ruleset = load_rules_text({"r.yaml": textwrap.dedent("""\
        hooks:
          gh:
            verify: {token: {secret: {env: HOME}}}
            allow_ips: [192.30.252.0/22, 10.0.0.1]
            max_body: 5MiB
            dedup: "{{ payload.id }}"
            rate_limit: {rate: 600/m, burst: 3, per_client: false}
          open:
            verify: {none: {}}
            rate_limit: 2.5
          per-minute:
            verify: {none: {}}
            rate_limit: 10/m
          per-hour:
            verify: {none: {}}
            rate_limit: {rate: 1000/h, per_client: false}
        rules:
          - name: deploy
            hook: gh
            when: event == "push"
            run:
              shell:
                argv: [deploy, "{{ payload.ref }}"]
            timeout: 10m
            concurrency: {key: "deploy-{{ payload.repo }}", policy: coalesce}
            retry: {attempts: 3, backoff: 30s, on: [failed]}
          - name: both
            hook: [gh, open]
            run: {shell: {command: "echo '{{ payload.a }} b' c"}}
            concurrency: {policy: skip}
        """)})
    gh, open_ = ruleset.hooks["gh"], ruleset.hooks["open"]
    assert [str(n) for n in gh.allow_ips] == ["192.30.252.0/22", "10.0.0.1/32"]
    assert gh.max_body == 5 * 1024 * 1024 and open_.max_body == DEFAULT_MAX_BODY
    assert gh.rate_limit == RateLimit(rate=10.0, burst=3, per_client=False)
    assert open_.rate_limit == RateLimit(rate=2.5, burst=3, per_client=True)
    # The bucket holds the count as written: `10/m` lets 10 through at once.
    assert ruleset.hooks["per-minute"].rate_limit == RateLimit(rate=10 / 60, burst=10, per_client=True)
    assert ruleset.hooks["per-hour"].rate_limit == RateLimit(rate=1000 / 3600, burst=1000,
                                                             per_client=False)
    assert gh.verify_kind == "token" and gh.secret_headers
    assert isinstance(gh.dedup, Template)
    deploy, both = ruleset.rules
    assert deploy.source.line == 18 and deploy.hooks == ("gh",)
    assert deploy.timeout == 600 and deploy.retry == Retry(3, 30.0, 600.0, ("failed",))
    assert deploy.action["argv"][0].source == "deploy"
    assert deploy.concurrency is not None and deploy.concurrency.policy == "coalesce"
    assert both.hooks == ("gh", "open") and both.when is None
    assert [t.source for t in both.action["argv"]] == ["echo", "{{ payload.a }} b", "c"]
    assert both.concurrency is not None and both.concurrency.key is None  # the rule's name
    assert [r.name for r in ruleset.rules_for("open")] == ["both"]


@pytest.mark.parametrize(
    ("verify", "warning"),
    [
        ("{none: {}}", "r.yaml:3: hook 'h' uses verifier 'none'"),
        ("{token: {secret: hunter2}}", "r.yaml:3: hook 'h': a literal secret is written"),
        ("{basic: {username: u, password: [{env: HOME}, pw]}}",
         "r.yaml:3: hook 'h': a literal password is written"),
    ],
)
def test_warnings_are_not_errors(verify: str, warning: str) -> None:
    """A literal secret and verifier `none` load, with a warning."""
    ruleset = load_rules_text({"r.yaml": f"hooks:\n  h:\n    verify: {verify}\n"
                                         "rules:\n  - {name: r, hook: h, run: {shell: "
                                         "{argv: [x]}}}\n"})
    assert any(w.startswith(warning) for w in ruleset.warnings), ruleset.warnings


def test_hook_without_rules_is_a_warning() -> None:
    """A hook no rule uses is loaded, and check says so."""
    ruleset = load_rules_text({"r.yaml": HOOK})
    assert ("r.yaml:2: hook 'gh' has no rules: its deliveries are stored but run nothing"
            in ruleset.warnings)


def test_a_rule_with_an_error_does_not_also_draw_hook_without_rules() -> None:
    """The error names the rule's fault; "hook has no rules" beside it sent readers astray."""
    with pytest.raises(ConfigErrors) as caught:
        load_rules_text({"r.yaml": HOOK + "rules:\n  - {name: a, hook: gh, run: {shell: {argv: x}}}\n"})
    assert caught.value.errors and not any("has no rules" in w for w in caught.value.warnings), \
        caught.value.warnings


def test_a_rules_file_that_does_not_parse_draws_no_hook_without_rules() -> None:
    """Its rules are unknown, not absent: the other file's hook was warned about too."""
    with pytest.raises(ConfigErrors) as caught:
        load_rules_text({"hooks.yaml": HOOK, "r.yaml": "rules:\n  - name: [\n"})
    assert caught.value.errors and not any("has no rules" in w for w in caught.value.warnings), \
        caught.value.warnings


def test_a_hooks_file_that_does_not_parse_makes_no_rule_s_hook_certainly_unknown(
        tmp_path: Path) -> None:
    """probe: a YAML error in the file of the hooks gave every rule of the other files
    `unknown hook 'github'; defined hooks: none are defined`, as if they were all wrong. The
    syntax error stays; the rules' errors say where the hook may be (a file not read too)."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "hooks.yaml").write_text("hooks:\n  github:\n    verify: {github: {secret: x}\n")
    (rules / "latin.yaml").write_bytes(b"# caf\xe9\n")
    (rules / "rules.yaml").write_text(
        "rules:\n  - name: r\n    hook: github\n    run: {shell: {argv: ['true']}}\n")
    with pytest.raises(ConfigErrors) as caught:
        load_rules(rules, root=tmp_path)
    found = [str(e).replace(f"{rules}/", "") for e in caught.value.errors]
    assert found[0] == "latin.yaml:1: not UTF-8 text (byte 0xe9)", found
    assert found[1].startswith("hooks.yaml:") and "YAML syntax error" in found[1], found
    assert found[2:] == [
        "rules.yaml:3: unknown hook 'github'; it may be defined in hooks.yaml, latin.yaml, "
        "which did not load (its own error says why)"], found


@pytest.mark.parametrize("text", ["", "# to do\n", "---\n...\n", "null\n"])
def test_an_empty_rules_file_is_a_warning(text: str) -> None:
    """A file saved before it was written loads nothing: said, and the other file's unused
    hook is still warned about (an empty file hides no rules, unlike one that fails to parse)."""
    ruleset = load_rules_text({"hooks.yaml": HOOK, "todo.yaml": text})
    assert "todo.yaml:1: holds no hooks and no rules" in ruleset.warnings
    assert any("has no rules" in w for w in ruleset.warnings), ruleset.warnings


def test_a_hook_listed_twice_in_a_rule_is_a_warning() -> None:
    """It runs once all the same; the slip (meant another hook?) is named at its line."""
    ruleset = load_rules_text({"r.yaml": HOOK + "rules:\n  - name: a\n    hook:\n      - gh\n"
                                               "      - gh\n    run: {shell: {argv: [x]}}\n"})
    assert "r.yaml:8: rule 'a': hook 'gh' is listed twice" in ruleset.warnings, ruleset.warnings
    assert ruleset.rules[0].hooks == ("gh",)


def test_an_allowed_network_with_bits_past_its_prefix_is_a_warning() -> None:
    """`10.0.0.5/8` (a typo for /32?) allows a whole /8: loaded as that, and said."""
    ruleset = load_rules_text({"r.yaml": "hooks:\n  gh:\n    verify: {none: {}}\n"
                                         "    allow_ips: [10.0.0.5/8, 10.1.0.0/16, 10.2.0.9]\n"
                                         "rules:\n  - {name: a, hook: gh, run: {shell: {argv: [x]}}}\n"})
    assert [w for w in ruleset.warnings if "allow_ips" in w] == [
        "r.yaml:4: hook 'gh' allow_ips: '10.0.0.5/8' has bits set past its prefix: it allows "
        "all of 10.0.0.0/8"]
    assert [str(n) for n in ruleset.hooks["gh"].allow_ips] == ["10.0.0.0/8", "10.1.0.0/16",
                                                                "10.2.0.9/32"]


def test_an_ipv4_mapped_allowed_network_is_the_ipv4_network_it_maps() -> None:
    """`::ffff:127.0.0.1` (as `ss` shows a dual-stack listener's IPv4 clients) admitted no
    one: clients are compared by their IPv4 address."""
    ruleset = load_rules_text({"r.yaml": "hooks:\n  gh:\n    verify: {none: {}}\n"
                                         "    allow_ips: ['::ffff:127.0.0.1', '::ffff:10.0.0.0/104']\n"
                                         "rules:\n  - {name: a, hook: gh, run: {shell: {argv: [x]}}}\n"})
    assert [str(n) for n in ruleset.hooks["gh"].allow_ips] == ["127.0.0.1/32", "10.0.0.0/8"]


def test_a_rotation_list_with_one_secret_unreadable_loads_with_a_warning(tmp_path: Path) -> None:
    """The hook verifies with the secret it can read (an error only where none can be)."""
    (tmp_path / "new.txt").write_text("new\n")
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(
        "hooks:\n  gh:\n    verify:\n      github:\n"
        "        secret: [{file: old.txt}, {file: new.txt}]\n"
        "rules:\n  - {name: a, hook: gh, run: {shell: {argv: [x]}}}\n")
    ruleset = load_rules(rules, root=tmp_path)
    assert (f"{rules / 'r.yaml'}:5: hook 'gh': verify.github: secret[0]: secret file old.txt "
            "does not exist (the list's other secrets are used)") in ruleset.warnings
    assert ruleset.hooks["gh"].verifier.secrets == (b"new",)


def test_yaml_11_booleans_stay_strings() -> None:
    """`on` is a key, not True (YAML 1.2 booleans)."""
    ruleset = load_rules_text(one("rules:\n  - name: a\n    hook: gh\n"
                                  "    run: {shell: {argv: [yes, 2024-01-01]}}\n"
                                  "    retry: {attempts: 2, on: timed_out}\n"))
    rule = ruleset.rules[0]
    assert rule.retry.on == ("timed_out",)
    assert [t.source for t in rule.action["argv"]] == ["yes", "2024-01-01"]


def test_load_rules_reads_yaml_and_yml_recursively_in_order(tmp_path: Path) -> None:
    """Every *.yaml / *.yml under the directory is merged; other files are ignored."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.yaml").write_text(HOOK)
    (tmp_path / "sub" / "b.yml").write_text(
        "rules:\n  - {name: r, hook: gh, run: {shell: {argv: [x]}}}\n")
    (tmp_path / "notes.txt").write_text("not: [yaml")
    (tmp_path / "empty.yaml").write_text("")
    ruleset = load_rules(tmp_path)
    assert [Path(p).name for p in ruleset.files] == ["a.yaml", "empty.yaml", "b.yml"]
    assert ruleset.rules[0].source.file == str(tmp_path / "sub" / "b.yml")


def test_missing_rules_directory_is_an_error(tmp_path: Path) -> None:
    """A rules directory that does not exist fails the load."""
    with pytest.raises(ConfigErrors, match="does not exist"):
        load_rules(tmp_path / "nope")


def test_what_cannot_be_loaded_is_named_with_its_line(tmp_path: Path) -> None:
    """A dangling link is a broken deploy (a ConfigMap key gone), not a file to skip; text that
    is not UTF-8 is reported at its line; a --root that does not exist is an error."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "ok.yaml").write_text("hooks: {h: {verify: {none: {}}}}\n")
    (rules / "gone.yaml").symlink_to(tmp_path / "nowhere.yaml")
    (rules / "latin.yaml").write_bytes(b"# one\n# caf\xe9\nhooks: {}\n")
    with pytest.raises(ConfigErrors) as caught:
        load_rules(rules, root=tmp_path / "no-root", strict=True)
    found = sorted(str(e).replace(f"{rules}/", "") for e in caught.value.errors)
    assert found == [
        f"--root {tmp_path / 'no-root'} is not a directory: relative paths in rules "
        "resolve against it",  # once, without a `rules:0:` place
        "gone.yaml:1: cannot read: No such file or directory",
        "latin.yaml:2: not UTF-8 text (byte 0xe9)",
    ], found



def test_a_missing_root_is_one_error_not_a_warning_per_path(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(
        "hooks: {h: {verify: {none: {}}}}\nrules:\n  - name: a\n    hook: h\n"
        "    run: {shell: {argv: [scripts/x.sh], cwd: sub}}\n")
    with pytest.raises(ConfigErrors) as caught:
        load_rules(tmp_path / "rules", root=tmp_path / "no-root")
    assert [e.message.split(" is ")[0] for e in caught.value.errors] == [
        f"--root {tmp_path / 'no-root'}"]
    assert not [w for w in caught.value.warnings if "--root" in w], caught.value.warnings


def test_hidden_files_and_directories_are_skipped(tmp_path: Path) -> None:
    """Editors' and tools' hidden copies (`.#x.yaml`, `.git/`, `.x.yaml.swp`-style names) are
    not rules: a second copy of a hook would be a duplicate and fail the whole load."""
    (tmp_path / "a.yaml").write_text(HOOK)
    (tmp_path / ".a.yaml").write_text(HOOK)
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "a.yaml").write_text(HOOK)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".old").mkdir()
    (tmp_path / "sub" / ".old" / "a.yml").write_text(HOOK)
    ruleset = load_rules(tmp_path)
    assert ruleset.files == (str(tmp_path / "a.yaml"),)


def _configmap_version(mount: Path, name: str, text: str) -> None:
    """What Kubernetes' atomic writer does to a mounted ConfigMap: the files in a new hidden
    `..<timestamp>` directory, then `..data` switched to it by a rename; each key is a link
    `x.yaml -> ..data/x.yaml`, made once."""
    version = mount / name
    version.mkdir()
    (version / "gh.yaml").write_text(text)
    (mount / "..data_tmp").symlink_to(name)
    (mount / "..data_tmp").rename(mount / "..data")
    if not (mount / "gh.yaml").is_symlink():
        (mount / "gh.yaml").symlink_to("..data/gh.yaml")


def test_a_mounted_configmap_loads_each_file_once(tmp_path: Path) -> None:
    """The layout of a Kubernetes ConfigMap volume: the rules load through the links, once."""
    _configmap_version(tmp_path, "..2026_11_29_08_00_00.1", HOOK)
    ruleset = load_rules(tmp_path)
    assert ruleset.files == (str(tmp_path / "gh.yaml"),)
    assert list(ruleset.hooks) == ["gh"]


def test_a_verifier_named_alone_is_the_verifier_without_options() -> None:
    """`verify: none` means `verify: {none: {}}` (and still draws the warning); a verifier
    that needs options says which, at the line of `verify`."""
    ruleset = load_rules_text({"r.yaml": "hooks:\n  h:\n    verify: none\n"})
    assert ruleset.hooks["h"].verify_kind == "none"
    assert any("uses verifier 'none'" in w and "r.yaml:3" in w for w in ruleset.warnings)
    # With allow_ips (Bitbucket's way: its addresses are the check) there is nothing to warn of.
    ruleset = load_rules_text({"r.yaml": "hooks:\n  h:\n    verify: none\n"
                                         "    allow_ips: [104.192.136.0/21]\n"})
    assert not any("uses verifier 'none'" in w for w in ruleset.warnings), ruleset.warnings
    errors = errors_of({"r.yaml": "hooks:\n  h:\n    verify: github\n"})
    assert len(errors) == 1 and errors[0].startswith("r.yaml:3:") and "secret" in errors[0]
    errors = errors_of({"r.yaml": "hooks:\n  h:\n    verify: nonesuch\n"})
    assert len(errors) == 1 and "unknown verifier 'nonesuch'" in errors[0]


def test_non_finite_numbers_are_errors_at_their_line() -> None:
    """YAML's `.inf` and `.nan` are floats JSON has no word for: a run could never be stored
    or shown with one, so `check` refuses them where they are written."""
    errors = errors_of(one("""
        rules:
          - name: r
            hook: gh
            run: {http: {url: "http://x", json: {a: .inf, b: 1.5, c: -.Inf, d: .NaN}}}
        """))
    assert errors == [f"r.yaml:8: {v!r} is not a finite number" for v in (".inf", "-.Inf", ".NaN")]


def test_a_non_finite_number_is_one_error_not_two() -> None:
    """Read as 0.0 to go on loading, it also gave `tolerance: must be more than zero`, about a
    value no one wrote."""
    errors = errors_of({"r.yaml": "hooks:\n  h:\n    verify:\n      hmac:\n        secret: x\n"
                                  "        header: X-Sig\n        timestamp_header: X-T\n"
                                  "        tolerance: .inf\nrules: []\n"})
    assert errors == ["r.yaml:8: '.inf' is not a finite number"]
    # In a flow mapping the line holds other values, whose own errors are still said.
    errors = errors_of({"r.yaml": "hooks: {h: {verify: {none: {}}}}\n"
                                  "rules:\n  - {name: a, hook: nope, timeout: .inf, run: {shell: "
                                  "{argv: [x]}}}\n"})
    assert "r.yaml:3: '.inf' is not a finite number" in errors, errors
    assert any(e.startswith("r.yaml:3: unknown hook 'nope'") for e in errors), errors


def test_yaml_aliases_that_expand_past_the_bound_are_an_error_not_a_stall() -> None:
    lines = ['l0: &l0 ["a", "b", "c", "d", "e", "f", "g", "h", "i", "{{ payload.a }}"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 8)]
    errors = errors_of({"r.yaml": "\n".join(lines) + "\n"})
    assert errors == ["r.yaml:1: the file holds more than 200000 values once its YAML aliases "
                      "(*name) are expanded"], errors
    # A few aliases, as people use them (shared settings), are fine.
    ruleset = load_rules_text({"r.yaml": "hooks:\n  a: &v {verify: none}\n  b: *v\n"})
    assert sorted(ruleset.hooks) == ["a", "b"]


@pytest.mark.parametrize("template", [
    "{% if payload.a %}{% set z = payload.a %}{% endif %}{{ z | default('none') }}",
    "{% if payload.a %}{% set z = 1 %}{% else %}{% set z = 2 %}{% endif %}{{ z }}",
    "{% if payload.a %}{% set z = 1 %}{% endif %}{{ z is defined }}",
    "{% for c in payload.commits %}{{ loop.index }}:{{ c.id }} {% endfor %}",
    "{% for k, v in payload.items() if v %}{{ k }}{% else %}none{% endfor %}",
    "{% set x = hook %}{% with y = x %}{{ y }}{% endwith %}",
    "{{ range(3) | list }}{{ dict(a=1) }}{{ received_at }}{{ delivery_id }}",
])
def test_names_a_template_assigns_itself_are_not_unknown(template: str) -> None:
    ruleset = load_rules_text({"r.yaml": HOOK + textwrap.dedent(f"""
        rules:
          - name: a
            hook: gh
            run: {{shell: {{argv: [x, {json.dumps(template)}]}}}}
        """)})
    assert [r.name for r in ruleset.rules] == ["a"]


def test_literal_paths_outside_root_are_check_errors(tmp_path: Path) -> None:
    """They could never run; a templated path is judged per run (the payload decides)."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(PATHS_RULES)
    # Where the server loads rules, one such rule does not stop the others: a warning.
    loaded = load_rules(rules, root=tmp_path)
    assert [r.name for r in loaded.rules] == ["a", "b", "c", "d", "e"]
    assert sum("is outside" in w and "its runs will fail" in w for w in loaded.warnings) == 4
    with pytest.raises(ConfigErrors) as caught:
        load_rules(rules, root=tmp_path, strict=True)
    found = [f"{e.line}: {e.message}" for e in caught.value.errors]
    assert found == [
        "5: rule 'a': run.shell.cwd: path '/etc' is outside --root",
        "10: rule 'b': run.ansible.playbook: path '/etc/passwd' is outside playbooks/ under --root",
        "16: rule 'c': run.terraform.dir: path '../outside' is outside --root",
        "18: rule 'c': run.terraform.var_files: path '../../x.tfvars' is outside --root",
    ], found


def test_a_path_through_a_symlink_loop_is_an_error_of_its_rule_alone(tmp_path: Path) -> None:
    """review: Python 3.11's RuntimeError for the loop made `check` print a traceback and
    the server drop every rule."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    (rules / "r.yaml").write_text(
        "hooks: {h: {verify: {none: {}}}}\nrules:\n"
        "  - {name: x, hook: h, run: {shell: {argv: [pwd], cwd: a}}}\n"
        "  - {name: y, hook: h, run: {shell: {argv: [echo]}}}\n")
    loaded = load_rules(rules, root=tmp_path)
    assert [r.name for r in loaded.rules] == ["x", "y"]
    with pytest.raises(ConfigErrors) as caught:
        load_rules(rules, root=tmp_path, strict=True)
    assert [f"{e.line}: {e.message}" for e in caught.value.errors] == [
        "3: rule 'x': run.shell.cwd: path 'a' goes through a symlink loop (too many levels of "
        "symbolic links)"]


def test_an_actions_paths_are_judged_with_its_other_errors(tmp_path: Path) -> None:
    """`command: bad` hid `dir: ../x` and `var_files` outside --root until it was fixed.
    A key found wrong (given a stand-in) is not judged as a path."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(
        "hooks: {h: {verify: {none: {}}}}\nrules:\n"
        "  - name: t\n    hook: h\n    run:\n      terraform:\n        dir: ../x\n"
        "        command: bad\n        var_files: [/etc/passwd]\n"
        "  - name: a\n    hook: h\n    run:\n      ansible:\n        playbook: [5]\n"
        "        inventory: ../inv\n        tags: -x\n")
    with pytest.raises(ConfigErrors) as caught:
        load_rules(rules, root=tmp_path, strict=True)
    found = [f"{e.line}: {e.message}" for e in caught.value.errors]
    assert found == [
        "7: rule 't': run.terraform.dir: path '../x' is outside --root",
        "8: rule 't': run.terraform.command must be one of plan, apply, destroy",
        "9: rule 't': run.terraform.var_files: path '/etc/passwd' is outside --root",
        "14: rule 'a': run.ansible.playbook must be a string, got a list",
        "15: rule 'a': run.ansible.inventory: path '../inv' is outside --root",
        "16: rule 'a': run.ansible.tags: tags start with '-', which ansible-playbook would "
        "read as an option",
    ], found


def test_literal_values_every_run_would_refuse_are_check_errors(tmp_path: Path) -> None:
    """`argv: ["", x]` and a NUL in a literal passed `check`; every run then failed (the
    NUL's reason called the literal a template)."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(
        'hooks: {h: {verify: {none: {}}}}\nrules:\n'
        '  - {name: a, hook: h, run: {shell: {argv: ["", "x"]}}}\n'
        '  - {name: b, hook: h, run: {shell: {argv: [echo, "a\\0b"], env: {V: "a\\0b"}}}}\n'
        '  - {name: c, hook: h, run: {http: {url: "http://127.0.0.1/", json: {k: ["\\0"]}}}}\n')
    with pytest.raises(ConfigErrors) as caught:
        load_rules(rules, root=tmp_path, strict=True)
    unstorable = "holds a NUL character (\\0), which no run can pass on or store"
    assert [f"{e.line}: {e.message}" for e in caught.value.errors] == [
        "3: rule 'a': run.shell.argv[0]: the program's name is empty",
        f"4: rule 'b': run.shell.argv[1]: {unstorable}",
        f"4: rule 'b': run.shell.env.V: {unstorable}",
        f"5: rule 'c': run.http.json.k[0]: {unstorable}",
    ]


PATHS_RULES = """hooks: {h: {verify: {none: {}}}}
rules:
  - name: a
    hook: h
    run: {shell: {argv: ["true"], cwd: /etc}}
  - name: b
    hook: h
    run:
      ansible:
        playbook: /etc/passwd
  - name: c
    hook: h
    run:
      terraform:
        command: plan
        dir: ../outside
        var_files: [ok.tfvars,
                    ../../x.tfvars]
  - name: d
    hook: h
    run: {shell: {argv: ["true"], cwd: "{{ payload.dir }}"}}
  - name: e
    hook: h
    run: {ansible: {playbook: site.yml}}
"""


def test_a_templated_inventory_outside_inventories_is_a_check_error(tmp_path: Path) -> None:
    """A payload value choosing any path under --root would make Ansible run an executable
    there (a dynamic inventory) or print a secret file back as host names."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(
        "hooks: {h: {verify: {none: {}}}}\nrules:\n"
        "  - {name: a, hook: h, run: {ansible: {playbook: p.yml, inventory: '{{ payload.inv }}'}}}\n"
        "  - {name: b, hook: h, run: {ansible: {playbook: p.yml, "
        "inventory: 'inventories/{{ payload.env }}.ini'}}}\n"
        "  - {name: c, hook: h, run: {ansible: {playbook: p.yml, inventory: inv/hosts.ini}}}\n"
        "  - {name: d, hook: h, run: {ansible: {playbook: p.yml, "
        "inventory: 'inventories/../{{ payload.env }}'}}}\n"
        "  - {name: e, hook: h, run: {ansible: {playbook: p.yml, "  # (as the run reads it)
        "inventory: './inventories/{{ payload.env }}.ini'}}}\n")
    loaded = load_rules(rules, root=tmp_path)
    assert [r.name for r in loaded.rules] == ["a", "b", "c", "d", "e"]
    assert [w for w in loaded.warnings if "a templated inventory" in w][:1] == [
        f"{rules / 'r.yaml'}:3: rule 'a': run.ansible.inventory: a templated inventory must "
        'start with inventories/, without `..` (e.g. "inventories/{{ payload.env }}.ini"): '
        "elsewhere a payload value could name any file under --root: its runs will fail"]
    with pytest.raises(ConfigErrors) as caught:
        load_rules(rules, root=tmp_path, strict=True)
    assert [e.line for e in caught.value.errors] == [3, 6]


def test_literal_values_every_run_refuses_are_check_errors(tmp_path: Path) -> None:
    """`limit: "web1 @/etc/passwd"`, `tags: "-x"` and `workspace: "-bad"` passed `check`,
    and every run of them failed; templated ones are judged per run."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(
        "hooks: {h: {verify: {none: {}}}}\nrules:\n"
        "  - {name: a, hook: h, run: {ansible: {playbook: p.yml, limit: 'web1 @/etc/passwd'}}}\n"
        "  - {name: b, hook: h, run: {ansible: {playbook: p.yml, tags: '-x'}}}\n"
        "  - {name: c, hook: h, run: {terraform: {dir: tf, command: plan, workspace: '-bad'}}}\n"
        "  - {name: d, hook: h, run: {ansible: {playbook: p.yml, limit: [web1, '-web2'], "
        "tags: [a, '{{ payload.t }}']}}}\n"
        "  - {name: e, hook: h, run: {terraform: {dir: tf, command: plan, "
        "workspace: '{{ payload.env }}'}}}\n")
    loaded = load_rules(rules, root=tmp_path)
    assert [r.name for r in loaded.rules] == ["a", "b", "c", "d", "e"]
    refused = [w for w in loaded.warnings if "its runs will fail" in w and "exist" not in w]
    assert refused == [
        f"{rules / 'r.yaml'}:3: rule 'a': run.ansible.limit: limit names a file ('@...'); "
        "only host patterns are allowed: its runs will fail",
        f"{rules / 'r.yaml'}:4: rule 'b': run.ansible.tags: tags start with '-', which "
        "ansible-playbook would read as an option: its runs will fail",
        f"{rules / 'r.yaml'}:5: rule 'c': run.terraform.workspace: invalid workspace name "
        "'-bad' (letters, digits, _, . and -, not starting with . or -, at most 90 "
        "characters): its runs will fail"]
    with pytest.raises(ConfigErrors) as caught:
        load_rules(rules, root=tmp_path, strict=True)
    assert [e.line for e in caught.value.errors] == [3, 4, 5]


def test_an_empty_literal_concurrency_key_is_a_check_error(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(
        "hooks: {h: {verify: {none: {}}}}\n"
        "rules: [{name: r, hook: h, run: {shell: {argv: [\"true\"]}}, concurrency: {key: ' '}}]\n")
    with pytest.raises(ConfigErrors, match="key is empty; leave it out to use the rule's name"):
        load_rules(rules, root=tmp_path)


def test_a_dangling_link_is_skipped_with_a_warning_where_the_server_loads(tmp_path: Path) -> None:
    """A ConfigMap key being removed: kubelet swaps `..data` before it deletes the link."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "ok.yaml").write_text("hooks: {h: {verify: {none: {}}}}\n")
    (rules / "gone.yaml").symlink_to(tmp_path / "nowhere.yaml")
    loaded = load_rules(rules, root=tmp_path)
    assert list(loaded.hooks) == ["h"]
    assert any("gone.yaml:1: cannot read" in w and "skipped" in w for w in loaded.warnings)


def test_a_link_to_a_file_that_cannot_be_read_is_an_error_where_the_server_loads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """probe: any error reading a linked rules file was skipped with a warning by the server's
    load (its hooks answered 404, /readyz said ok), as a link that leads nowhere is; `check`
    called it an error. A ConfigMap mounted 0400 for another user, and a link loop."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "ok.yaml").write_text("hooks: {h: {verify: {none: {}}}}\n")
    (tmp_path / "team.yaml").write_text("hooks: {team: {verify: {none: {}}}}\n")
    (rules / "team.yaml").symlink_to(tmp_path / "team.yaml")
    real = Path.read_bytes

    def denied(self: Path) -> bytes:  # (root reads any file: the mode cannot tell here)
        if self.name == "team.yaml":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    with monkeypatch.context() as patched:
        patched.setattr(Path, "read_bytes", denied)
        with pytest.raises(ConfigErrors) as caught:
            load_rules(rules, root=tmp_path)
    assert [str(e) for e in caught.value.errors] == [
        f"{rules / 'team.yaml'}:1: cannot read: Permission denied"]
    (rules / "team.yaml").unlink()
    (rules / "a.yaml").symlink_to("b.yaml")
    (rules / "b.yaml").symlink_to("a.yaml")
    with pytest.raises(ConfigErrors) as caught:
        load_rules(rules, root=tmp_path)
    assert [str(e).replace(f"{rules}/", "") for e in caught.value.errors] == [
        f"{n}.yaml:1: cannot read: Too many levels of symbolic links" for n in "ab"]


def test_any_and_all_take_one_condition_as_well_as_a_list(tmp_path: Path) -> None:
    """The contract: a mapping key's value is again a `when` (a string, list or mapping)."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(
        "hooks: {h: {verify: {none: {}}}}\n"
        "rules:\n"
        "  - {name: a, hook: h, when: {any: 'payload.a == 1'}, run: {shell: {argv: ['true']}}}\n"
        "  - {name: b, hook: h, when: {all: {not: 'payload.a == 1'}}, run: {shell: {argv: ['true']}}}\n")
    loaded = load_rules(rules, root=tmp_path)
    scope = build_scope(hook="h", delivery_id="d", received_at=0.0, headers={}, query={},
                        payload={"a": 1}, event=None)
    assert [r.matched for r in evaluate(loaded, "h", scope)] == [True, False]
    (rules / "r.yaml").write_text(
        "hooks: {h: {verify: {none: {}}}}\n"
        "rules: [{name: a, hook: h, when: {any: 3}, run: {shell: {argv: ['true']}}}]\n")
    with pytest.raises(ConfigErrors, match="when"):
        load_rules(rules, root=tmp_path)


def test_a_run_of_only_a_rule_key_is_an_unknown_run_type_not_a_crash() -> None:
    """The review's: `run: {timeout: 5m}` alone raised StopIteration from `check`."""
    errors = errors_of(one("rules:\n  - {name: r, hook: gh, run: {timeout: 5m}}\n"))
    assert len(errors) == 1 and "unknown run type 'timeout'" in errors[0], errors


def test_a_rule_key_indented_under_run_is_said_to_belong_to_the_rule() -> None:
    """`timeout:` one level too deep read as a second run type: "got shell, timeout"."""
    errors = errors_of(one("""
        rules:
          - name: r
            hook: gh
            run:
              shell: {argv: 5}
              timeout: 5m
              retry: {attempts: 2}
    """))
    assert errors == [
        "r.yaml:9: rule 'r': run.shell.argv must be a non-empty list",
        "r.yaml:10: rule 'r': 'timeout' is written under `run:`, but belongs to the rule: "
        "indent it as `run:` is",
        "r.yaml:11: rule 'r': 'retry' is written under `run:`, but belongs to the rule: "
        "indent it as `run:` is"], errors


def test_an_error_in_a_literal_block_is_said_at_its_own_line() -> None:
    """`when: |` over several lines: the error was said at the `when:` line, `(line 3 of
    the template)` left to count by hand. Folded or one-line values keep their key's line."""
    errors = errors_of(one("""
        rules:
          - name: a
            hook: gh
            when: |
              payload.a == 1
              and payload.b === 2
            run:
              shell:
                argv: ["true"]
                env:
                  SCRIPT: |
                    one
                    {% if x %}
          - name: b
            hook: gh
            when: >
              payload.a == 1
              and payload.b === 2
            run: {shell: {argv: ["true"]}}
    """))
    assert [e.split(": rule")[0] for e in errors] == ["r.yaml:10", "r.yaml:17", "r.yaml:20"], errors


def test_common_slips_get_a_hint() -> None:
    """A number as a hook id, and a `when` written as a template, say what to write."""
    (msg,) = errors_of({"a.yaml": "hooks:\n  123:\n    verify: {none: {}}\nrules: []\n"})
    assert msg.startswith("a.yaml:2:") and "hook id 123 is not text to YAML: quote it ('123')" in msg
    # Quoted as written, not as what YAML made of it ('None', '31' named other hooks).
    errors = errors_of({"a.yaml": "hooks:\n  null: {verify: {none: {}}}\n  0x1F: {verify: {none: "
                                  "{}}}\n  h: {verify: {none: {}}}\nrules:\n  - {name: r, hook: h, "
                                  "run: {shell: {argv: [x], env: {NULL: z}}}}\n"})
    assert [e.split(": ", 1)[1] for e in errors] == [
        "hook id None is not text to YAML: quote it as written ('null' or '~')",
        "hook id 31 is not text to YAML: quote it ('0x1F')",
        "rule 'r': run.shell.env: the name None is not text to YAML: quote it as written "
        "('null' or '~')"], errors
    (msg,) = errors_of({"a.yaml": 'hooks:\n  h: {verify: {none: {}}}\nrules:\n  - name: r\n    hook: h\n'
                                  '    when: "{{ payload.a == 1 }}"\n    run: {shell: {argv: ["true"]}}\n'})
    assert msg.startswith("a.yaml:6:") and "write it without {{ }}" in msg


def test_a_device_or_a_huge_file_is_an_error_not_read_for_ever(tmp_path: Path) -> None:
    """`zero.yaml -> /dev/zero` took gigabytes in seconds; a reload would do the same."""
    from hookrunner.rules.load import MAX_RULES_FILE

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "zero.yaml").symlink_to("/dev/zero")
    (rules / "huge.yaml").write_bytes(b"#" * (MAX_RULES_FILE + 1))
    os.mkfifo(rules / "fifo.yaml")  # was skipped in silence
    with pytest.raises(ConfigErrors) as caught:
        load_rules(rules, root=tmp_path)
    assert sorted(str(e) for e in caught.value.errors) == [
        f"{rules / 'fifo.yaml'}:1: cannot load: not a regular file",
        f"{rules / 'huge.yaml'}:1: cannot load: larger than 16 MiB",
        f"{rules / 'zero.yaml'}:1: cannot load: not a regular file",
    ]


def test_literal_paths_that_do_not_exist_are_warnings_even_for_check(tmp_path: Path) -> None:
    """Every run would fail (`executable not found`, `playbook not found`...), found only when
    a delivery came; but a deploy may bring the files after the rules: a warning."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "there.sh").write_text("#!/bin/sh\n")
    (rules / "r.yaml").write_text(
        "hooks: {h: {verify: {none: {}}}}\nrules:\n"
        "  - {name: a, hook: h, run: {shell: {argv: [scripts/missing.sh, scripts/x]}}}\n"
        "  - {name: b, hook: h, run: {shell: {argv: [scripts/there.sh], cwd: nodir}}}\n"
        "  - {name: c, hook: h, run: {ansible: {playbook: nope.yml}}}\n"
        "  - {name: d, hook: h, run: {terraform: {dir: tf/none, command: plan}}}\n"
        "  - {name: e, hook: h, run: {shell: {argv: ['true', '{{ payload.x }}']}}}\n")
    loaded = load_rules(rules, root=tmp_path, strict=True)  # warnings, not errors
    found = [w.split(": ", 1)[1] for w in loaded.warnings if "does not exist" in w]
    assert found == [
        "rule 'a': run.shell.argv[0]: 'scripts/missing.sh' does not exist under --root: its "
        "runs will fail until it does",
        "rule 'b': run.shell.cwd: 'nodir' does not exist under --root: its runs will fail "
        "until it does",
        "rule 'c': run.ansible.playbook: 'nope.yml' does not exist under playbooks/ under "
        "--root: its runs will fail until it does",
        "rule 'd': run.terraform.dir: 'tf/none' does not exist under --root: its runs will "
        "fail until it does",
    ], found


def test_an_http_ca_bundle_is_checked_as_the_runs_would_load_it(tmp_path: Path) -> None:
    """Outside --root, or not CA certificates: every https run fails; an error. Missing: a
    warning (the deploy may bring it). An absolute path is the operator's."""
    import subprocess

    rules = _rules_dir(tmp_path)
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=ca", "-keyout", str(tmp_path / "k.pem"),
                    "-out", str(tmp_path / "good.pem")], check=True, capture_output=True)
    url = "url: 'https://x.example/'"
    (rules / "r.yaml").write_text(
        "hooks: {h: {verify: {none: {}}}}\nrules:\n"
        f"  - {{name: a, hook: h, run: {{http: {{{url}, ca: ../cert.pem}}}}}}\n"
        f"  - {{name: b, hook: h, run: {{http: {{{url}, ca: bad.pem}}}}}}\n"
        f"  - {{name: c, hook: h, run: {{http: {{{url}, ca: nope.pem}}}}}}\n"
        f"  - {{name: d, hook: h, run: {{http: {{{url}, ca: good.pem}}}}}}\n"
        f"  - {{name: e, hook: h, run: {{http: {{{url}, ca: {tmp_path / 'good.pem'}}}}}}}\n"
        f"  - {{name: f, hook: h, run: {{http: {{{url}, ca: /nope/ca.pem}}}}}}\n")
    with pytest.raises(ConfigErrors) as caught:
        load_rules(rules, root=tmp_path, strict=True)
    errors = [str(e).split(": ", 1)[1] for e in caught.value.errors]
    assert len(errors) == 2, errors
    assert errors[0] == "rule 'a': run.http.ca: path '../cert.pem' is outside --root"
    assert errors[1].startswith("rule 'b': run.http.ca: 'bad.pem' does not load as CA "
                                "certificates (PEM): ")
    (rules / "r.yaml").write_text("\n".join(
        line for line in (rules / "r.yaml").read_text().splitlines()
        if "name: a," not in line and "name: b," not in line) + "\n")
    loaded = load_rules(rules, root=tmp_path, strict=True)
    found = [w.split(": ", 1)[1] for w in loaded.warnings if "does not exist" in w]
    assert found == [
        "rule 'c': run.http.ca: 'nope.pem' does not exist under --root: its runs will fail "
        "until it does",
        "rule 'f': run.http.ca: '/nope/ca.pem' does not exist: its runs will fail until it does",
    ], found


def test_an_http_url_or_header_every_run_would_refuse_is_a_check_error(tmp_path: Path) -> None:
    """`check` said ok to a literal `ftp://` URL (and a port past 65535, a line break): every
    run was refused."""
    rules = _rules_dir(tmp_path)
    (rules / "r.yaml").write_text(
        "hooks: {h: {verify: {none: {}}}}\nrules:\n"
        "  - {name: a, hook: h, run: {http: {url: 'ftp://x.example/'}}}\n"
        "  - {name: b, hook: h, run: {http: {url: 'http://u:pw@x.example:99999/'}}}\n"
        "  - {name: c, hook: h, run: {http: {url: \"http://x.example/a\\r\\nb\"}}}\n"
        "  - {name: d, hook: h, run: {http: {url: 'http://x.example/a/../b'}}}\n"
        "  - {name: e, hook: h, run: {http: {url: 'http://x.example/', headers: {X: \"a\\nb\"}}}}\n"
        "  - {name: f, hook: h, run: {http: {url: 'http://x.example{{ payload.p }}'}}}\n"
        "  - {name: g, hook: h, run: {http: {url: 'http://x.example/{{ payload.p }}'}}}\n"
        "  - {name: i, hook: h, run: {http: {url: 'https://{{ payload.region }}.x.example/'}}}\n")
    with pytest.raises(ConfigErrors) as caught:
        load_rules(rules, root=tmp_path, strict=True)
    errors = [str(e).split(": ", 1)[1] for e in caught.value.errors]
    assert errors == [
        "rule 'a': run.http.url: not an http(s) URL (its scheme is not http or https): "
        "ftp://x.example/",
        "rule 'b': run.http.url: not an http(s) URL (its port 99999 is not from 1 to 65535): "
        "http:<not a valid URL>",  # no password
        "rule 'c': run.http.url: the URL holds a line break or another control character",
        "rule 'd': run.http.url: the URL's path has a `..` segment, which would be sent as "
        "another path: http://x.example/a/../b",
        "rule 'e': run.http.headers.X: holds a line break or another control character",
    ], errors
    (rules / "r.yaml").write_text("\n".join(
        line for line in (rules / "r.yaml").read_text().splitlines()
        if not any(f"name: {n}," in line for n in "abcde")) + "\n")
    loaded = load_rules(rules, root=tmp_path, strict=True)  # templated ones: judged per run
    assert [w for w in loaded.warnings if "run.http" in w] == []


def test_a_bare_program_missing_from_path_is_a_warning(tmp_path: Path) -> None:
    """`argv: [deploy-tol]` (a typo) failed every run with `executable not found`, found only
    when a delivery came. The PATH where the rules load is the server's (actions get it)."""
    rules = _rules_dir(tmp_path)
    (tmp_path / "bin").mkdir()
    tool = tmp_path / "bin" / "own-tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    (rules / "r.yaml").write_text(
        "hooks: {h: {verify: {none: {}}}}\nrules:\n"
        "  - {name: a, hook: h, run: {shell: {argv: [deploy-tol, x]}}}\n"
        "  - {name: b, hook: h, run: {shell: {argv: [sh]}}}\n"
        f"  - {{name: c, hook: h, run: {{shell: {{argv: [own-tool], env: {{PATH: {tmp_path / 'bin'}}}}}}}}}\n"
        "  - {name: d, hook: h, run: {shell: {argv: ['true'], env: {PATH: /nowhere}}}}\n"
        "  - {name: e, hook: h, run: {shell: {argv: ['{{ payload.tool }}']}}}\n")
    loaded = load_rules(rules, root=tmp_path, strict=True)
    found = [w.split(": ", 1)[1] for w in loaded.warnings if "not on PATH" in w]
    assert len(found) == 2, found
    assert found[0].startswith("rule 'a': run.shell.argv[0]: 'deploy-tol' is not on PATH (")
    assert found[1] == ("rule 'd': run.shell.argv[0]: 'true' is not on PATH (/nowhere): its "
                        "runs will fail until it is there")


def test_a_program_a_value_picks_is_a_warning(tmp_path: Path) -> None:
    """audit: `argv: ["{{ payload.prog }}"]` let a sender run `touch` or `/usr/bin/touch`,
    and `check` said ok. Such a program must now render to a file under --root."""
    rules = _rules_dir(tmp_path)
    (rules / "r.yaml").write_text(
        "hooks: {h: {verify: {none: {}}}}\nrules:\n"
        "  - {name: a, hook: h, run: {shell: {argv: ['{{ payload.tool }}', x]}}}\n"
        "  - {name: b, hook: h, run: {shell: {command: '/usr/bin/{{ payload.tool }} x'}}}\n"
        "  - {name: c, hook: h, run: {shell: {argv: ['scripts/{{ payload.name }}.sh']}}}\n"
        "  - {name: d, hook: h, run: {shell: {argv: [echo, '{{ payload.tool }}']}}}\n")
    loaded = load_rules(rules, root=tmp_path, strict=True)
    found = [w for w in loaded.warnings if "a value picks the program" in w]
    assert [w.split(": ")[1] for w in found] == ["rule 'a'", "rule 'b'"], found
    assert "r.yaml:3: rule 'a': run.shell.argv[0] is a template: a value picks the program " \
           "to run. It must render to a file under --root" in found[0], found[0]


def test_a_templated_extravars_key_is_a_warning(tmp_path: Path) -> None:
    """audit: `extravars: {"{{ payload.key }}": x}` gave Ansible a variable of that name,
    and `check` said ok."""
    rules = _rules_dir(tmp_path)
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "p.yml").write_text("- hosts: localhost\n")
    (rules / "r.yaml").write_text(
        "hooks: {h: {verify: {none: {}}}}\nrules:\n"
        "  - name: a\n    hook: h\n    run:\n      ansible:\n        playbook: p.yml\n"
        "        extravars:\n          ok: '{{ payload.x }}'\n"
        "          '{{ payload.key }}': x\n")
    loaded = load_rules(rules, root=tmp_path, strict=True)
    found = [w for w in loaded.warnings if "run.ansible.extravars" in w]
    assert len(found) == 1 and "r.yaml:10: rule 'a': run.ansible.extravars: the key " \
        "'{{ payload.key }}' is not templated" in found[0], found


def test_a_secret_header_in_argv_is_a_warning() -> None:
    """audit: `argv: [notify, "{{ headers['Authorization'] }}"]` put the token on every local
    user's `ps`, and `check` said ok; in `env:`, or a value of the payload, it is not."""
    loaded = load_rules_text({"r.yaml": (
        "hooks: {h: {verify: {token: {secret: s3cret-of-twenty-chars, header: X-Shared}}}}\nrules:\n"
        "  - {name: auth, hook: h, run: {shell: {argv: [echo, '{{ headers.Authorization }}']}}}\n"
        "  - {name: own, hook: h, run: {shell: {argv: [echo, \"{{ headers['X-Shared'] }}\"]}}}\n"
        "  - {name: query, hook: h, run: {shell: {command: 'echo {{ query.token }}'}}}\n"
        "  - name: fine\n    hook: h\n    run:\n      shell:\n"
        "        argv: [echo, '{{ payload.x }}', '{{ headers[\"X-GitHub-Event\"] }}']\n"
        "        env: {T: '{{ headers.Authorization }}'}\n")})
    found = [w for w in loaded.warnings if "may hold a secret header or query value" in w]
    assert [w.split(":")[:2] for w in found] == [["r.yaml", "3"], ["r.yaml", "4"], ["r.yaml", "5"]], found
    assert "every user of this machine can read a process's arguments" in found[0]


def test_a_literal_secret_in_an_action_is_a_warning() -> None:
    """audit: `env: {API_TOKEN: abc123def456}` is kept with every run's record (shown
    redacted); a path, a template, a short setting or a name that is no secret's is not
    warned about (review: TOKEN_TTL, PASSWORD_FILE, TOKEN_URL, SECRET_NAME, AUTH_MODE were)."""
    loaded = load_rules_text({"r.yaml": (
        "hooks: {h: {verify: {none: {}}}}\nrules:\n"
        "  - name: a\n    hook: h\n    run:\n      shell:\n        argv: [echo]\n"
        "        env: {API_TOKEN: abc123def456, TOKEN_FILE: /etc/t, PLAIN: v, T2: '{{ payload.x }}',\n"
        "              TOKEN_TTL: 3600, PASSWORD_FILE: ./secrets/pw, AUTH_MODE: oauth,\n"
        "              TOKEN_URL: 'https://auth.example/token', SECRET_NAME: prod-db,\n"
        "              DB_PASSWORD: 'hunter2 and more', SESSION_ID: abcdefgh12345678,\n"
        "              GIT_TOKEN_URL: 'https://u:pw@git.example/x'}\n"
        "  - name: h\n    hook: h\n    run:\n      http:\n        url: http://x.example/\n"
        "        headers:\n          X-Other: lit\n          Authorization: Bearer xyz-0123456789\n"
        "          X-Api-Key: {env: K}\n")})
    found = [w for w in loaded.warnings if "is a literal secret in the rules file" in w]
    assert [w.split(": ")[:3] for w in found] == [
        ["r.yaml:8", "rule 'a'", "run.shell.env.API_TOKEN is a literal secret in the rules file, "
                                 "kept with every run's record"],
        ["r.yaml:12", "rule 'a'", "run.shell.env.GIT_TOKEN_URL is a literal secret in the rules "
                                 "file, kept with every run's record"],
        ["r.yaml:20", "rule 'h'", "run.http.headers.Authorization is a literal secret in the rules "
                                  "file, kept with every run's record"]], found
    assert found[2].endswith("(serve --pass-env NAME; a header: {env: NAME})")


def test_a_terraform_binary_missing_from_path_is_a_warning(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """`binary: tofu` where only terraform is installed: `check` said ok."""
    rules = _rules_dir(tmp_path)
    (tmp_path / "tf").mkdir()
    (rules / "r.yaml").write_text(
        "hooks: {h: {verify: {none: {}}}}\nrules:\n"
        "  - {name: a, hook: h, run: {terraform: {dir: tf, command: plan, binary: tofu}}}\n"
        "  - {name: b, hook: h, run: {terraform: {dir: tf, command: plan}}}\n")
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    loaded = load_rules(rules, root=tmp_path, strict=True)
    found = [w.split(": ", 1)[1] for w in loaded.warnings if "not on PATH" in w]
    # (`terraform` itself may be in the venv's bin, which actions get on their PATH.)
    assert [f.split(" is not")[0] for f in found if "'a'" in f] == [
        "rule 'a': run.terraform.binary: 'tofu'"]


def test_a_script_without_its_execute_bit_and_shell_operators_are_warnings(tmp_path: Path) -> None:
    rules = _rules_dir(tmp_path)
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "plain.sh").write_text("#!/bin/sh\n")  # no chmod +x
    (rules / "r.yaml").write_text(
        "hooks: {h: {verify: {none: {}}}}\nrules:\n"
        "  - {name: a, hook: h, run: {shell: {argv: [scripts/plain.sh]}}}\n"
        "  - {name: b, hook: h, run: {shell: {command: 'echo hello | tr a-z A-Z'}}}\n"
        "  - {name: c, hook: h, run: {shell: {argv: [echo, '{{ payload.x }}', '|x']}}}\n")
    loaded = load_rules(rules, root=tmp_path, strict=True)
    found = sorted(w.split(": ", 1)[1] for w in loaded.warnings if "rule '" in w)
    assert found == [
        "rule 'a': run.shell.argv[0]: 'scripts/plain.sh' is not executable (chmod +x it): its "
        "runs will fail until it is",
        "rule 'b': run.shell: '|' is passed to the program as an argument: no shell runs the "
        "action (for a pipeline or a redirection, write argv: [sh, -c, '...'])",
    ], found


def test_a_commands_warnings_name_its_first_word_not_argv(tmp_path: Path) -> None:
    """A rule that wrote `command:` was told about `run.shell.argv[0]`, which it has not."""
    rules = _rules_dir(tmp_path)
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "plain.sh").write_text("#!/bin/sh\n")  # no chmod +x
    (rules / "r.yaml").write_text(
        "hooks: {h: {verify: {none: {}}}}\nrules:\n"
        "  - {name: a, hook: h, run: {shell: {command: 'scripts/plain.sh {{ payload.x }}'}}}\n"
        "  - {name: b, hook: h, run: {shell: {command: '{{ payload.tool }} --flag'}}}\n"
        "  - {name: c, hook: h, run: {shell: {command: 'scripts/missing.sh'}}}\n"
        "  - {name: d, hook: h, run: {shell: {command: 'no-such-program-zz --x'}}}\n")
    loaded = load_rules(rules, root=tmp_path, strict=True)
    found = sorted(w.split(": ", 1)[1] for w in loaded.warnings if "rule '" in w)
    expected = ["rule 'a': run.shell.command's first word: 'scripts/plain.sh' is not executable",
                "rule 'b': run.shell.command's first word is a template: a value picks the",
                "rule 'c': run.shell.command's first word: 'scripts/missing.sh' does not exist",
                "rule 'd': run.shell.command's first word: 'no-such-program-zz' is not on PATH"]
    assert len(found) == 4, found
    assert all(w.startswith(e) for w, e in zip(found, expected, strict=True)), found
    assert not any("argv" in w for w in found), found


def test_check_shows_the_warnings_beside_the_errors(tmp_path: Path) -> None:
    """A file with an error hid every warning until the error was fixed."""
    rules = _rules_dir(tmp_path)
    (rules / "r.yaml").write_text(
        "hooks: {h: {verify: {none: {}}}}\nrules:\n"
        "  - {name: a, hook: h, run: {shell: {argv: [scripts/missing.sh]}}}\n"
        "  - {name: b, hook: h, timeout: soon, run: {shell: {argv: ['true']}}}\n")
    with pytest.raises(ConfigErrors) as caught:
        load_rules(rules, root=tmp_path, strict=True)
    shown = format_check(caught.value)
    assert "warning: " in shown and "'scripts/missing.sh' does not exist" in shown, shown
    assert shown.endswith("1 error(s)"), shown


def _rules_dir(tmp_path: Path) -> Path:
    rules = tmp_path / "rules"
    rules.mkdir()
    return rules


def test_a_dedup_reading_hookrunners_own_new_ids_is_a_warning() -> None:
    """`dedup: "{{ delivery_id }}"` made every retry a new delivery, with `check` saying ok."""
    loaded = load_rules_text({"r.yaml": "hooks:\n  h:\n    verify: {none: {}}\n"
                                        "    dedup: '{{ delivery_id }}'\nrules: []\n"})
    assert any("dedup: reads delivery_id, which is new for each delivery" in w
               for w in loaded.warnings), loaded.warnings
    loaded = load_rules_text({"r.yaml": "hooks:\n  h:\n    verify: {none: {}}\n"
                                        "    dedup: '{{ client_ip }}-{{ payload.id }}'\nrules: []\n"})
    assert any("dedup: reads client_ip, which a sender's retry need not share" in w
               for w in loaded.warnings), loaded.warnings


def test_a_query_or_header_compared_with_a_number_or_boolean_is_a_warning() -> None:
    """Their values are always text: `query.dry_run == true` never holds, whatever is sent."""
    ruleset = load_rules_text({"r.yaml": (
        "hooks:\n  h: {verify: {none: {}}}\nrules:\n  - name: r\n    hook: h\n"
        "    when: query.dry_run == true and headers[\"X-Count\"] != 3 and query.x == \"1\" "
        "and payload.n == 1 and query.y != none\n    run: {shell: {argv: [x]}}\n")})
    found = [w for w in ruleset.warnings if "always text" in w]
    assert found == [
        "r.yaml:6: rule 'r': when: query.dry_run == true: query and header values are always "
        "text, never equal to true: compare with a string (\"true\")",
        "r.yaml:6: rule 'r': when: headers[\"X-Count\"] != 3: query and header values are "
        "always text, never equal to 3: compare with a string (\"3\"), or convert (`| int`)",
    ], ruleset.warnings


@pytest.mark.parametrize(("when", "hint"), [
    ('payload.metadata.tenant-id == "a"', '(a key with \'-\' in it needs brackets: ["tenant-id"], '
                                          'not .tenant-id)'),
    ('payload.labels.app.kubernetes.io/name == "a"', "(a key with '/' or '.' in it needs "
                                                      "brackets: "),
    # Found in session 23's audit: a header name's several dashes, and text not quoted.
    ('headers.X-GitHub-Event == "push"', '(a key with \'-\' in it needs brackets: '
                                         '["X-GitHub-Event"], not .X-GitHub-Event)'),
    ('headers.x-github-event == "push"', '["x-github-event"], not .x-github-event)'),
    ("payload.ref == refs/heads/main", '(text needs quotes: "refs/heads/main")'),
    ("payload.ref == main", '(text needs quotes: "main")'),
    ('paylaod.ref == "x"', "(did you mean 'payload'?)"),
])
def test_an_unknown_name_from_a_key_with_a_dash_or_slash_says_to_use_brackets(
        when: str, hint: str) -> None:
    with pytest.raises(ConfigErrors) as caught:
        load_rules_text({"r.yaml": "hooks:\n  h: {verify: {none: {}}}\nrules:\n  - name: r\n"
                                   f"    hook: h\n    when: '{when}'\n"
                                   "    run: {shell: {argv: [x]}}\n"})
    assert hint in str(caught.value.errors[0]), caught.value.errors


def test_a_filter_named_in_map_is_checked_at_its_line() -> None:
    """`map('regex_replace', ...)` passed `check`, and every run failed: `No filter named
    'regex_replace'`."""
    with pytest.raises(ConfigErrors) as caught:
        load_rules_text({"r.yaml": "hooks:\n  h: {verify: {none: {}}}\nrules:\n  - name: r\n"
                                   "    hook: h\n    run:\n      ansible:\n        playbook: p.yml\n"
                                   "        limit: \"{{ payload.alerts | map(attribute='labels.instance')"
                                   " | map('regex_replace', ':.*', '') | join(',') }}\"\n"})
    assert str(caught.value.errors[0]).startswith(
        "r.yaml:9: rule 'r': run.ansible.limit: unknown filter 'regex_replace' named in `map`"
    ), caught.value.errors


def test_an_error_in_a_shell_command_names_the_command_and_its_word() -> None:
    """It named `run.shell.argv[2]`, which the rule never wrote, at the line of `shell:`."""
    with pytest.raises(ConfigErrors) as caught:
        load_rules_text({"r.yaml": "hooks:\n  h: {verify: {none: {}}}\nrules:\n  - name: r\n"
                                   "    hook: h\n    run:\n      shell:\n        env: {A: b}\n"
                                   "        command: 'notify --to \"{{ payload.to | split(\",\") }}\"'\n"
                                   "  - name: s\n    hook: h\n"
                                   "    run: {shell: {argv: [x, \"{{ lookup('env', 'HOME') }}\"]}}\n"})
    assert [str(e) for e in caught.value.errors] == [
        "r.yaml:9: rule 'r': run.shell.command (word 3: '{{ payload.to | split(\",\") }}'): "
        "unknown filter 'split': use the method: `payload.x.split(\",\")`",
        "r.yaml:12: rule 's': run.shell.argv[1]: unknown name 'lookup'; a template sees "
        "payload, headers, query, event, hook, delivery_id, received_at, client_ip (not "
        "available: templates read only the delivery; read files and the environment in the "
        "action)"]


@pytest.mark.parametrize(("when", "said"), [
    ("payload.a && payload.b", "unexpected char '&' at 10 in 'payload.a && payload.b' "
                               "(write `and`, not `&&`)"),
    ("payload.a || payload.b", "(write `or`, not `||`)"),
    ('payload.x = "y"', "unexpected text after the expression in 'payload.x = \"y\"' "
                        "(write `==` to compare, not `=`)"),
    ('"!payload.draft"', "(write `not x`, not `!x`)"),
    ('payload.a = 1 && payload.b', "(write `and`, not `&&`; `==` to compare, not `=`)"),
    ("false", "got a boolean (YAML reads a bare true/false as a boolean: a rule matching every "
              "delivery of its hook has no `when`; one that never matches, `when: \"false\"`)"),
])
def test_a_condition_in_another_language_says_what_to_write(when: str, said: str) -> None:
    with pytest.raises(ConfigErrors) as caught:
        load_rules_text({"r.yaml": "hooks:\n  h: {verify: {none: {}}}\nrules:\n  - name: r\n"
                                   f"    hook: h\n    when: {when}\n"
                                   "    run: {shell: {argv: [x]}}\n"})
    assert said in str(caught.value.errors[0]), caught.value.errors
    # What the hints say to write loads.
    load_rules_text({"r.yaml": "hooks:\n  h: {verify: {none: {}}}\nrules:\n  - name: r\n"
                               '    hook: h\n    when: "false"\n    run: {shell: {argv: [x]}}\n'})


def test_an_argument_by_name_is_no_assignment() -> None:
    with pytest.raises(ConfigErrors) as caught:
        load_rules_text({"r.yaml": "hooks:\n  h: {verify: {none: {}}}\nrules:\n  - name: r\n"
                                   "    hook: h\n    when: payload.x | default(value=1) ==\n"
                                   "    run: {shell: {argv: [x]}}\n"})
    assert "template syntax error" in str(caught.value.errors[0])
    assert "`=`" not in str(caught.value.errors[0]), caught.value.errors


def test_a_list_item_folded_into_a_when_is_an_error() -> None:
    """`when: a` then `  - b` on the next line: YAML reads "a - b", which `check` passed and
    which never matched (a subtraction)."""
    with pytest.raises(ConfigErrors) as caught:
        load_rules_text({"r.yaml": "hooks:\n  h: {verify: {none: {}}}\nrules:\n  - name: r\n"
                                   "    hook: h\n    when: payload.severity >= 4\n"
                                   "      - payload.count > 2\n    run: {shell: {argv: [x]}}\n"})
    assert [str(e) for e in caught.value.errors] == [
        "r.yaml:6: rule 'r': when: a line of it starts with '- ', which YAML keeps in the one "
        "expression ('payload.severity >= 4 - payload.count > 2'), a subtraction to Jinja: for a "
        "list of conditions, start "
        "the list on the line after `when:`, each item on its own line (for a subtraction, "
        "end the line before with the `-`, or quote the value)"]
    for block in (">", "|", ">-"):  # a block keeps the line, and Jinja subtracts across it
        with pytest.raises(ConfigErrors) as caught:
            load_rules_text({"r.yaml": "hooks:\n  h: {verify: {none: {}}}\nrules:\n  - name: r\n"
                                       f"    hook: h\n    when: {block}\n      payload.severity >= 4\n"
                                       "      - payload.count > 2\n    run: {shell: {argv: [x]}}\n"})
        assert "a line of it starts with '- '" in str(caught.value.errors[0]), caught.value.errors
    with pytest.raises(ConfigErrors) as caught:  # the same inside a list's item
        load_rules_text({"r.yaml": "hooks:\n  h: {verify: {none: {}}}\nrules:\n  - name: r\n"
                                   "    hook: h\n    when:\n      any:\n        - payload.a == 1\n"
                                   "          - payload.b == 2\n    run: {shell: {argv: [x]}}\n"})
    assert "a line of it starts with '- '" in str(caught.value.errors[0]), caught.value.errors
    # A subtraction written across lines otherwise, and a quoted one, still load.
    load_rules_text({"r.yaml": "hooks:\n  h: {verify: {none: {}}}\nrules:\n  - name: r\n"
                               "    hook: h\n    when: payload.a - payload.b > 2\n      and x\n"
                               "    run: {shell: {argv: [x]}}\n".replace("and x", "and payload.c")})
    load_rules_text({"r.yaml": "hooks:\n  h: {verify: {none: {}}}\nrules:\n  - name: r\n"
                               "    hook: h\n    when: 'payload.a\n      - payload.b > 2'\n"
                               "    run: {shell: {argv: [x]}}\n"})
    load_rules_text({"r.yaml": "hooks:\n  h: {verify: {none: {}}}\nrules:\n  - name: r\n"
                               "    hook: h\n    when: >\n      payload.a -\n      payload.b > 2\n"
                               "    run: {shell: {argv: [x]}}\n"})
    # An item starting with a number, a list or a mapping, after a line that ends an operand.
    for item in ("10 <= payload.replicas", "[1, 2] | length == 2", "-1 < payload.a"):
        with pytest.raises(ConfigErrors) as caught:
            load_rules_text({"r.yaml": "hooks:\n  h: {verify: {none: {}}}\nrules:\n  - name: r\n"
                                       "    hook: h\n    when: payload.status == \"firing\"\n"
                                       f"      - {item}\n    run: {{shell: {{argv: [x]}}}}\n"})
        assert "a line of it starts with '- '" in str(caught.value.errors[0]), caught.value.errors
    # A negative number starting a line after an operator or a bracket is not a list item.
    for when in ("|\n      payload.b in [\n      - 1, 2]", "|\n      payload.a >\n      - 1",
                 ">\n      payload.a == 5 or\n      - 1 == payload.b",
                 ">\n      payload.a > 5 and\n      - 10 < payload.b",
                 ">\n      payload.x if payload.c else\n      - 1",
                 "|\n      payload.a not in\n      - 1 ~ 'x'"):
        load_rules_text({"r.yaml": "hooks:\n  h: {verify: {none: {}}}\nrules:\n  - name: r\n"
                                   f"    hook: h\n    when: {when}\n    run: {{shell: {{argv: [x]}}}}\n"})


@pytest.mark.parametrize(("when", "hint"), [
    ('payload.title is search("fix #123")', "' #' starts a comment and cuts the rest off"),
    ('"dba" in payload.teams', "a value that starts with a quote ends where the quote closes"),
    ('[a] or x', "!a value that starts with a quote"),  # no quote: no such hint
    # The README's own example said so, unquoted items in a [...] list.
    ('{any: [client_ip is in_cidr("10.0.0.0/8"), headers["X"] | default("") == "y"]}',
     "inside [...] or {...}, an item holding"),
    ('{any: [client_ip is in_cidr("10.0.0.0/8"), headers["X"] == "y"]}',
     "inside [...] or {...}, an item holding"),
])
def test_a_when_cut_short_by_yaml_says_to_quote_it(when: str, hint: str) -> None:
    with pytest.raises(ConfigErrors) as caught:
        load_rules_text({"r.yaml": "hooks:\n  h: {verify: {none: {}}}\nrules:\n  - name: r\n"
                                   f"    hook: h\n    when: {when}\n"
                                   "    run: {shell: {argv: [x]}}\n"})
    if hint.startswith("!"):
        assert hint[1:] not in str(caught.value.errors[0]), caught.value.errors
    else:
        assert hint in str(caught.value.errors[0]), caught.value.errors


def test_the_text_warning_reads_a_constant_either_way_round_and_negative_numbers() -> None:
    ruleset = load_rules_text({"r.yaml": (
        "hooks:\n  h: {verify: {none: {}}}\nrules:\n  - name: r\n    hook: h\n"
        "    when: 1 == query.n and query.m == -1 and \"1\" == query.k and query.get(\"g\") == 2"
        " and client_ip == 3 and query.get(\"d\", 0) == 0\n"
        "    run: {shell: {argv: [x]}}\n")})
    found = [w.split(": query and header")[0].rsplit(": ", 1)[-1]
             for w in ruleset.warnings if "always text" in w]
    assert found == ["1 == query.n", "query.m == -1", 'query.get("g") == 2', "client_ip == 3"], \
        ruleset.warnings


def test_the_text_warning_reads_a_list_of_constants_after_in() -> None:
    """`query.n in [1, 2]` never holds either: each value is text."""
    ruleset = load_rules_text({"r.yaml": (
        "hooks:\n  h: {verify: {none: {}}}\nrules:\n  - name: r\n    hook: h\n"
        "    when: query.n in [\"1\", 2] and headers[\"X-A\"] not in (true,) and query.k in [\"a\", \"b\"]"
        " and payload.n in [1, 2]\n"
        "    run: {shell: {argv: [x]}}\n")})
    found = [w.split(": query and header")[0].rsplit(": ", 1)[-1] + w.split("never equal to ")[1]
             for w in ruleset.warnings if "always text" in w]
    assert found == ['query.n in ["1", 2]2: compare with a string ("2"), or convert (`| int`)',
                     'headers["X-A"] not in (true,)true: compare with a string ("true")'], ruleset.warnings


def test_a_reload_takes_what_the_last_load_compiled_and_keeps_no_more() -> None:
    """Compiling is ~7 ms a rule: a reload of 1,000 unchanged rules took ~7 s. Compiled
    expressions and templates hold no state of a rule, so the same text is the same object,
    within a load and from the one before; a changed text is compiled anew."""
    from hookrunner import templating

    def text(ref: str) -> dict[str, str]:
        return {"r.yaml": "hooks:\n  h: {verify: {none: {}}}\nrules:\n"
                          f"  - {{name: a, hook: h, when: 'payload.ref == \"{ref}\"', "
                          "run: {shell: {argv: [x, '{{ payload.after }}']}}}\n"
                          f"  - {{name: b, hook: h, when: 'payload.ref == \"{ref}\"', "
                          "run: {shell: {argv: [x, '{{ payload.after }}']}}}\n"}

    first = load_rules_text(text("main"))
    a, b = first.rules
    assert a.when is not None and b.when is not None and a.when.expr is b.when.expr
    again = load_rules_text(text("main"))
    assert again.rules[0].when is not None and again.rules[0].when.expr is a.when.expr
    assert again.rules[0].action["argv"][1] is a.action["argv"][1]
    changed = load_rules_text(text("dev"))
    assert changed.rules[0].when is not None and changed.rules[0].when.expr is not a.when.expr
    assert changed.rules[0].action["argv"][1] is a.action["argv"][1]  # that text is unchanged
    assert (templating.Expression, 'payload.ref == "main"') not in templating._LAST_LOAD


def test_a_hook_id_with_a_final_newline_is_refused() -> None:
    """`$` matched before a final newline: `"nl\\n"` was a hook, served at /hooks/nl%0A."""
    with pytest.raises(ConfigErrors, match="hook id"):
        load_rules_text({"r.yaml": 'hooks:\n  "nl\\n": {verify: {none: {}}}\n'})


def test_a_misspelt_key_run_type_hook_or_verifier_says_which_was_meant() -> None:
    text = """
hooks:
  github: {verify: {githb: {secret: x}}}
rules:
  - name: r
    hook: githab
    wen: event == "push"
    run: {shel: {argv: ["true"]}}
"""
    with pytest.raises(ConfigErrors) as caught:
        load_rules_text({"r.yaml": text})
    said = str(caught.value)
    for expected in ("unknown verifier 'githb' (did you mean 'github' or 'gitlab'?)",
                     "unknown key 'wen' in rule 'r' (did you mean 'when'?)",
                     "unknown run type 'shel' (did you mean 'shell'?)",
                     "unknown hook 'githab' (did you mean 'github'?)"):
        assert expected in said, said


def test_a_secret_env_written_as_the_shell_reads_it_says_to_drop_the_dollar() -> None:
    text = "hooks:\n  h: {verify: {github: {secret: {env: $GITHUB_SECRET}}}}\n"
    with pytest.raises(ConfigErrors, match=r"without a `\$`: \{env: GITHUB_SECRET\}"):
        load_rules_text({"r.yaml": text})


def test_a_templated_env_variable_that_chooses_code_is_warned_about() -> None:
    """`env: {PATH: "...:{{ payload.extra }}"}` ran the sender's `deploy`; `LD_PRELOAD`
    loaded its library. Written out, or another name, no warning."""
    text = """
hooks: {h: {verify: {none: {}}}}
rules:
  - name: r
    hook: h
    run:
      shell:
        argv: ["true"]
        env: {PATH: "/usr/bin:{{ payload.extra }}", LD_PRELOAD: "{{ payload.pre }}",
              PYTHONPATH: /opt/lib, REGION: "{{ payload.region }}"}
"""
    warnings = load_rules_text({"r.yaml": text}).warnings
    said = [w for w in warnings if "a value chooses what code runs" in w]
    assert len(said) == 2 and "env.PATH" in said[0] + said[1] and "env.LD_PRELOAD" in said[0] + said[1]


def test_a_dedup_with_no_template_is_warned_about() -> None:
    ruleset = load_rules_text({"r.yaml": "hooks: {h: {verify: {none: {}}, dedup: static}}\n"})
    assert any("dedup: has no {{ }}" in w for w in ruleset.warnings), ruleset.warnings


def test_a_rules_file_with_an_upper_case_suffix_is_not_loaded_but_said(tmp_path: Path) -> None:
    """`team.YAML` was skipped in silence (the contract's glob is `*.yaml`/`*.yml`)."""
    (tmp_path / "a.yaml").write_text("hooks:\n  h: {verify: {none: {}}}\n")
    (tmp_path / "team.YAML").write_text("rules:\n  - {name: r, hook: h, run: {shell: {argv: [x]}}}\n")
    ruleset = load_rules(tmp_path)
    assert ruleset.rules == ()
    assert (f"{tmp_path / 'team.YAML'}: not loaded: rules files end in .yaml or .yml, in lower "
            "case") in ruleset.warnings, ruleset.warnings


def test_the_rules_digest_is_the_same_for_the_same_files_wherever_they_are(tmp_path: Path) -> None:
    """Nodes compare it (/readyz): paths under --rules and text, not where --rules is."""
    text = "hooks:\n  h: {verify: {none: {}}}\nrules:\n  - {name: r, hook: h, run: {shell: {argv: [x]}}}\n"
    digests = []
    for node in ("a", "b"):
        (tmp_path / node / "team").mkdir(parents=True)
        (tmp_path / node / "team" / "r.yaml").write_text(text)
        digests.append(load_rules(tmp_path / node).digest)
    assert digests[0] == digests[1] and len(digests[0]) == 16
    (tmp_path / "b" / "team" / "r.yaml").write_text(text.replace("name: r", "name: s"))
    assert load_rules(tmp_path / "b").digest != digests[0]
    (tmp_path / "b" / "team" / "r.yaml").rename(tmp_path / "b" / "r.yaml")
    (tmp_path / "b" / "r.yaml").write_text(text)
    assert load_rules(tmp_path / "b").digest != digests[0]  # another path: another file


def test_a_path_that_begins_with_a_template_is_warned_about() -> None:
    """`playbook: "{{ payload.pb }}"` lets a sender pick any file under playbooks/, a vars
    file too (ansible prints it back); a terraform `dir` any configuration to apply."""
    ruleset = load_rules_text({"r.yaml": "hooks: {o: {verify: {none: {}}}}\nrules:\n"
                               "  - {name: a, hook: o, run: {ansible: {playbook: '{{ query.b }}'}}}\n"
                               "  - {name: b, hook: o, run: {terraform: {dir: '{{ query.d }}', "
                               "command: plan}}}\n"
                               "  - {name: c, hook: o, run: {ansible: {playbook: 'd-{{ query.b }}.yml'}}}\n"
                               "  - {name: e, hook: o, run: {ansible: {playbook: './{##}{{ query.c }}'}}}\n"})
    said = [w for w in ruleset.warnings if "begins with a template" in w]
    assert [w.split(": ")[0] for w in said] == ["r.yaml:3", "r.yaml:4", "r.yaml:6"], said
    assert "run.ansible.playbook" in said[0] and "vars file" in said[0]
    assert "run.terraform.dir" in said[1] and "destroyed" in said[1]


def test_a_value_left_empty_or_a_boolean_is_quoted_as_yaml_writes_it() -> None:
    """`timeout:` left empty read "got None": the writer wrote YAML's null, not Python's."""
    base = "rules:\n  - name: a\n    hook: gh\n    run: {shell: {argv: [x]}}\n"
    errors = errors_of(one(base + "    timeout:\n"))
    assert len(errors) == 1 and errors[0].endswith("got null"), errors
    errors = errors_of(one(base + "    retry: {attempts: 2, backoff: true}\n"))
    assert any(e.endswith("got true") for e in errors), errors

"""Display helpers: condition trees as text, payload views, sizes, durations, classes."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hookrunner.console import present
from hookrunner.rules.model import RateLimit, Source, When

SRC = Source("rules.yaml", 1)


@dataclass
class Expr:
    source: str

    def render(self, scope: Any) -> Any:
        return None


def leaf(text: str) -> When:
    return When("expr", SRC, expr=Expr(text))


@pytest.mark.parametrize(("when", "text"), [
    (None, "(always)"),
    (leaf('event == "push"'), 'event == "push"'),
    (When("all", SRC, children=(leaf("a"), When("any", SRC, children=(leaf("b"), leaf("c"))))),
     "all(a, any(b, c))"),
    (When("not", SRC, children=(leaf("x"),)), "not(x)"),
])
def test_when_text(when: When | None, text: str) -> None:
    assert present.when_text(when) == text


@pytest.mark.parametrize(("body", "kind", "text"), [
    (b"", "empty", ""),
    (b'{"a":[1,2]}', "json", '{\n  "a": [\n    1,\n    2\n  ]\n}'),
    (b"a=1&b=2", "text", "a=1&b=2"),
    (b"\xff\xfe\x00", "binary", base64.b64encode(b"\xff\xfe\x00").decode()),
])
def test_payload_view(body: bytes, kind: str, text: str) -> None:
    assert present.payload_view(body) == (kind, text)


def test_a_form_body_is_shown_as_the_fields_the_rules_see() -> None:
    """`curl -d '{"n": 4}'` sends a form: shown as JSON, it hid why `payload.n` was undefined."""
    form = "application/x-www-form-urlencoded"
    assert present.payload_view(b'{"n": 4}', form) == (
        "form fields, as the rules see them", '{\n  "{\\"n\\": 4}": ""\n}')
    assert present.payload_view(b"a=1&b=2", f"{form}; charset=utf-8")[1] == (
        '{\n  "a": "1",\n  "b": "2"\n}')
    assert present.payload_view(b'{"n": 4}', "application/json")[0] == "json"
    # As the API shows them: a legacy charset decoded, GitHub's payload= field unwrapped.
    latin = '{"v": "café"}'.encode("latin-1")
    assert present.payload_view(latin, "application/json; charset=iso-8859-1") == (
        "json", '{\n  "v": "café"\n}')
    assert present.payload_view(b"payload=%7B%22a%22%3A1%7D", form) == ("json", '{\n  "a": 1\n}')


def test_a_payload_view_stays_page_sized_however_the_body_is_shaped() -> None:
    """1 MB nested 250 deep printed as 260 MB once; now neither deep nor long bodies make a
    page larger than VIEW_MAX and a note."""
    deep = b"[" * 250 + b",".join([b"1"] * 520_000) + b"]" * 250
    kind, text = present.payload_view(deep)
    assert kind.startswith("json, as sent") and len(text) < present.VIEW_MAX + 200
    assert text.endswith("(the whole body: GET /api/deliveries/<id>)")
    small_deep = b"[" * 250 + b",".join([b"1"] * 10_000) + b"]" * 250  # pretty: 5 MB uncut
    kind, text = present.payload_view(small_deep)
    assert kind == "json" and len(text) < present.VIEW_MAX + 200 and "more characters" in text
    kind, text = present.payload_view(b"x" * 2_000_000)
    assert kind == "text" and len(text) < present.VIEW_MAX + 200


@pytest.mark.parametrize(("n", "text"), [
    (512, "512 B"), (1024, "1 KiB"), (1536, "1.5 KiB"), (5 * 1024**2, "5 MiB"), (1024**3, "1 GiB"),
])
def test_fmt_size(n: int, text: str) -> None:
    assert present.fmt_size(n) == text


@pytest.mark.parametrize(("s", "text"), [
    (None, "—"), (0.0123, "12ms"), (4.25, "4.2s"), (600, "10m"), (7200, "2h"), (90, "90s"),
])
def test_fmt_seconds(s: float | None, text: str) -> None:
    assert present.fmt_seconds(s) == text


@pytest.mark.parametrize(("result", "error", "cls"), [
    (True, None, "cond-true"), (False, None, "cond-false"), (None, "undefined", "cond-error"),
])
def test_condition_class(result: bool | None, error: str | None, cls: str) -> None:
    assert present.condition_class(result, error) == cls


def test_source_text_is_relative_to_the_rules_dir_when_under_it(tmp_path: Path) -> None:
    inside = Source(str(tmp_path / "rules" / "ci" / "a.yaml"), 7)
    outside = Source("/elsewhere/b.yaml", 3)
    assert present.source_text(inside, tmp_path / "rules") == "ci/a.yaml:7"
    assert present.source_text(outside, tmp_path / "rules") == "/elsewhere/b.yaml:3"


def test_times_are_utc() -> None:
    assert present.fmt_time(0) == "1970-01-01 00:00:00"
    assert present.iso_time(86400) == "1970-01-02T00:00:00Z"
    assert present.fmt_time(None) == "—"


@pytest.mark.parametrize(("raw", "shown"), [
    ("\x1b[1;31merror\x1b[0m: x\n", "error: x\n"),
    ("\x1b]0;title\x07done\tok\r\n", "done\tok\r\n"),
    ("nul\x00 bell\x07 esc\x1b del\x7f", "nul\u2400 bell\u2407 esc\u241b del\u2421"),
    ("plain ünïcode — text", "plain ünïcode — text"),
])
def test_run_output_drops_terminal_escapes_and_shows_other_controls(raw: str, shown: str) -> None:
    assert present.visible_log(raw) == shown


@pytest.mark.parametrize(("rate", "burst", "per_client", "text"), [
    (10.0, 20, True, "10/s, burst 20, per client"),
    (1 / 6, 1, True, "10/m, burst 1, per client"),
    (2 / 3600, 5, False, "2/h, burst 5, whole hook"),
    (0.3, 1, True, "18/m, burst 1, per client"),
    (1 / 7, 1, True, "0.143/s, burst 1, per client"),
])
def test_rate_text(rate: float, burst: int, per_client: bool, text: str) -> None:
    assert present.rate_text(RateLimit(rate, burst, per_client)) == text


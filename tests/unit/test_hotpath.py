"""The accept path's own plumbing: exact payload numbers, plain-ASGI request reading, the
--max-queued budget across processes, and events written without a LogRecord."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from hookrunner import logs
from hookrunner.budget import QueueBudget
from hookrunner.payload import parse_body
from hookrunner.rawhttp import ClientGone, TooLarge, headers_of, query_pairs, read_body
from hookrunner.verify.base import Headers


def test_payload_numbers_stay_exact() -> None:
    """A faster JSON parser (orjson) was tried here and dropped: it turns integers past 64 bits
    into floats, which would change a sender's ids."""
    doc = parse_body(b'{"id": 123456789012345678901234567890, "x": 1.5}', "application/json")
    assert doc == {"id": 123456789012345678901234567890, "x": 1.5}


def scope(**kw: Any) -> dict[str, Any]:
    base = {"type": "http", "method": "POST", "scheme": "http", "path": "/hooks/gh",
            "root_path": "", "query_string": b"", "server": ("127.0.0.1", 8080),
            "headers": [(b"host", b"example.com:8443"), (b"x-a", b"1"), (b"X-A", b"2")]}
    return {**base, **kw}


@pytest.mark.parametrize("qs", [b"", b"wait=3s&a=%20b", b"a=1&a=2", b"x=%C3%A9&flag"])
def test_query_as_starlette_reads_it(qs: bytes) -> None:
    s = scope(query_string=qs)
    assert query_pairs(s) == Request(s).query_params.multi_items()
    assert dict(query_pairs(s)) == dict(Request(s).query_params)  # `query` in templates


def test_headers_first_value_and_all_values() -> None:
    h = headers_of(scope())
    assert h.get("X-A") == "1" and h.get_all("x-a") == ["1", "2"]
    assert Headers([("A", "1")]).get("a") == "1" and "a" in Headers([("A", "1")])


async def test_read_body_bounds_and_disconnects() -> None:
    def feeder(*messages: dict[str, Any]) -> Any:
        queue = list(messages)

        async def receive() -> dict[str, Any]:
            return queue.pop(0)
        return receive

    parts = feeder({"type": "http.request", "body": b"ab", "more_body": True},
                   {"type": "http.request", "body": b"cd", "more_body": False})
    assert await read_body(parts, None, 10) == b"abcd"
    with pytest.raises(TooLarge):
        await read_body(feeder(), "11", 10)  # declared: refused before reading
    with pytest.raises(TooLarge):
        await read_body(feeder({"type": "http.request", "body": b"x" * 11}), None, 10)
    with pytest.raises(ClientGone):
        await read_body(feeder({"type": "http.disconnect"}), None, 10)


def test_budget_admits_up_to_the_bound_and_counts_refreshes() -> None:
    b = QueueBudget()
    assert b.admit(3, limit=4) and b.queued == 3
    assert not b.admit(2, limit=4)  # 3 + 2 > 4
    b.accepted(3, reserved=3)
    assert b.queued == 3
    b.refresh(store_queued=1, before_count=b.snapshot())
    assert b.queued == 1


def test_budget_counts_claimed_runs_off_the_queue_between_refreshes() -> None:
    """A small bound must not fill up with runs that already left the queue: one delivery
    at a time, each run claimed before the next arrives, never comes near the bound."""
    b = QueueBudget()
    for _ in range(10):
        assert b.admit(1, limit=2)
        b.accepted(1, reserved=1)
        b.claimed(1)
        assert b.queued == 0
    b.refresh(store_queued=3, before_count=b.snapshot())  # 3 more queued (a CLI replay)
    assert b.queued == 3
    b.claimed(2)
    assert b.queued == 1
    # More claimed than were counted (runs that arrived by another way since the count): no
    # credit that would let the next deliveries past the bound before the next count.
    b.claimed(5)
    assert b.queued == 0
    assert b.admit(2, limit=2) and not b.admit(1, limit=2) and b.queued == 2
    empty = QueueBudget()
    assert empty.admit(50, limit=4)  # an empty queue admits any delivery


def test_shared_budget_is_one_bound_across_forked_processes(tmp_path: Path) -> None:
    b = QueueBudget(str(tmp_path / "budget.lock"), slots=5)
    pids = []
    for slot in range(1, 5):
        pid = os.fork()
        if pid == 0:
            b.enter(slot)
            os._exit(sum(b.admit(1, limit=10) for _ in range(100)))
        pids.append(pid)
    admitted = sum(os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids)
    b.enter(0)
    assert admitted == 10 and b.queued == 10


def test_a_process_that_dies_mid_accept_neither_blocks_nor_shrinks_the_queue(
    tmp_path: Path,
) -> None:
    b = QueueBudget(str(tmp_path / "budget.lock"), slots=2)
    pid = os.fork()
    if pid == 0:
        b.enter(1)
        b.admit(3, limit=4)
        b._lock()  # and dies holding the lock (a SIGKILL mid-request)
        os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(pid, 0)
    b.enter(0)
    assert b.queued == 3
    assert not b.admit(2, limit=4)  # returns: the kernel dropped the dead process's lock
    b.release(1)  # what the supervisor does before replacing that worker
    assert b.queued == 0 and b.admit(4, limit=4)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_direct_events_write_the_formatters_line(fmt: str) -> None:
    logs.setup_logging(fmt)
    handler = logs.LOGGER.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    out = io.StringIO()
    handler.stream = out
    try:
        logs.event("delivery.accepted", hook="gh", note="two words", n=3, event_type=None)
        direct = out.getvalue()
        logs.LOGGER.log(logging.INFO, "delivery.accepted",
                        extra={"fields": {"hook": "gh", "note": "two words", "n": 3,
                                          "event_type": None}})
        through_logging = out.getvalue()[len(direct):]
    finally:
        logs.LOGGER.handlers[:] = []
        logs._direct = None
    if fmt == "json":
        a, b = json.loads(direct), json.loads(through_logging)
        assert abs(a.pop("ts") - b.pop("ts")) < 5 and a == b
    else:
        assert direct.split(" ", 1)[1] == through_logging.split(" ", 1)[1]
        assert direct.rstrip().endswith('note="two words" n=3')  # no `event_type=None`


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_an_exception_stays_in_its_events_one_line(fmt: str) -> None:
    """A text log put the traceback on lines of its own: one event, many lines, which a
    line-based collector splits into nonsense events."""
    with captured_log(fmt) as out:
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError:
            logs.LOGGER.exception("http.internal_error")
    (line,) = out.getvalue().splitlines()
    if fmt == "json":
        assert "ZeroDivisionError: division by zero" in json.loads(line)["exception"]
    else:
        assert ' http.internal_error exception="Traceback (most recent call last):\\n' in line
        assert line.endswith('ZeroDivisionError: division by zero"')


@contextlib.contextmanager
def captured_log(fmt: str = "json") -> Iterator[io.StringIO]:
    """The log lines events write, captured; logging put back as it was."""
    logs.setup_logging(fmt)
    handler = logs.LOGGER.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    out = io.StringIO()
    handler.stream = out
    try:
        yield out
    finally:
        logs.LOGGER.handlers[:] = []
        logs._direct = None


def events_in(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_throttled_events_count_per_hook_so_one_flood_cannot_hide_another(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(logs.time, "monotonic", lambda: clock[0])
    refused = logs.Throttled("delivery.rejected", logging.WARNING, per="hook")
    with captured_log() as out:
        for _ in range(5):
            refused(hook="a")
        refused(hook="b")  # its first refusal is logged at once, not folded into a's
        clock[0] += 1.0
        refused(hook="a")
    assert [(x["hook"], x["count"]) for x in events_in(out)] == [("a", 1), ("b", 1), ("a", 5)]


def test_body_refusals_are_counted_per_kind_so_one_kind_cannot_hide_another(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """probe: bad JSON, a gzip body and a PNG within a second were one line naming the
    last reason only; the README says a line per hook and reason."""
    from hookrunner import ingest

    clock = [200.0]
    monkeypatch.setattr(logs.time, "monotonic", lambda: clock[0])
    refused = logs.Throttled("delivery.rejected", logging.WARNING, per=ingest._hook_and_kind)
    with captured_log() as out:
        for reason in ("body is not valid JSON: Expecting value: line 1 column 2 (char 1)",
                       "body is not valid JSON: Expecting ',' delimiter",
                       "content encoding 'gzip' is not supported; send the body as is",
                       "unsupported content type 'image/png'; send JSON or form fields",
                       "unsupported content type 'text/html'; send JSON or form fields"):
            refused(hook="a", reason=reason)
        clock[0] += 1.0
        refused(hook="a", reason="body is not valid JSON: x")
    assert [(x["reason"][:12], x["count"]) for x in events_in(out)] == [
        ("body is not ", 1), ("content enco", 1), ("unsupported ", 1), ("body is not ", 2)]


def test_text_log_values_with_control_characters_are_quoted() -> None:
    """A sender's id is the sender's text: `\\r` or ESC must not reach the log raw."""
    assert logs._text("gh-1") == "gh-1"
    assert logs._text("a\rb") == '"a\\rb"' and logs._text("\x1b[31m") == '"\\u001b[31m"'


async def test_a_burst_held_back_is_told_once_its_second_is_over_with_no_later_event() -> None:
    """40 refusals in a burst logged `count=1`, and the other 39 were never told."""
    refused = logs.Throttled("delivery.rejected", logging.WARNING, every=0.2, per="hook")
    with captured_log() as out:
        for i in range(40):
            refused(hook="a", client=f"c{i}")
        await asyncio.sleep(0.4)
    assert [(x["count"], x["client"]) for x in events_in(out)] == [(1, "c0"), (39, "c39")]


async def test_held_back_events_are_said_at_once_before_a_line_that_ends_them() -> None:
    """`store.available` must follow the outage's refusals, not come before their count."""
    down = logs.Throttled("test.store_unavailable", logging.ERROR, every=60.0, per="hook")
    with captured_log() as out:
        for _ in range(3):
            down(hook="a")
        logs.settle_throttled()
        logs.event("store.available")
        await asyncio.sleep(0)
    # (Other throttled events held back by earlier tests are said too: they are not these.)
    ours = [x for x in events_in(out) if x["event"] in ("test.store_unavailable", "store.available")]
    assert [(x["event"], x.get("count")) for x in ours] == [
        ("test.store_unavailable", 1), ("test.store_unavailable", 2), ("store.available", None)]


def test_the_database_drivers_lines_are_hookrunners_own_and_throttled() -> None:
    """psycopg's pool wrote 207 bare, multi-line lines into a JSON log in an outage."""
    with captured_log() as out:
        for i in range(5):
            logging.getLogger("psycopg.pool").warning("error connecting in 'pool-1': refused\n"
                                                      "\tIs the server running? (%d)", i)
    (line,) = events_in(out)
    assert line["event"] == "store.driver_message" and line["logger"] == "psycopg.pool"
    assert line["message"].startswith("error connecting in 'pool-1'")


def test_text_log_lines_leave_out_fields_without_a_value() -> None:
    line = logs._text_line(0.0, "info", "run.finished", {"status": "succeeded", "reason": "",
                                                          "retry_in": None, "exit_code": 0})
    assert line.endswith("info run.finished status=succeeded exit_code=0"), line


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_fields_value_is_cut_so_a_line_stays_one_line(fmt: str) -> None:
    """A reason quoting a 900 KB path a template made was a 900 KB line: journald split it,
    and other processes' lines on the same pipe were spliced into it."""
    line = (logs._json_line if fmt == "json" else logs._text_line)(
        0.0, "warning", "run.finished", {"reason": "path '" + "C" * 900_000 + "' is outside",
                                         "run_id": "run_1"})
    assert len(line) < 2 * logs.FIELD_MAX and "run_id" in line
    assert "...[898994 more characters]" in line, line[-200:]
    # `runs=` (the rules' names and run ids) is how a delivery is followed: whole.
    runs = ",".join(f"rule-{n}=run_{n:020d}" for n in range(60))
    assert runs in logs._text_line(0.0, "info", "delivery.accepted", {"runs": runs})


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_line_is_bounded_field_by_field_however_long_the_line(fmt: str) -> None:
    """A line is written in one pass unless it is past FIELD_MAX; then each field is looked
    at: one at FIELD_MAX stays whole, one past it is cut, and a long line of short fields
    is the same as it would be without the check."""
    line_of = logs._json_line if fmt == "json" else logs._text_line
    at, past = "a" * logs.FIELD_MAX, "b" * (logs.FIELD_MAX + 1)
    assert at in line_of(0.0, "info", "e", {"x": at})
    cut = line_of(0.0, "info", "e", {"x": past, "y": "z"})
    assert past not in cut and "b" * logs.FIELD_MAX + "...[1 more characters]" in cut, cut[-80:]
    many = {f"f{i}": "v" * 100 for i in range(30)}  # 3,000+ characters, no field past 100
    line = line_of(0.0, "info", "e", many)
    assert len(line) > logs.FIELD_MAX and "[" not in line.replace('["', "")
    assert line.count("v" * 100) == 30, line[:200]


@pytest.mark.parametrize("size", [0, 1, 2047, 2048, 5400, 70_000])
@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha512"])
def test_a_signature_made_in_pieces_is_the_one_shot_hmac(size: int, algorithm: str) -> None:
    """crypto.sign hashes in pieces that keep the GIL (and copies a keyed state made once):
    the result must be exactly hmac.digest's, whatever the size and whichever the secret."""
    import hmac

    from hookrunner.verify.crypto import sign

    message = os.urandom(size)
    # A key longer than a block (64 bytes; 128 for sha512) is hashed first; shorter padded.
    for secret in (b"", b"k", *(os.urandom(n) for n in (63, 64, 65, 127, 128, 129, 200))):
        assert sign(secret, message, algorithm) == hmac.digest(secret, message, algorithm)
        assert sign(secret, message + b"x", algorithm) != hmac.digest(secret, message, algorithm)


def test_a_long_text_is_matched_as_a_short_one() -> None:
    """bounds.regex_find keeps the GIL for a short text and lets go of it for a long one:
    both give the same answers."""
    from hookrunner.bounds import REGEX_GIL_KEPT, regex_find

    for text in ("refs/tags/v1.2", "refs/tags/v1" + "x" * REGEX_GIL_KEPT):
        assert regex_find("refs/tags/v.*", text, anchored=True)
        assert regex_find("tags/v[0-9]", text, anchored=False)
        assert not regex_find("tags/v[0-9]", text, anchored=True)
        assert not regex_find("refs/heads/", text, anchored=False)


JSON_VALUES: list[Any] = [
    {}, [], "", "é\"\\\n\u2028", 0, -1, 2**70, 1.5, -0.0, 1e300, True, None,
    {"a": [1, {"b": None}], "é": "x", "2": 2}, [("pair", "kept")], {1: "int key"},
]


@pytest.mark.parametrize("options", [
    {"separators": (",", ":")},  # the stores' columns
    {"ensure_ascii": False, "allow_nan": False, "separators": (",", ":")},  # HTTP answers
    {"default": str},  # JSON log lines
])
def test_a_made_once_encoder_writes_what_json_dumps_writes(options: dict[str, Any]) -> None:
    from hookrunner import jsontext

    encode = jsontext.encoder(**options)
    for value in JSON_VALUES:
        assert encode(value) == json.dumps(value, **options), value
    if "default" in options:
        assert encode({"p": Path("/x")}) == json.dumps({"p": Path("/x")}, **options)
    else:
        with pytest.raises(TypeError):
            encode({"p": Path("/x")})
    if options.get("allow_nan") is False:
        with pytest.raises(ValueError):
            encode([float("nan")])


def test_a_body_is_parsed_as_json_loads_parses_it() -> None:
    """One decoder is made for every body (json.loads made one per call): same values, same
    refusals, the same words for a byte order mark inside a field (`| from_json`)."""
    from hookrunner.payload import PayloadError, parse_json

    for text in ('{"a": [1, 2.5, "x"], "b": {"c": null}}', " [] ", '"\u00e9"', "12345678901234567890123"):
        assert parse_json(text) == json.loads(text)
    for bad, words in (("[NaN]", "NaN is not a JSON number"), ("[1e999]", "out of range"),
                       ('{"a": 1', "Expecting ',' delimiter"), ("\ufeff{}", "Unexpected UTF-8 BOM"),
                       ("{} x", "Extra data")):
        with pytest.raises(PayloadError) as caught:
            parse_json(bad)
        assert words in caught.value.message, caught.value.message


def test_an_accepted_delivery_is_counted_in_the_hooks_own_series() -> None:
    """Metrics.delivery finds a hook's child series once: counts land where labels() puts them."""
    from hookrunner.metrics import Metrics

    m = Metrics()
    m.delivery("gh", "accepted").inc()
    m.delivery("gh", "accepted").inc()
    m.delivery("other", "accepted").inc()
    assert m.delivery("gh", "accepted") is m.deliveries.labels("gh", "accepted")
    text = m.render().decode()
    assert 'hookrunner_deliveries_total{hook="gh",outcome="accepted"} 2.0' in text
    assert 'hookrunner_deliveries_total{hook="other",outcome="accepted"} 1.0' in text


def test_a_runs_series_found_once_is_the_one_labels_gives() -> None:
    """Metrics.child, as the dispatcher counts each run's end: counts and observations land
    in the series labels() names, whichever metric."""
    from hookrunner.metrics import Metrics

    m = Metrics()
    for _ in range(2):
        m.child(m.runs, "deploy", "succeeded").inc()
        m.child(m.run_duration, "deploy").observe(0.5)
    m.child(m.runs_ended, "deploy", "failed").inc()
    assert m.child(m.runs, "deploy", "succeeded") is m.runs.labels("deploy", "succeeded")
    assert m.child(m.runs, "deploy", "failed") is not m.child(m.runs_ended, "deploy", "failed")
    text = m.render().decode()
    assert 'hookrunner_runs_finished_total{rule="deploy",status="succeeded"} 2.0' in text
    assert 'hookrunner_runs_ended_total{rule="deploy",status="failed"} 1.0' in text
    assert 'hookrunner_run_duration_seconds_count{rule="deploy"} 2.0' in text


def test_header_values_read_as_utf8_only_where_one_is_not_ascii() -> None:
    plain = Headers([("X-A", "abc"), ("X-B", "def")])
    assert plain.as_utf8() is plain
    sent = Headers([("X-A", "abc"), ("X-Name", "Jürgen".encode().decode("latin-1"))])
    assert sent.as_utf8().get("x-name") == "Jürgen" and sent.as_utf8().get("x-a") == "abc"


def test_ids_differ_across_forked_processes_and_a_seeded_global_random() -> None:
    """new_id's generator is its own and seeded again in a forked child (--http-workers):
    a child never repeats its parent's ids, and `random.seed` elsewhere does not reach it."""
    import random

    from hookrunner.ids import new_id

    random.seed(1)
    first = new_id("dlv")
    random.seed(1)
    assert new_id("dlv")[15:] != first[15:]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to compare with the parent's next ones
        os.write(write, " ".join(new_id("dlv")[15:] for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    theirs = set(os.read(read, 65536).decode().split())
    os.close(read)
    mine = {new_id("dlv")[15:] for _ in range(50)}
    assert len(theirs) == 50 and not theirs & mine


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.characters(codec=None, blacklist_categories=()), max_size=260))
def test_a_text_is_described_as_the_general_path_describes_it(value: str) -> None:
    """templating.describe writes a str in one call (its JSON text, made storable only where
    it is not ASCII): the same text as the general path's, cut at the same limit."""
    from hookrunner import templating

    general = templating.as_storable(templating._JSON.encode(templating.to_plain(value, False)))
    general = general if len(general) <= 200 else general[:199] + "…"
    assert templating.describe(value) == general


def test_headers_are_redacted_alike_judged_first_or_again() -> None:
    """redact_pairs keeps each name's verdict (secret_key's) by name: the second delivery's
    headers are redacted as the first's, a long made-up name is judged and not kept, and
    names the verifier gives are redacted whatever their verdict."""
    from hookrunner import redact

    long_name = "x-" + "a" * 80 + "-token"
    pairs = [("X-Api-Key", "k1"), ("Content-Type", "json"), (long_name, "t"), ("X-Event", "e")]
    first = redact.redact_pairs(pairs)
    assert first == redact.redact_pairs(pairs) == [
        ("X-Api-Key", redact.REDACTED), ("Content-Type", "json"), (long_name, redact.REDACTED),
        ("X-Event", "e")]
    assert long_name not in redact._KNOWN and redact._KNOWN["X-Api-Key"] is True
    assert redact.redact_pairs(pairs, also=["x-event"])[3] == ("X-Event", redact.REDACTED)


def _refusal(argv: list[str], env: dict[str, str]) -> str | None:
    from hookrunner.actions.process import check_strings
    from hookrunner.errors import ActionError

    try:
        check_strings(argv, env)
    except ActionError as exc:
        return str(exc)
    return None


_texts = st.text(alphabet=st.sampled_from("ab=\0é\udcff€"), max_size=6) | st.sampled_from(
    ["x" * 32_760, "é" * 16_400, "€" * 11_000, "y" * 131_071, "y" * 131_072])


@settings(max_examples=300, deadline=None)
@given(st.lists(_texts, min_size=1, max_size=4),
       st.dictionaries(_texts, _texts, max_size=4))
def test_strings_passed_at_a_glance_are_those_every_check_passes(
    argv: list[str], env: dict[str, str],
) -> None:
    """check_strings passes most runs from their joined text; where it does, the checks one
    string at a time (forced here) pass too, and any refusal is theirs, in their words."""
    from hookrunner.actions import process

    quick = _refusal(argv, env)
    saved = process._QUICK_ROOM
    process._QUICK_ROOM = -1  # every string checked one by one
    try:
        assert quick == _refusal(argv, env), (quick, [len(a) for a in argv])
    finally:
        process._QUICK_ROOM = saved


def test_a_serving_process_collects_cycles_at_its_own_pace() -> None:
    """gctune.for_serving: young collections every 10,000 net allocations instead of 700 (a
    server's deliveries in flight crossed 700 over and over); the older generations keep
    their ratios, and a pace set higher already stays."""
    import gc

    from hookrunner import gctune

    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        gctune.for_serving()
        assert gc.get_threshold() == (gctune.YOUNG, 10, 10)
        gc.set_threshold(50_000, 5, 7)
        gctune.for_serving()
        assert gc.get_threshold() == (50_000, 5, 7)
    finally:
        gc.set_threshold(*saved)


def test_a_failed_loop_rounds_first_line_is_the_event_with_its_fields(tmp_path: Path) -> None:
    """In JSON its event was `dispatcher.loop_failed task=claim`: a filter on the event
    name missed the one line with the traceback."""
    from hookrunner.dispatch import Dispatcher
    from hookrunner.metrics import Metrics
    from hookrunner.settings import Settings
    from hookrunner.store.memory import MemoryStore

    dispatcher = Dispatcher(Settings(data=tmp_path), MemoryStore(), Metrics())
    with captured_log("json") as out:
        try:
            raise ValueError("a row it cannot read")
        except ValueError as exc:
            dispatcher._loop_failed("claim", exc)
    (first,) = events_in(out)  # (the next in a row are throttled lines: the same event)
    assert first["event"] == "dispatcher.loop_failed" and first["task"] == "claim"
    assert "ValueError: a row it cannot read" in first["exception"]

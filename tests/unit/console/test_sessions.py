"""Console sessions: random ids, idle and absolute expiry, CSRF tokens, a bounded table."""

from __future__ import annotations

import pytest

from hookrunner.console import sessions as mod
from hookrunner.console.sessions import Sessions, cookie_ids


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_new_session_is_valid_and_ids_and_csrf_tokens_are_distinct() -> None:
    s = Sessions()
    a, b = s.create(), s.create()
    assert s.get(a.id) is not None and s.get(b.id) is not None
    assert len({a.id, b.id, a.csrf, b.csrf}) == 4


@pytest.mark.parametrize("sid", [None, "", "made-up"])
def test_unknown_or_missing_ids_are_not_sessions(sid: str | None) -> None:
    s = Sessions()
    s.create()
    assert s.get(sid) is None


def test_a_session_idle_too_long_ends_but_use_keeps_it_alive() -> None:
    clock = Clock()
    s = Sessions(clock)
    kept, idle = s.create(), s.create()
    for _ in range(3):
        clock.now += mod.IDLE_TIMEOUT * 0.6
        assert s.get(kept.id) is not None
    assert s.get(idle.id) is None


def test_a_session_ends_at_its_max_age_however_busy() -> None:
    clock = Clock()
    s = Sessions(clock)
    a = s.create()
    while clock.now + mod.IDLE_TIMEOUT / 2 < 1_000_000.0 + mod.MAX_AGE:
        clock.now += mod.IDLE_TIMEOUT / 2
        assert s.get(a.id) is not None
    clock.now += mod.IDLE_TIMEOUT / 2
    assert s.get(a.id) is None


def test_ending_a_session_invalidates_it() -> None:
    s = Sessions()
    a = s.create()
    s.end(a.id)
    assert s.get(a.id) is None and len(s) == 0


@pytest.mark.parametrize(("token", "ok"), [("right", True), ("wrong", False), ("", False), (None, False)])
def test_csrf_token_must_be_the_sessions_own(token: str | None, ok: bool) -> None:
    s = Sessions()
    a = s.create()
    given = a.csrf if token == "right" else token
    assert s.csrf_ok(a.id, given) is ok


def test_another_sessions_csrf_token_is_refused() -> None:
    s = Sessions()
    a, b = s.create(), s.create()
    assert not s.csrf_ok(a.id, b.csrf)
    assert not s.csrf_ok("made-up", a.csrf)


def test_the_table_is_bounded_dropping_the_oldest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mod, "MAX_SESSIONS", 3)
    s = Sessions()
    first = s.create()
    rest = [s.create() for _ in range(3)]
    assert len(s) == 3 and s.get(first.id) is None
    assert all(s.get(r.id) is not None for r in rest)


def test_every_session_cookie_sent_is_read_in_order_and_the_live_one_counts() -> None:
    s = Sessions()
    live = s.create()
    headers = [f"other=1; hookrunner_session=stale;hookrunner_session = {live.id} ",
               "hookrunner_session=late; x=hookrunner_session=no"]
    assert cookie_ids(headers) == ["stale", live.id, "late"]
    assert s.live(cookie_ids(headers)) is live
    assert s.live(["stale", "late"]) is None and s.live([]) is None
    assert cookie_ids(["hookrunner_session", "x_hookrunner_session=1"]) == []

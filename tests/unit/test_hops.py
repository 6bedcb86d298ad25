"""The hop count of a request (hookrunner.hops): pure logic."""

from __future__ import annotations

from hookrunner import hops


def test_a_senders_own_header_of_that_name_is_no_count() -> None:
    assert hops.of({hops.HEADER: "3"}) == 3
    assert [hops.of({hops.HEADER: v}) for v in ("", "x", "-1", "1e3", " 2 ", "\xb2",
                                                "\xc2\xb2", "\u0661")] == [0, 0, 0, 0, 2, 0, 0, 0]
    assert hops.too_many({hops.HEADER: str(hops.MAX_HOPS)}) is None
    assert hops.too_many({hops.HEADER: str(hops.MAX_HOPS + 1)}) == hops.MAX_HOPS + 1


def test_a_count_of_any_length_is_read_and_a_long_one_is_past_the_limit() -> None:
    """`1000` and a 30-digit count were read as 0 (not a count), so accepted: the README
    says a count past 10 is refused."""
    assert hops.of({hops.HEADER: "0007"}) == 7
    assert hops.of({hops.HEADER: "1000"}) == 1000
    assert hops.of({hops.HEADER: "9" * 30}) == 999_999_999
    assert hops.of({hops.HEADER: "0" * 30}) == 0
    assert hops.too_many({hops.HEADER: "1" * 5000}) == 999_999_999  # (no 4,300-digit int())

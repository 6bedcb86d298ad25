"""The hop count of a request (hookrunner.hops): pure logic."""

from __future__ import annotations

from hookrunner import hops


def test_a_senders_own_header_of_that_name_is_no_count() -> None:
    assert hops.of({hops.HEADER: "3"}) == 3
    assert [hops.of({hops.HEADER: v}) for v in ("", "x", "-1", "1e3", "9999", " 2 ", "\xb2",
                                                "\xc2\xb2", "\u0661")] == [0, 0, 0, 0, 0, 2, 0, 0, 0]
    assert hops.too_many({hops.HEADER: str(hops.MAX_HOPS)}) is None
    assert hops.too_many({hops.HEADER: str(hops.MAX_HOPS + 1)}) == hops.MAX_HOPS + 1

"""Which copy of an ended attempt's log is served: the file, or the store's record."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hookrunner.runlog import ended_log
from hookrunner.store.base import Finish, NewDelivery, NewRun
from hookrunner.store.memory import MemoryStore

NOTE = ("[hookrunner] interrupted: lease of node n1 expired (its output so far, if it ran for "
        "a second or more, was written on "
        "node n1, not here: read it through that node, GET /api/runs/run_x/log?attempt=1, or "
        "in its --data dir, logs/run_x/1.log)\n")


async def _served(record: str, file_text: bytes, tmp_path: Path) -> str:
    store = MemoryStore()
    await store.open()
    d = NewDelivery(id="d1", hook="gh", received_at=1.0, headers=[], body=b"{}",
                    dedup_key=None, event="push", client_ip="1.2.3.4", matches=[], query=[],
                    verifier="github")
    run = NewRun(id="run_x", delivery_id="d1", rule="r", action="shell", spec={},
                 concurrency_key=None, policy="queue", created_at=1.0)
    await store.accept(d, [run])
    await store.claim("n1", 1, 15, 2.0)
    await store.finish(Finish("run_x", "n1", "failed", None, "interrupted", {}, 20.0,
                              log=record, attempt=1))
    path = tmp_path / "1.log"
    path.write_bytes(file_text)
    return await ended_log(store, path, "run_x", 1)


def test_the_node_that_ran_an_attempt_serves_its_file_over_a_takeover_note(
        tmp_path: Path) -> None:
    """The note said to read the output through node n1, and n1 served the note: its file
    was shorter than the note, and a shorter file was taken for one a full disk cut."""
    assert asyncio.run(_served(NOTE, b"migrating...\nstep 1 ok\n", tmp_path)) == \
        "migrating...\nstep 1 ok\n"


def test_a_file_a_full_disk_cut_short_still_gives_way_to_the_record(tmp_path: Path) -> None:
    whole = "line %d\n" * 200 % tuple(range(200))
    assert asyncio.run(_served(whole, whole.encode()[:700], tmp_path)) == whole
    assert asyncio.run(_served("ok\n", b"o", tmp_path)) == "ok\n"  # (shorter than a head)

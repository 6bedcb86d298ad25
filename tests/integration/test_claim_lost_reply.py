"""A claim whose commit went through though its reply was lost (a PostgreSQL crash, a cut
connection at COMMIT): the runs it leased to this node are started once the store answers
again. They stayed `running` unstarted and ended `failed` (interrupted) a lease later: a
run answered 202 that never ran. Real SQLite store and shell actions, the dispatcher in
this process; the store's claim commits, then raises as the lost reply did."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from hookrunner.dispatch import Dispatcher
from hookrunner.errors import StoreUnavailable
from hookrunner.metrics import Metrics
from hookrunner.settings import Settings
from hookrunner.store.base import NewDelivery, NewRun
from hookrunner.store.sqlite import SQLiteStore
from tests.integration.store.test_store import status


class LostReplyStore(SQLiteStore):
    lost = 0

    async def claim(self, *args: Any, **kwargs: Any) -> Any:
        claimed = await super().claim(*args, **kwargs)
        if claimed and not self.lost:
            self.lost = len(claimed)
            raise StoreUnavailable("PostgreSQL: server closed the connection unexpectedly")
        return claimed


async def test_runs_a_claim_leased_though_its_reply_was_lost_are_started(tmp_path: Path) -> None:
    out = tmp_path / "ran"
    settings = Settings(data=tmp_path, root=tmp_path, workers=4, node="n1", grace=1.0)
    store = LostReplyStore(tmp_path / "hookrunner.db")
    await store.open()
    dispatcher = Dispatcher(settings, store, Metrics())
    await dispatcher.start()
    try:
        d = NewDelivery(id="d-1", hook="h", received_at=time.time(), headers=[], body=b"{}",
                        dedup_key=None, event=None, client_ip="", matches=[])
        run = NewRun(id="r-1", delivery_id=d.id, rule="r", action="shell",
                     spec={"argv": ["sh", "-c", f"echo ran >> {out}"]}, created_at=time.time())
        await store.accept(d, [run])
        dispatcher.accepted(1)
        deadline = time.monotonic() + 30
        while await status(store, "r-1") != "succeeded":
            assert time.monotonic() < deadline, await store.get_run("r-1")
            await asyncio.sleep(0.05)
        assert store.lost == 1 and out.read_text() == "ran\n"  # once, by the recovery
        assert (await store.get_run("r-1")).attempt == 1  # type: ignore[union-attr]
    finally:
        await dispatcher.stop(grace=1.0)
        await store.close()

"""A claim whose commit went through though its reply was lost (a PostgreSQL crash, a cut
connection at COMMIT): the runs it leased to this node are started once the store answers
again. They stayed `running` unstarted and ended `failed` (interrupted) a lease later: a
run answered 202 that never ran. Real SQLite store and shell actions, the dispatcher in
this process; the store's claim commits, then raises as the lost reply did."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hookrunner.errors import StoreUnavailable
from hookrunner.settings import Settings
from hookrunner.store.sqlite import SQLiteStore
from tests.integration.test_run_logs import arrive, dispatching, ended


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
    settings = Settings(data=tmp_path / "data", root=tmp_path, workers=4, node="n1", grace=1.0)
    store = LostReplyStore(settings.store_url)
    async with dispatching(settings, store) as dispatcher:
        run_id = await arrive(store, dispatcher, f"echo ran >> {out}")
        assert await ended(store, run_id) == "succeeded"
        assert store.lost == 1 and out.read_text() == "ran\n"  # once, by the recovery
        assert (await store.get_run(run_id)).attempt == 1  # type: ignore[union-attr]

"""The run queue as an extra HTTP worker process sees it (`--http-workers` > 1).

The dispatcher runs in the main process. A worker admits deliveries through the shared
budget, pokes the dispatcher through the wake pipe once it journaled runs (or a cancel was
asked for), and learns how runs ended from the store, as another node would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hookrunner.dispatch import wait_for_runs
from hookrunner.settings import Settings
from hookrunner.shared import Shared
from hookrunner.store.base import Finish, Store

POLL = 0.05  # seconds between looks at the store while a `?wait=` waits


class WorkerQueue:
    def __init__(self, settings: Settings, store: Store, shared: Shared) -> None:
        self.settings = settings
        self.store = store
        self._shared = shared

    @property
    def queued(self) -> int:
        return self._shared.budget.queued

    def admit(self, runs: int) -> bool:
        return self._shared.budget.admit(runs, self.settings.max_queued)

    def accepted(self, runs: int, reserved: int = 0) -> None:
        self._shared.budget.accepted(runs, reserved)
        if runs:
            self._shared.poke()

    async def request_cancel(self, run_id: str) -> str | None:
        status = await self.store.request_cancel(run_id, time.time())
        self._shared.poke()
        return status

    async def wait_for(self, run_ids: list[str], timeout: float,
                       stopping: Callable[[], bool] = lambda: False) -> list[dict[str, Any]] | None:
        return await wait_for_runs(self.store, self.settings, run_ids, timeout, poll=POLL,
                                   stopping=stopping)

    def live_log(self, run_id: str, attempt: int) -> Path | None:
        return None  # runs run in the main process, which serves the API

    def unrecorded(self, run_id: str) -> Finish | None:
        return None  # likewise

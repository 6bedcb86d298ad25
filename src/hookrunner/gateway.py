"""The running gateway's shared state, handed to the HTTP handlers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hookrunner.metrics import Metrics
from hookrunner.ratelimit import RateLimiter
from hookrunner.reload import LiveRules
from hookrunner.rules.model import IPNetwork
from hookrunner.settings import Settings
from hookrunner.store.base import Finish, Store


def _never() -> bool:
    return False


class RunQueue(Protocol):
    """What the HTTP layer asks of the run queue: the Dispatcher in its own process, a
    WorkerQueue in an extra HTTP worker process."""

    @property
    def queued(self) -> int: ...

    def admit(self, runs: int) -> bool: ...

    def accepted(self, runs: int, reserved: int = 0) -> None: ...

    async def request_cancel(self, run_id: str) -> str | None: ...

    async def wait_for(self, run_ids: list[str], timeout: float,
                       stopping: Callable[[], bool] = _never) -> list[dict[str, Any]] | None: ...

    def live_log(self, run_id: str, attempt: int) -> Path | None: ...

    def unrecorded(self, run_id: str) -> Finish | None: ...


@dataclass
class Gateway:
    settings: Settings
    store: Store
    rules: LiveRules
    metrics: Metrics
    trusted: tuple[IPNetwork, ...] = ()
    limiter: RateLimiter = field(default_factory=RateLimiter)
    dispatcher: RunQueue | None = None
    # The server got SIGTERM/SIGINT: a `?wait` stops waiting for runs that will not start
    # before it stops (commands._server sets it, from the signal handler).
    stopping: bool = False
    # Monotonic time by which a `?wait=` answers during a stop, whatever it waits for.
    answer_by: float | None = None
    log_streams: int = 0  # run log answers under way in this process (api.MAX_LOG_STREAMS)
    # Stops the whole server with this exit status, as a SIGTERM does (commands._server
    # sets it): this node's identity was taken by another server.
    shut_down: Callable[[int], None] | None = None

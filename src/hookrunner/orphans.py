"""Processes a previous life of this node left running, found by their run's environment.

Action processes start sessions of their own, so a SIGKILL of the server leaves them running.
Every action process (and whatever it starts, unless it clears its environment) carries
`HOOKRUNNER_RUN_ID` and `HOOKRUNNER_NODE`; at start-up the dispatcher stops the ones of the
runs it marks interrupted, so a retry or the next run of the key never overlaps them.
Linux only (/proc); elsewhere nothing is found.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Collection
from pathlib import Path

from hookrunner.actions.process import is_alive, signal_process

STOP_GRACE = 3.0  # seconds between SIGTERM and SIGKILL
POLL = 0.05

_PROC = Path("/proc")


def _environ(pid_dir: Path) -> dict[bytes, bytes]:
    try:
        raw = (pid_dir / "environ").read_bytes()
    except OSError:  # gone, or not ours
        return {}
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {k: v for k, _, v in pairs}


def find(run_ids: Collection[str], node: str) -> dict[str, list[int]]:
    """Live pids per run id among `run_ids` that were started on `node`."""
    wanted = {r.encode() for r in run_ids}
    found: dict[str, list[int]] = {}
    if not wanted or not _PROC.is_dir():
        return found
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        env = _environ(entry)
        run_id = env.get(b"HOOKRUNNER_RUN_ID")
        if run_id in wanted and env.get(b"HOOKRUNNER_NODE") == node.encode():
            found.setdefault(run_id.decode(), []).append(int(entry.name))
    return found


async def stop(pids: Collection[int], grace: float = STOP_GRACE) -> None:
    """SIGTERM each pid, wait up to `grace` for all to go, then SIGKILL what is left."""
    for pid in pids:
        signal_process(pid, signal.SIGTERM)
    loop = asyncio.get_running_loop()
    until = loop.time() + grace
    while loop.time() < until and any(is_alive(p) for p in pids):
        await asyncio.sleep(POLL)
    for pid in pids:
        if is_alive(pid):
            signal_process(pid, signal.SIGKILL)

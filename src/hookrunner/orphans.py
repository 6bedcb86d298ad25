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
from collections.abc import Collection, Mapping
from pathlib import Path

from hookrunner.actions.process import is_alive, signal_process

STOP_GRACE = 3.0  # seconds between SIGTERM and SIGKILL
POLL = 0.05
LOOK_EVERY = 0.25  # seconds between looks for new processes while the known ones live
KILL_ROUNDS = 50  # looks (POLL apart) that SIGKILL what they find, before giving up

_PROC = Path("/proc")


def _environ(pid_dir: Path) -> dict[bytes, bytes]:
    try:
        raw = (pid_dir / "environ").read_bytes()
    except OSError:  # gone, or not ours
        return {}
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {k: v for k, _, v in pairs}


Wanted = Mapping[str, Collection[str | tuple[str, int]]]  # per node: runs, or runs' attempts


def find_all(runs: Wanted) -> dict[str, list[int]]:
    """Live pids per run id, for what is wanted per node name: a run id (any attempt's
    processes) or a (run id, attempt) (that attempt's, by its HOOKRUNNER_ATTEMPT). One pass
    over /proc."""
    whole = {(node.encode(), r.encode()) for node, ids in runs.items() for r in ids
             if isinstance(r, str)}
    attempts = {(node.encode(), r[0].encode(), str(r[1]).encode())
                for node, ids in runs.items() for r in ids if not isinstance(r, str)}
    # A process without HOOKRUNNER_ATTEMPT (every action's has it) cannot say which attempt
    # it is of: one of a wanted attempt's run is stopped too.
    any_attempt = {(node, run_id) for node, run_id, _ in attempts}
    found: dict[str, list[int]] = {}
    if not (whole or attempts) or not _PROC.is_dir():
        return found
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        env = _environ(entry)  # {} for a zombie: it has no memory left to read
        run_id = env.get(b"HOOKRUNNER_RUN_ID")
        if run_id is None:
            continue
        node, attempt = env.get(b"HOOKRUNNER_NODE", b""), env.get(b"HOOKRUNNER_ATTEMPT")
        if (node, run_id) in whole or (node, run_id, attempt) in attempts or (
                attempt is None and (node, run_id) in any_attempt):
            found.setdefault(run_id.decode(), []).append(int(entry.name))
    return found


def _pids(found: Mapping[str, list[int]]) -> set[int]:
    return {pid for pids in found.values() for pid in pids}


async def stop(runs: Wanted, found: Mapping[str, list[int]],
               grace: float = STOP_GRACE) -> set[int]:
    """Stop every process of these runs (run ids per node name): SIGTERM those `found` (a
    look just made), up to `grace` for them to go, then SIGKILL. The processes are looked for
    again all along: what one starts meanwhile (a TERM trap that forks, a respawning loop) is
    stopped too, and it ends once a look finds none. What is still found after KILL_ROUNDS
    of SIGKILL (a process stuck in the kernel: a dead NFS server) is returned."""
    seen = _pids(found)
    for pid in seen:
        signal_process(pid, signal.SIGTERM)
    loop = asyncio.get_running_loop()
    until = loop.time() + grace
    look_at = loop.time() + LOOK_EVERY
    while loop.time() < until:
        await asyncio.sleep(POLL)
        if loop.time() < look_at and any(is_alive(p) for p in seen):
            continue
        live = _pids(await asyncio.to_thread(find_all, runs))
        if not live:
            return live
        for pid in live - seen:  # started since the last look
            signal_process(pid, signal.SIGTERM)
        seen |= live
        look_at = loop.time() + LOOK_EVERY
    for _ in range(KILL_ROUNDS):
        live = _pids(await asyncio.to_thread(find_all, runs))
        if not live:
            return live
        for pid in live:
            signal_process(pid, signal.SIGKILL)
        await asyncio.sleep(POLL)
    return _pids(await asyncio.to_thread(find_all, runs))

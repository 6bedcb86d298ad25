"""What one claim costs with a deep keyed backlog: the store work the dispatcher does on the
event loop each time a worker frees up or a delivery arrives.

    .venv/bin/python bench/claims.py [--depths 1000,10000,50000]

For each backlog shape (waiting runs spread over a number of concurrency keys, each key with
a run already running, or with its first run waiting for its retry, policy `queue`: the
shape of an alert storm into a keyed rule) it journals the runs into a fresh SQLite store
and times a claim that may take 8 runs (the best of 5). Such a claim has nothing to claim
and nothing to decide; before the keys that cannot move were left out, it sorted every
waiting run (~30 ms at 10,000 on one key).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
import time
from pathlib import Path

from hookrunner.store.base import Finish, NewDelivery, NewRun
from hookrunner.store.sqlite import SQLiteStore

NOW = 1_000_000.0
LEASE = 30.0
ids = itertools.count()


def delivery() -> NewDelivery:
    return NewDelivery(id=f"d-{next(ids)}", hook="alerts", received_at=NOW, headers=[],
                       body=b"{}", dedup_key=None, event="alert", client_ip="192.0.2.1",
                       matches=[])


def run(d: NewDelivery, key: str) -> NewRun:
    return NewRun(id=f"r-{next(ids)}", delivery_id=d.id, rule="scale", action="shell",
                  spec={"argv": ["true"]}, concurrency_key=key, policy="queue", created_at=NOW)


async def claim_ms(depth: int, keys: int, holder: str, directory: Path) -> float:
    store = SQLiteStore(directory / f"{depth}-{keys}-{holder}.db")
    await store.open()
    try:
        for k in range(keys):  # one run of each key running
            d = delivery()
            await store.accept(d, [run(d, f"key-{k}")])
        for first in await store.claim("n1", keys, LEASE, NOW):
            if holder == "retry":  # failed: its next attempt is due in an hour
                await store.finish(Finish(first.id, "n1", "failed", 1, "", {}, NOW,
                                          retry_at=NOW + 3600, attempt=1))
        for start in range(0, depth, 500):
            batch = [delivery() for _ in range(min(500, depth - start))]
            await asyncio.gather(*(store.accept(d, [run(d, f"key-{(start + i) % keys}")])
                                   for i, d in enumerate(batch)))
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            claimed = await store.claim("n1", 8, LEASE, NOW)
            best = min(best, time.perf_counter() - t0)
            assert claimed == [], "every key is busy: nothing may be claimed"
        return best * 1000
    finally:
        await store.close()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depths", default="1000,10000,50000")
    p.add_argument("--keys", default="1,100", help="numbers of keys the backlog is spread over")
    p.add_argument("--holders", default="running,retry",
                   help="what holds each key: its first run running, or waiting for its retry")
    args = p.parse_args()
    print(f"{'waiting runs':>12} {'keys':>6} {'held by':>8} {'claim ms':>9}")
    with tempfile.TemporaryDirectory(prefix="hookrunner-bench-claims-") as tmp:
        for depth in (int(x) for x in args.depths.split(",")):
            for keys in (int(x) for x in args.keys.split(",")):
                for holder in args.holders.split(","):
                    ms = await claim_ms(depth, keys, holder, Path(tmp))
                    print(f"{depth:12d} {keys:6d} {holder:>8} {ms:9.1f}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())

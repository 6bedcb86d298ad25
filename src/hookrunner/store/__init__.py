"""The store: a `Store` protocol (`base`) and its backends, chosen by `open_store`."""

from __future__ import annotations

from pathlib import Path

from hookrunner.store.base import Store

MEMORY_URL = "memory:"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_store(url_or_path: str | Path, write_lock: bool = False,
               busy_timeout: float | None = None, save_lost: bool = False) -> Store:
    """The backend for `url_or_path` (not yet opened: the caller awaits `open()`).

    `postgresql://...` / `postgres://...` select PostgreSQL, `memory:` the in-memory store,
    anything else is the path of a SQLite file (normally `<data>/hookrunner.db`).
    `write_lock`: SQLite writes of the processes of one server take turns (see SQLiteStore).
    `busy_timeout`: seconds a SQLite write waits for another process's lock (default 10).
    `save_lost`: a SQLite file deleted under it is saved (see SQLiteStore).
    """
    target = str(url_or_path)
    # Imported here so that using one backend never imports another's driver.
    if target.startswith(POSTGRES_SCHEMES):
        from hookrunner.store.postgres import PostgresStore

        return PostgresStore(target)
    if target == MEMORY_URL:
        from hookrunner.store.memory import MemoryStore

        return MemoryStore()
    from hookrunner.store.sqlite import SQLiteStore

    if busy_timeout is None:
        return SQLiteStore(Path(target), write_lock=write_lock, save_lost=save_lost)
    return SQLiteStore(Path(target), busy_timeout=busy_timeout, write_lock=write_lock,
                       save_lost=save_lost)


__all__ = ["MEMORY_URL", "Store", "open_store"]

"""The embedded store: one SQLite file in WAL mode, written by a dedicated thread.

The event loop never touches the disk: writes go to the writer thread, which group-commits
them (see `_sqlite_writer`), and reads run on one reader thread with its own connection (WAL
lets it read while the writer writes). `synchronous=FULL` because a 202 promises the delivery
survives a power cut; group commit pays for the extra fsync. Another process (the `hookrunner
runs/replay/cancel` CLI) may open the same file: every write transaction is `BEGIN IMMEDIATE`
and `busy_timeout` makes each side wait for the other instead of failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, TypeVar

from hookrunner import flocks
from hookrunner.concurrency import decide
from hookrunner.errors import DeliveryGone, StoreUnavailable
from hookrunner.logs import event
from hookrunner.private import private_dir, private_file
from hookrunner.redact import ended_key, ended_spec_text
from hookrunner.store import sql
from hookrunner.store._rows import (
    CANCELED_BEFORE_RETRY,
    CANCELED_BEFORE_START,
    CANCELED_INSTEAD_OF_RETRY,
    DELIVERY_FILTERS,
    RUN_FILTERS,
    attempt_from_row,
    delivery_from_row,
    delivery_params,
    dumps,
    listing,
    repoint_params,
    run_from_row,
    run_params,
    supersede_params,
)
from hookrunner.store._sqlite_writer import DEFAULT_MAX_BATCH, Writer
from hookrunner.store._wake import wait_event
from hookrunner.store.base import (
    KNOWN_CHUNK,
    RUN_STATUSES,
    AcceptResult,
    Attempt,
    Claimed,
    Delivery,
    Finish,
    NewDelivery,
    NewRun,
    Run,
    Skipped,
    skipped,
)

T = TypeVar("T")

DEFAULT_BUSY_TIMEOUT = 10.0  # seconds a writer waits for another process's transaction
PRUNE_CHUNK = 200  # deliveries deleted per transaction when pruning
PER_KEY_WINDOW = 20  # runs of a `queue` key read per claim, besides its newest
Q = sql.queries("sqlite")

_MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"""


WAL_KEPT = 4 * 1024 * 1024  # bytes of the -wal file kept between bursts (journal_size_limit)


def connect(path: Path, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions; every write says BEGIN IMMEDIATE itself.
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None,
                           check_same_thread=False)
    conn.row_factory = sqlite3.Row
    # What the statements that end a run store (queries.sql; redact.ended_spec says why).
    conn.create_function("hookrunner_ended_spec", 1, ended_spec_text, deterministic=True)
    conn.create_function("hookrunner_ended_key", 2, ended_key, deterministic=True)
    conn.execute("PRAGMA journal_mode=WAL")
    # The -wal file kept the size of its largest burst for good (21 MB beside an empty
    # store, after --keep pruned everything): cut back to this once a checkpoint empties it.
    conn.execute(f"PRAGMA journal_size_limit={WAL_KEPT}")
    conn.execute("PRAGMA synchronous=FULL")
    # Debian's SQLite zeroes deleted content (secure_delete=1): a prune of 8 MB of bodies
    # first wrote 8 MB of zeroed pages to the -wal file, so on a nearly full disk it failed
    # and freed nothing. FAST zeroes what is deleted within pages it writes anyway; pages
    # freed whole (a body's overflow pages) keep their bytes until they are reused.
    conn.execute("PRAGMA secure_delete=FAST")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
    return conn


def _migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply what is missing; the names of the migrations applied."""
    conn.execute(_MIGRATIONS_TABLE)
    applied = {row[0] for row in conn.execute(Q["applied_migrations"])}
    newer = sql.newer_schema("sqlite", applied)
    if newer is not None:
        raise NewerSchema(newer)
    done = []
    for version, name, script in sql.migrations("sqlite"):
        if version not in applied:
            for statement in sql.statements(script):
                conn.execute(statement)
            conn.execute(Q["record_migration"],
                         {"version": version, "name": name, "now": time.time()})
            done.append(name)
    return done


def _unwritable(path: Path) -> str | None:
    """What to say of the file (the database, or its -wal or -shm) this user cannot write:
    one restored or copied as root, say."""
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if file.exists() and not os.access(file, os.W_OK):
            return (f"{file} is not writable by this user (uid {os.geteuid()}; it belongs to "
                    f"uid {file.stat().st_uid}): chown it to the server's user")
    return None


def _applied(path: Path, immutable: bool = False) -> set[int] | None:
    """The migrations applied to the file (read-only); None where it has none yet (a new
    file). StoreUnavailable where it cannot be read: a damaged file was told to be "from an
    older hookrunner", to be upgraded by `serve`."""
    try:
        conn = sqlite3.connect(_read_only_uri(path, immutable), uri=True, timeout=1.0)
    except sqlite3.Error:
        return None
    try:
        return {row[0] for row in conn.execute(Q["applied_migrations"])}
    except sqlite3.Error as exc:
        if "no such table" in str(exc):  # no migrations table yet (a new file)
            return None
        raise StoreUnavailable(f"cannot read {path}: {exc}{_damage_hint(exc)}") from None
    finally:
        conn.close()


def foreign(path: Path) -> str | None:
    """Why the file is another program's SQLite database (tables, or a version or id it set,
    and no hookrunner migrations table), if it is; None for hookrunner's, a new or missing
    file, or one that cannot be read (said where it is opened). Read only: such a file was
    said to be "from an older hookrunner", and `serve` migrated hookrunner's tables into it
    (after switching it to WAL)."""
    try:
        conn = sqlite3.connect(_read_only_uri(path), uri=True, timeout=1.0)
    except sqlite3.Error:
        return None
    try:
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
            "ORDER BY name")]
        marked = any(conn.execute(f"PRAGMA {p}").fetchone()[0]
                     for p in ("user_version", "application_id"))
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    if "schema_migrations" in names or not (names or marked):
        return None
    held = f" (it holds {', '.join(map(repr, names[:3]))}{', ...' if len(names) > 3 else ''})" \
        if names else " (no tables, but a user_version or application_id hookrunner never sets)"
    return (f"{path} is not a hookrunner database{held}: it is another program's SQLite "
            "file; give --data a directory of its own, or move the file aside")


def _damage_hint(exc: BaseException) -> str:
    """What to do where SQLite says the file is damaged, or no database."""
    if isinstance(exc, sqlite3.DatabaseError) and any(
            word in str(exc) for word in ("malformed", "not a database", "too big",
                                          "unsupported file format")):
        return (" (the file is damaged: restore it from a backup, see the README's Backups, or "
                "move it aside to start with an empty store)")
    return ""


def _room_hint(exc: BaseException, directory: Path) -> str:
    """What to say where SQLite could not open or write for want of room: it says only
    "disk I/O error" where its -shm file cannot grow. As `serve`'s start says it."""
    if not isinstance(exc, sqlite3.OperationalError | OSError) or not _low_on_space(directory):
        return ""
    return f", as {_full(directory)}: free some space, then try again"


def _full(directory: Path) -> str:
    return f"the file system of {directory} is full ({free_bytes(directory) // 1024} KiB free)"


def _read_only_uri(path: Path, immutable: bool = False) -> str:
    # as_uri() escapes what a URI would misread in a path (`?`, `#`, `%`, spaces).
    return f"{path.absolute().as_uri()}?mode=ro" + ("&immutable=1" if immutable else "")


def _immutable_safe(path: Path) -> bool:
    """Whether the file may be read as immutable (no -shm file, no locks): no server holds
    it, and every committed transaction is in the file itself (none waits in a -wal or
    -journal file, which such a read would not see)."""
    if served(path):
        return False
    for suffix in ("-wal", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            if os.stat(f"{path}{suffix}").st_size > 0:
                return False
    return True


class NewerSchema(Exception):
    """The database's schema is not this version's, and is not to be migrated here."""


def _run_ids(conn: sqlite3.Connection, delivery_id: str) -> list[str]:
    return [r[0] for r in conn.execute(Q["run_ids_of_delivery"], {"delivery_id": delivery_id})]


def _accept(conn: sqlite3.Connection, d: NewDelivery, runs: Sequence[NewRun]) -> AcceptResult:
    # One statement on the common path; the conflict also sees earlier jobs of this batch
    # (same connection, same transaction), so dedup holds inside a group commit too.
    if conn.execute(Q["insert_delivery"], delivery_params(d)).rowcount == 0:
        row = conn.execute(Q["find_delivery_by_key"],
                           {"hook": d.hook, "dedup_key": d.dedup_key}).fetchone()
        return AcceptResult(row[0], True, _run_ids(conn, row[0]))
    if runs:  # (most deliveries match no rule)
        now = time.time()
        conn.executemany(Q["insert_run"], [run_params(r, now) for r in runs])
    return AcceptResult(d.id, False, [r.id for r in runs])


def _add_runs(conn: sqlite3.Connection, runs: Sequence[NewRun]) -> None:
    now = time.time()
    try:
        conn.executemany(Q["insert_run"], [run_params(r, now) for r in runs])
    except sqlite3.IntegrityError:  # the delivery's foreign key: pruned since it was read
        raise DeliveryGone(runs[0].delivery_id if runs else "") from None


def _claim(conn: sqlite3.Connection, node: str, limit: int, lease: float, now: float) -> Claimed:
    params = {"now": now, "limit": limit, "per_key": PER_KEY_WINDOW}
    rows = [*conn.execute(Q["claim_keyless"], params), *conn.execute(Q["claim_keyed"], params)]
    candidates = sorted((run_from_row(r) for r in rows), key=lambda r: r.seq)
    if not candidates:
        return Claimed()
    running = [run_from_row(r) for r in conn.execute(Q["running_keyed"])]
    keys = sorted({c.concurrency_key for c in candidates if c.concurrency_key is not None})
    later = [run_from_row(r) for r in conn.execute(
        Q["claim_later"], {"now": now, "keys": dumps(keys)})] if keys else []
    decision = decide(candidates, running, limit, later)
    conn.executemany(Q["skip_run"], [
        {"id": r.id, "reason": reason, "superseded_by": sup, "now": now}
        for r, reason, sup in decision.skip
    ])
    ended = [skipped(r, why) for r, why, _ in decision.skip]
    for params in supersede_params(decision, now):  # (a row each it ended: RETURNING)
        ended += [Skipped(*row) for row in conn.execute(Q["supersede_waiting"], params)]
    conn.executemany(Q["repoint_superseded"], repoint_params(decision))
    conn.executemany(Q["flag_cancel"], [{"id": r.id, "by": by} for r, by in decision.cancel])
    for r in decision.claim:
        r.status, r.attempt, r.started_at, r.finished_at, r.exit_code, r.reason = (
            "running", r.attempt + 1, now, None, None, "")
        r.lease_owner, r.lease_expires = node, now + lease
    conn.executemany(Q["start_run"], [
        {"id": r.id, "now": now, "node": node, "lease_expires": r.lease_expires}
        for r in decision.claim
    ])
    conn.executemany(Q["insert_attempt"], [
        {"run_id": r.id, "attempt": r.attempt, "node": node, "now": now} for r in decision.claim
    ])
    return Claimed(decision.claim, ended)


def _renew(conn: sqlite3.Connection, node: str, ids: Sequence[str], expires: float) -> set[str]:
    held = set()
    for rid in ids:
        cur = conn.execute(Q["renew"], {"id": rid, "node": node, "lease_expires": expires})
        if cur.rowcount:
            held.add(rid)
    return held


def _finish(conn: sqlite3.Connection, f: Finish) -> bool:
    params = {
        "run_id": f.run_id, "node": f.node, "outcome": f.outcome, "exit_code": f.exit_code,
        "reason": f.reason, "outputs": dumps(f.outputs), "finished_at": f.finished_at,
        "attempt": f.attempt,
        "retry_at": f.retry_at, "log": f.log, "replaced_by": f.replaced_by,
    }
    # Guarded by owner and status: a node that lost its lease cannot undo another's decision.
    if f.retry_at is None:
        applied = conn.execute(Q["finish_run"], params).rowcount
    else:  # one of the two applies: queued again, or canceled if a cancel was asked for
        applied = conn.execute(Q["requeue_run"], params).rowcount
        applied += conn.execute(Q["cancel_retry"], {
            **params, "cancel_reason": CANCELED_INSTEAD_OF_RETRY}).rowcount
    conn.execute(Q["finish_attempt"], params)  # after: it reads the run's superseded_by
    return applied > 0


def _request_cancel(conn: sqlite3.Connection, run_id: str, now: float) -> str | None:
    conn.execute(Q["cancel_queued"], {"id": run_id, "now": now, "reason": CANCELED_BEFORE_START,
                                      "retry_reason": CANCELED_BEFORE_RETRY})
    conn.execute(Q["flag_cancel"], {"id": run_id, "by": None})
    row = conn.execute(Q["run_status"], {"id": run_id}).fetchone()
    return None if row is None else str(row[0])


# Below this much room, SQLite's next write may fail (and a start, which maps the `-shm`
# file, die of SIGBUS): a start is refused, and /readyz tries a write before saying ready.
LOW_SPACE = 1024 * 1024


def free_bytes(directory: Path) -> int:
    """Room left for this process's writes in `directory` (root may use reserved blocks)."""
    st = os.statvfs(directory)
    return (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize


def _probe_write(conn: sqlite3.Connection) -> None:
    """A write the size of a delivery, undone in its own transaction: it needs the room one
    would (an update of a row in place may go through where a delivery cannot)."""
    conn.execute("INSERT INTO schema_migrations (version, name, applied_at) "
                 "VALUES (-1, hex(zeroblob(32768)), 0)")
    conn.execute("DELETE FROM schema_migrations WHERE version = -1")


def _low_on_space(directory: Path) -> bool:
    try:
        return free_bytes(directory) < LOW_SPACE
    except OSError:
        return False  # (the file's own checks say what is wrong with the directory)


def _readable(path: Path) -> bool:
    conn = sqlite3.connect(_read_only_uri(path), uri=True, timeout=1.0)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    finally:
        conn.close()
    return True


def _connect_immutable(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """A reading connection that needs no room: no -shm file, no locks (_immutable_safe)."""
    conn = sqlite3.connect(_read_only_uri(path, immutable=True), uri=True,
                           timeout=busy_timeout, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    return conn


def served(db: Path) -> bool:
    """Whether a server holds this database (its `lock_node` flock)."""
    return flocks.held(db.with_name(db.name + ".lock"))


class SQLiteStore:
    shared = False  # see Store.shared

    def __init__(
        self, path: str | Path, busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        max_batch: int = DEFAULT_MAX_BATCH, write_lock: bool = False, save_lost: bool = False,
    ) -> None:
        """`write_lock`: the processes of one server (`--http-workers`) take turns writing
        through a lock file (see _sqlite_writer); other writers rely on `busy_timeout`.
        `save_lost`: the file deleted under it, it saves a copy of what it holds (the
        server's main process only: one copy)."""
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        self.trouble: str | None = None  # why the last ping failed, in words /readyz may show
        self._writer = Writer(lambda: connect(self.path, busy_timeout), max_batch,
                              lock_path=f"{self.path}-writelock" if write_lock else None,
                              db_path=str(self.path), save_lost=save_lost)
        self._reader: ThreadPoolExecutor | None = None
        self._read_conn: sqlite3.Connection | None = None
        self._wake = asyncio.Event()
        self._lock_file: IO[str] | None = None

    @property
    def commits(self) -> int:
        """Write transactions committed so far (group commit makes it far below the jobs)."""
        return self._writer.commits

    async def open(self, migrate: bool = True) -> None:
        """`migrate=False` (the CLI): where the file system is full, and nothing but the
        file holds the store, it is opened to read only (SQLite cannot make its -shm file)."""
        immutable = False
        try:
            private_dir(self.path.parent)
            private_file(self.path)  # before SQLite makes it 0644 (payloads are in it)
            if (not_ours := await asyncio.to_thread(foreign, self.path)) is not None:  # unchanged
                raise StoreUnavailable(not_ours)
            # The server's: SQLite would open it read-only, and fail every write.
            unwritable = _unwritable(self.path) if migrate else None
            if unwritable is None:
                self._writer.start()
        except (OSError, sqlite3.Error) as exc:
            room = _room_hint(exc, self.path.parent)
            if not (room and not migrate and _immutable_safe(self.path)):
                raise StoreUnavailable(f"cannot open {self.path}: {exc}"
                                       f"{_damage_hint(exc) or room}") from exc
            immutable = True
            self._writer.refusal = (f"cannot write to {self.path}: {_full(self.path.parent)}, "
                                    "so it was opened to read only: free some space, then try "
                                    "again")
        if unwritable is not None:
            raise StoreUnavailable(unwritable)
        # Only a database behind on its migrations takes the write lock here: `hookrunner
        # runs` waited out a busy writer's transaction (up to the busy timeout) to read.
        try:
            applied = await asyncio.to_thread(_applied, self.path, immutable)
        except StoreUnavailable:
            await self._writer.aclose()
            raise
        problem = sql.schema_problem("sqlite", applied)
        if problem is not None and not migrate:
            await self._writer.aclose()
            raise StoreUnavailable(problem)
        if problem is not None:  # _migrate applies what is missing, or refuses a newer schema
            pending = sql.pending("sqlite", applied) if applied else []
            # An upgrade (not a new file, nor a newer schema, refused next): on a big
            # database it takes a while.
            if pending:
                event("store.migrating", path=str(self.path), pending=",".join(pending),
                      hint=sql.MIGRATING_HINT)
            try:
                done = await self._writer.run(_migrate)
            except NewerSchema as exc:
                await self._writer.aclose()
                raise StoreUnavailable(str(exc)) from None
            if done:
                event("store.migrated", path=str(self.path), applied=",".join(done))
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="hookrunner-sqlite-read")
        self._read_conn = await asyncio.get_running_loop().run_in_executor(
            self._reader, _connect_immutable if immutable else connect, self.path,
            self._busy_timeout)

    async def lock_node(self, node: str) -> bool:
        # One server per database file, whatever its --node (hookrunner.flocks).
        if self._lock_file is None:
            lock = self.path.with_name(self.path.name + ".lock")
            try:
                self._lock_file = flocks.open_lock(lock)
            except OSError as exc:
                raise StoreUnavailable(f"cannot open {lock}: {exc.strerror or exc}") from None
        return await flocks.take(self._lock_file)

    async def close(self) -> None:
        await self._writer.aclose()
        if self._lock_file is not None:
            self._lock_file.close()  # releases the lock, once nothing more is written
            self._lock_file = None
        if self._reader is not None:
            conn = self._read_conn
            if conn is not None:
                await asyncio.get_running_loop().run_in_executor(self._reader, conn.close)
            self._reader.shutdown()
            self._reader = self._read_conn = None

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._reader is None or self._read_conn is None:
            raise StoreUnavailable("the SQLite store is not open")
        conn = self._read_conn
        try:
            return await asyncio.get_running_loop().run_in_executor(self._reader, fn, conn)
        except sqlite3.DatabaseError as exc:
            # Busy, I/O, or a damaged file ("database disk image is malformed", a plain
            # DatabaseError): the store's fault, said with what to do. A subclass that
            # is a mistake in a query stays a traceback.
            if type(exc) not in (sqlite3.OperationalError, sqlite3.DatabaseError):
                raise
            raise StoreUnavailable(f"SQLite read failed: {exc}{_damage_hint(exc)}") from exc

    async def _rows(self, query: str, params: dict[str, Any]) -> list[sqlite3.Row]:
        return await self._read(lambda c: c.execute(Q[query], params).fetchall())

    async def ping(self) -> bool:
        """Readable, and the last write went through: a full disk, a lock held elsewhere or
        a deleted file fail writes while reads still work, and hooks answer 503 then."""
        self.trouble = None  # (a ping cut short by /readyz's bound says no old reason)
        failing = self._writer.failing
        low = not failing and await asyncio.to_thread(_low_on_space, self.path.parent)
        if failing or low:
            # Try a write that changes a page, as a delivery's would (a write that changes
            # nothing goes through on a full disk): an idle server's /readyz would otherwise
            # stay 503, and a load balancer send it nothing to write, for good. And on a
            # disk about full, before a delivery finds out (the file's free pages may
            # still take it: then it is ready).
            with contextlib.suppress(StoreUnavailable):
                await self._writer.run(_probe_write, grows=True)
            if self._writer.failing:
                # What /readyz may say of it (it needs no token: no path, no message).
                self.trouble = "disk full" if low or await asyncio.to_thread(
                    _low_on_space, self.path.parent) else "writes fail"
                return False
        # On a connection of its own: the reader thread may be busy with an admin listing of
        # a long history for seconds, which says nothing about whether the store is up.
        try:
            return await asyncio.to_thread(_readable, self.path)
        except sqlite3.Error:
            return False

    async def wait_for_work(self, timeout: float) -> bool:
        return await wait_event(self._wake, timeout)

    async def accept(self, delivery: NewDelivery, runs: Sequence[NewRun]) -> AcceptResult:
        result = await self._writer.run(lambda c: _accept(c, delivery, runs), grows=True)
        if result.run_ids and not result.duplicate:
            self._wake.set()
        return result

    async def add_runs(self, runs: Sequence[NewRun]) -> None:
        await self._writer.run(lambda c: _add_runs(c, runs))
        self._wake.set()

    async def claim(self, node: str, limit: int, lease: float, now: float) -> Claimed:
        return await self._writer.run(lambda c: _claim(c, node, limit, lease, now))

    async def renew(self, node: str, run_ids: Sequence[str], lease: float, now: float) -> set[str]:
        return await self._writer.run(lambda c: _renew(c, node, run_ids, now + lease))

    async def finish(self, result: Finish) -> bool:
        applied = await self._writer.run(lambda c: _finish(c, result))
        self._wake.set()  # its key is free now, or it is queued again
        return applied

    async def expired(self, now: float) -> list[Run]:
        return [run_from_row(r) for r in await self._rows("expired", {"now": now})]

    async def release_node(self, node: str) -> list[Run]:
        # One server uses a SQLite database (lock_node): every run left running is its own,
        # whatever node name it ran under (a container's host name changes at each start).
        return [run_from_row(r) for r in await self._rows("running", {})]

    async def request_cancel(self, run_id: str, now: float) -> str | None:
        status = await self._writer.run(lambda c: _request_cancel(c, run_id, now))
        self._wake.set()
        return status

    async def cancel_requests(self, node: str) -> dict[str, str | None]:
        return {r[0]: r[1] for r in await self._rows("cancel_requests", {"node": node})}

    async def get_run(self, run_id: str) -> Run | None:
        rows = await self._rows("get_run", {"id": run_id})
        return run_from_row(rows[0]) if rows else None

    async def list_runs(
        self, status: str | None = None, limit: int = 50, delivery_id: str | None = None,
        rule: str | None = None, before: str | None = None,
    ) -> list[Run]:
        params = {"status": status, "limit": limit, "delivery_id": delivery_id, "rule": rule,
                  "before": before}
        sql = listing(Q["list_runs"], RUN_FILTERS, params, lambda name: f":{name}")
        return [run_from_row(r) for r in await self._read(lambda c: c.execute(sql, params).fetchall())]

    async def attempts(self, run_id: str) -> list[Attempt]:
        return [attempt_from_row(r) for r in await self._rows("attempts", {"run_id": run_id})]

    async def get_log(self, run_id: str, attempt: int) -> str | None:
        rows = await self._rows("get_log", {"run_id": run_id, "attempt": attempt})
        return rows[0][0] if rows else None

    async def log_length(self, run_id: str, attempt: int) -> int | None:
        rows = await self._rows("log_length", {"run_id": run_id, "attempt": attempt})
        return rows[0][0] if rows else None

    async def get_log_head(self, run_id: str, attempt: int, chars: int) -> tuple[str, bool] | None:
        rows = await self._rows("get_log_head", {"run_id": run_id, "attempt": attempt,
                                                 "chars": chars})
        return (rows[0][0], bool(rows[0][1])) if rows and rows[0][0] is not None else None

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        def read(c: sqlite3.Connection) -> Delivery | None:
            row = c.execute(Q["get_delivery"], {"id": delivery_id}).fetchone()
            return None if row is None else delivery_from_row(row, _run_ids(c, delivery_id))

        return await self._read(read)

    async def list_deliveries(self, hook: str | None = None, limit: int = 50,
                              before: str | None = None) -> list[Delivery]:
        params = {"hook": hook, "limit": limit, "before": before}
        sql = listing(Q["list_deliveries"], DELIVERY_FILTERS, params, lambda name: f":{name}")

        def read(c: sqlite3.Connection) -> list[Delivery]:
            rows = c.execute(sql, params).fetchall()
            return [delivery_from_row(r, _run_ids(c, r["id"])) for r in rows]

        return await self._read(read)

    async def queued(self) -> int:
        return int((await self._rows("count_queued", {}))[0]["n"])

    async def counts(self) -> dict[str, int]:
        out = dict.fromkeys(RUN_STATUSES, 0)
        out.update({r["status"]: r["n"] for r in await self._rows("counts", {})})
        return out

    async def next_due(self) -> float | None:
        rows = await self._rows("next_due", {})
        return None if rows[0]["due"] is None else float(rows[0]["due"])

    async def known_runs(self, run_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(run_ids), KNOWN_CHUNK):
            ids = dumps(list(run_ids[i:i + KNOWN_CHUNK]))
            found.update(r[0] for r in await self._rows("known_runs", {"ids": ids}))
        return found

    async def prune(self, before: float, progress: Callable[[int], None] | None = None) -> int:
        params = {"before": before, "chunk": PRUNE_CHUNK}
        total = 0
        while True:  # one writer job per chunk: other jobs commit in between
            n = await self._writer.run(lambda c: c.execute(Q["prune"], params).rowcount)
            total += n
            if n < PRUNE_CHUNK:
                return total
            if progress is not None:
                progress(total)

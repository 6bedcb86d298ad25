"""What `serve` checks before it starts anything, so that a mistake is one line, not a
traceback: `UsageError` is a flag that cannot be right (exit 2), `StartupRefused` a
server that cannot start as configured (exit 3)."""

from __future__ import annotations

import errno
import os
import socket
import ssl
from pathlib import Path
from urllib.parse import unquote, urlsplit

from hookrunner import flocks
from hookrunner.auth import TOKEN_FILE, admin_token
from hookrunner.errors import HookrunnerError, StartupRefused
from hookrunner.private import private_dir
from hookrunner.settings import Settings


class UsageError(HookrunnerError):
    pass


def check_files(settings: Settings) -> None:
    """Files named by flags must exist (a typo is a usage error, not a failed start)."""
    for key, name in (("ssl_certfile", settings.ssl_certfile),
                      ("ssl_keyfile", settings.ssl_keyfile)):
        if name and not Path(name).exists():
            raise UsageError(f"{settings.given_as(key)} {name}: no such file")
    # Every relative path of every action resolves against it: without it each run fails.
    if not settings.root.is_dir():
        what = "not a directory" if settings.root.exists() else "no such directory"
        raise UsageError(f"{settings.given_as('root')} {settings.root}: {what}")


# Descriptors a server holds at rest (its database, sockets, pipes: ~24 measured) plus
# room for connections, and what each running action holds (a pipe, a pidfd, a log file).
FDS_AT_REST = 256
FDS_PER_RUN = 4
# Actions inherit it: a program that closes every possible descriptor, or uses select(),
# was written for 1,024; 65,536 is a plenty for a server and little for such a loop.
NOFILE_RAISED_MAX = 65536


def trusts_everyone(settings: Settings) -> list[str]:
    """The --trusted-proxy networks that hold every address (`0.0.0.0/0`, `::/0`): any
    client then names its own address in X-Forwarded-For."""
    from hookrunner.clientip import network

    # (as the server reads them: `::ffff:0:0/96` is every IPv4 address)
    return [cidr for cidr in settings.trusted_proxy if network(cidr).prefixlen == 0]


def resource_limits(settings: Settings) -> list[str]:
    """Raise the soft limit of open files to the hard one (systemd's default soft limit is
    1,024, and a burst of connections and runs met it: accepted runs could not start and
    connections were dropped unanswered); what is still too low for --workers, said."""
    import resource

    said: list[str] = []
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = NOFILE_RAISED_MAX if hard == resource.RLIM_INFINITY else min(hard, NOFILE_RAISED_MAX)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # above the kernel's nr_open: keep what there is
            pass
    needed = FDS_AT_REST + FDS_PER_RUN * settings.workers
    if soft != resource.RLIM_INFINITY and soft < needed:
        said.append(f"open files limit {soft} (hard {hard}) is low for --workers "
                    f"{settings.workers}: about {needed} are needed, or runs wait for "
                    "descriptors and connections are dropped (systemd: LimitNOFILE=65536)")
    procs, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    if os.geteuid() != 0 and procs != resource.RLIM_INFINITY and procs < settings.workers * 4 + 64:
        said.append(f"process limit {procs} (this user's processes and threads) is low for "
                    f"--workers {settings.workers}: runs would wait for it (systemd: "
                    "LimitNPROC=, TasksMax=)")
    return said


def read_only_fs(path: Path) -> bool:
    """Whether `path` is on a file system mounted read-only (where even root cannot write)."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def data_dir(settings: Settings) -> None:
    path = settings.data
    try:
        if path.exists() and not path.is_dir():
            raise StartupRefused(f"{settings.given_as('data')} {path} is not a directory")
        private_dir(path)  # what it creates is 0700 (hookrunner.private)
        if not os.access(path, os.W_OK | os.X_OK):
            if read_only_fs(path):
                raise StartupRefused(f"{settings.given_as('data')} {path} is on a read-only "
                                     "file system")
            raise StartupRefused(f"{settings.given_as('data')} {path} is not writable by this user")
    except OSError as exc:  # e.g. a parent it may not search
        raise StartupRefused(f"cannot create {settings.given_as('data')} {path}: "
                             f"{exc.strerror or exc}") from None
    # Before a token file is made for nothing.
    if not settings.db:
        from hookrunner.store.sqlite import LOW_SPACE, foreign, free_bytes, served

        if served(Path(settings.store_url)):
            raise StartupRefused(f"another server is running with this --data {path}; "
                                 "stop it first (or give this one its own)")
        if (not_ours := foreign(Path(settings.store_url))) is not None:
            raise StartupRefused(not_ours)
        if (free := free_bytes(path)) < LOW_SPACE:  # SQLite died of SIGBUS there, unlogged
            raise StartupRefused(f"the file system of {settings.given_as('data')} {path} is "
                                 f"full ({free // 1024} KiB free): free some space, then start "
                                 "again")
    if flocks.held(settings.data_lock):  # any server, on either store (see flocks)
        raise StartupRefused(data_dir_shared(settings))
    try:  # made here, where a failure is one line (a full disk), not in the app's set-up
        admin_token(settings.admin_token, path)
    except OSError as exc:
        raise StartupRefused(f"cannot write the admin token to {path / TOKEN_FILE}: "
                             f"{exc.strerror or exc}") from None


def lost_store(db: Path, logs: Path, data: Path) -> str | None:
    """Why the database file is not the one earlier runs were recorded in, if it is not:
    empty (0 bytes) or missing where a server has run (its start marks, runs' logs or a
    write-ahead log are there). Starting on it would make a new, empty store, and forget
    every queued run and every delivery id that dedup holds; the store commands would say
    only that there is no store."""
    try:
        size: int | None = db.stat().st_size
    except FileNotFoundError:
        size = None
    except OSError:
        return None  # the store's own open says what is wrong
    if size:
        return None
    wal = db.with_name(db.name + "-wal")
    try:
        history = (any(logs.glob("run_*")) or any(data.glob("started-*.marks*"))
                   or (size is None and wal.exists() and wal.stat().st_size > 0))
    except OSError:
        return None
    if not history:
        return None
    saved = sorted(data.glob(db.name + ".saved-*"))
    restore = (f"restore it: move {saved[-1]} (saved by the server that saw it go) to {db}, "
               "with no -wal or -shm file beside it, or restore a backup" if saved
               else "restore it from a backup")
    what, how = ("is empty (0 bytes)", "truncated or replaced") if size == 0 else (
        "does not exist", "deleted")
    return (f"{db} {what}, but a server has run with {data} (start marks, runs' logs or a "
            f"write-ahead log are there): the file was {how}; {restore}, or move {data} aside "
            "to start a new, empty store (as for a --data used before with a PostgreSQL --db)")


def data_dir_shared(settings: Settings) -> str:
    return (f"another server is running with this --data {settings.data}; each server needs "
            "its own (its retention would remove the other's run logs and work dirs, its start "
            "the other's start marks)")


class _Encrypted(Exception):
    """The key needs a passphrase."""


def tls(settings: Settings) -> None:
    """Load the certificate and key once, as uvicorn will, to report a bad pair in one line."""
    if not settings.ssl_certfile:
        return
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)

    def no_passphrase() -> str:  # else OpenSSL asks on the terminal, and the start hangs
        raise _Encrypted

    try:
        context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile, password=no_passphrase)
    except _Encrypted:
        raise StartupRefused(
            f"{settings.given_as('ssl_keyfile')} {settings.ssl_keyfile} is encrypted: hookrunner "
            "takes an unencrypted key (openssl pkey -in KEY -out PLAIN; keep it mode 0600)"
        ) from None
    except ssl.SSLError as exc:
        why = f" ({exc.reason.lower().replace('_', ' ')})" if exc.reason else ""
        order = (" (a chain file must start with the server's own certificate, then its "
                 "intermediates)") if exc.reason == "KEY_VALUES_MISMATCH" else ""
        raise StartupRefused(
            f"cannot load --ssl-certfile {settings.ssl_certfile} with --ssl-keyfile "
            f"{settings.ssl_keyfile}: they must be a PEM certificate and its private key{why}"
            f"{order}"
        ) from None
    except OSError as exc:
        which = f" {exc.filename}" if exc.filename else \
            f" ({settings.ssl_certfile}, {settings.ssl_keyfile})"
        raise StartupRefused(f"cannot read the TLS certificate or key{which}: "
                             f"{exc.strerror or exc}") from None


def listen(host: str, port: int) -> list[socket.socket]:
    """The listening sockets: one per address `host` resolves to (`localhost`: 127.0.0.1 and
    ::1, as uvicorn binds them), all on one port (port 0: any free one, the first picks).
    Bound before the app starts, so a port in use stops the start before the store is
    opened or `server.started` is logged. Connections wait in the backlog meanwhile."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupRefused(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    addresses = list(dict.fromkeys((family, sockaddr[:2]) for family, *_, sockaddr in infos))
    sockets: list[socket.socket] = []
    try:
        for family, (address, _) in addresses:
            chosen = sockets[0].getsockname()[1] if sockets else port
            try:
                # `--host ::` is every address, IPv4 too (as Linux has it by default); other
                # IPv6 addresses only themselves.
                sock = socket.create_server(
                    (address, chosen), family=family, backlog=2048,
                    dualstack_ipv6=address == "::" and len(addresses) == 1
                    and socket.has_dualstack_ipv6())
            except OSError as exc:
                why = os.strerror(exc.errno) if exc.errno else str(exc)
                if exc.errno == errno.EADDRINUSE:
                    why += (" (another process listens there: stop it, or choose another "
                            "port with --port or HOOKRUNNER_PORT)")
                raise StartupRefused(f"cannot listen on {host}:{chosen}: {why}") from None
            sock.set_inheritable(True)
            sockets.append(sock)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def postgres_target(url: str) -> str:
    """host:port/database of a URL as libpq reads it (`?host=`, `?dbname=`, several hosts),
    for messages: never its password."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        info = conninfo_to_dict(url)
    except Exception:  # libpq cannot read it either: name no place rather than a wrong one
        return "(a URL libpq cannot read)"
    hosts = str(info.get("host") or "localhost")
    port = str(info.get("port") or "5432")
    database = str(info.get("dbname") or info.get("user") or "")
    shown = ",".join(f"[{h}]" if ":" in h else h for h in hosts.split(","))
    return f"{shown}:{port}/{database}"


def scrub_passwords(message: str, url: str) -> str:
    """`message` without the URL's passwords: the user-info one and a `?password=` (libpq
    quotes a malformed option's value), as written and decoded. A short one would garble
    the message ("res***onse"), so then the message goes."""
    parts = urlsplit(url)
    written = [parts.password or ""] + [
        value for name, _, value in (p.partition("=") for p in parts.query.split("&"))
        if name == "password"]
    for password in {w for p in written if p for w in (p, unquote(p))}:
        if password in message:
            if len(password) < 4:
                return "connection failed (the message is not shown: it may hold the password)"
            message = message.replace(password, "***")
    return message


async def reach_postgres(url: str, need_schema: bool) -> None:
    """One plain connection first: psycopg's pool would retry noisily for seconds and then
    fail with a pool timeout that does not say why. `need_schema`: the CLI's store
    commands must find a hookrunner database, never create one."""
    import psycopg

    where = postgres_target(url)
    try:
        conn = await psycopg.AsyncConnection.connect(url, connect_timeout=5, autocommit=True)
    except psycopg.Error as exc:
        # libpq's first line says why (refused, unknown host, authentication); the rest is
        # hints. It never contains the password, but scrub it in case a URL was echoed.
        why = scrub_passwords((str(exc).strip().splitlines() or ["connection failed"])[0], url)
        raise StartupRefused(f"cannot reach PostgreSQL at {where}: {why}") from None
    async with conn:
        if need_schema:
            cur = await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
            row = await cur.fetchone()
            if not row or not row[0]:
                raise StartupRefused(f"no hookrunner store in PostgreSQL at {where} "
                                     "(is --db right? a server creates it on its first start)")

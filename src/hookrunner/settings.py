"""One frozen `Settings`, from flags > `HOOKRUNNER_*` environment > defaults.

Nothing else in hookrunner reads `os.environ` for configuration: the CLI passes the
environment in once, here.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import re
import socket
import unicodedata
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hookrunner import pathprefix
from hookrunner.clientip import bits_past_prefix
from hookrunner.units import parse_duration, parse_size

DEFAULT_RULES = "./rules"
DEFAULT_ROOT = "."
DEFAULT_DATA = "./.hookrunner"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_WORKERS = 8
DEFAULT_MAX_QUEUED = 10_000
DEFAULT_LEASE = 15.0  # seconds; renewed every lease/3, so failover takes ~15 s at most
DEFAULT_TIMEOUT = 3600.0  # a rule without `timeout` may run for an hour
DEFAULT_LOG_CAP = 10 * 1024 * 1024  # bytes of output kept per attempt
# The run's record holds its log as one value, held in memory as it is saved: SQLite and
# PostgreSQL take at most 1 GB of text (a log past it was never recorded: the run stayed
# `running`, and each start failed on it), and bytes that are not UTF-8 may triple as text.
MAX_LOG_CAP = 256 * 1024 * 1024
DEFAULT_GRACE = 30.0  # seconds running actions get after SIGTERM before they are canceled
MAX_HTTP_WORKERS = 64
ENV_PREFIX = "HOOKRUNNER_"


@dataclass(frozen=True)
class Settings:
    rules: Path = Path(DEFAULT_RULES)
    root: Path = Path(DEFAULT_ROOT)
    data: Path = Path(DEFAULT_DATA)
    db: str = ""  # empty: SQLite at <data>/hookrunner.db
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    workers: int = DEFAULT_WORKERS
    http_workers: int = 1  # processes accepting HTTP (more: see hookrunner.multiproc)
    pass_env: tuple[str, ...] = ()
    node: str = field(default_factory=socket.gethostname)
    max_queued: int = DEFAULT_MAX_QUEUED
    lease: float = DEFAULT_LEASE
    keep: float | None = None  # seconds of history to keep; None keeps everything
    trusted_proxy: tuple[str, ...] = ()
    path_prefix: str = ""  # the public path below which a proxy serves hookrunner (pathprefix)
    log_format: str = "text"
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    admin_token: str = ""
    default_timeout: float = DEFAULT_TIMEOUT
    log_cap: int = DEFAULT_LOG_CAP
    grace: float = DEFAULT_GRACE
    # The server's own environment, handed to the action environment builder, which keeps
    # only PATH, HOME, LANG, LC_*, TZ and --pass-env names from it.
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    # Where each given setting came from (`--root`, `HOOKRUNNER_ROOT`), for messages.
    sources: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Absolute from the start: actions run in other directories (ansible-playbook in its
        # private data dir), so a relative work dir such as the default `./.hookrunner/work`
        # would name a different place in each (the example playbook failed under `make run`).
        object.__setattr__(self, "data", Path(self.data).absolute())

    def given_as(self, name: str) -> str:
        """The flag or variable a setting was given by (its flag when left to its default),
        so a message names what the user wrote."""
        return self.sources.get(name) or flag_name(name)

    @property
    def store_url(self) -> str:
        return self.db or str(self.data / "hookrunner.db")

    # Made once (a frozen instance's cache; `replace` makes a new one): a run asks for its
    # log's path half a dozen times, and each `/` of pathlib's costs microseconds.
    @functools.cached_property
    def logs_dir(self) -> Path:
        return self.data / "logs"

    @property
    def data_lock(self) -> Path:
        """Held by the server serving with this --data, on either store (hookrunner.flocks)."""
        return self.data / "node.lock"

    def log_path(self, run_id: str, attempt: int) -> Path:
        """Where an attempt's output is kept (attempts count from 1)."""
        return _log_path(self.logs_dir, run_id, max(attempt, 1))

    @functools.cached_property
    def work_dir(self) -> Path:
        return self.data / "work"


@functools.lru_cache(maxsize=1024)  # the runs in flight, each asking several times
def _log_path(logs: Path, run_id: str, attempt: int) -> Path:
    # One join (pathlib splits it as two would); "./": an empty or absolute id stays inside.
    return logs / f"./{run_id}/{attempt}.log"


_LISTS = {"pass_env", "trusted_proxy"}
_DURATIONS = {"lease", "keep", "default_timeout", "grace"}
_INTS = {"port", "workers", "http_workers", "max_queued"}
_SIZES = {"log_cap"}
_PATHS = {"rules", "root", "data"}
# Settings no flag sets: only their variable does (see the README).
ENV_ONLY = frozenset({"admin_token", "default_timeout", "log_cap", "grace"})
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MIN_LEASE = 1.0  # seconds
MAX_NODE = 200  # characters
MAX_PORT = 65535


def setting_names() -> tuple[str, ...]:
    return tuple(f.name for f in fields(Settings) if f.name not in ("environ", "sources"))


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


# What an action's environment holds (actions.environment.ID_KEYS): a server started from one.
# And the server's URL for the project's own examples (examples/send.sh), which the README
# has a user export in the shell that also starts the server.
RUN_VARIABLES = frozenset(ENV_PREFIX + k for k in (
    "RUN_ID", "DELIVERY_ID", "HOOK", "RULE", "ATTEMPT", "NODE", "URL"))


def unknown_variables(environ: Mapping[str, str],
                      passed: Collection[str] = ()) -> list[tuple[str, str | None]]:
    """The `HOOKRUNNER_*` variables no setting reads, each with the likely intended one: a
    misspelled name in a unit's environment file (`HOOKRUNNER_WORKER=3`) was ignored
    silently, the server running with the default. `passed`: the --pass-env names (an
    action's own variable, named so)."""
    known = {env_name(n) for n in setting_names()}
    found: list[tuple[str, str | None]] = []
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in known and name not in RUN_VARIABLES \
                and name not in passed:
            # Compared without the prefix, which every name shares.
            close = difflib.get_close_matches(name.removeprefix(ENV_PREFIX).lower(),
                                              setting_names(), n=1, cutoff=0.75)
            found.append((name, env_name(close[0]) if close else None))
    return found


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _list_items(value: Any) -> list[str]:
    """One value of a list flag, split at commas or spaces (`--trusted-proxy "a, b"`)."""
    return str(value).replace(",", " ").split()


def _coerce(name: str, value: Any) -> Any:
    if name in _LISTS:  # `--pass-env A,B`, `--pass-env A --pass-env B`, `HOOKRUNNER_PASS_ENV="A B"`
        items = [value] if isinstance(value, str) else list(value)
        return tuple(v for item in items for v in _list_items(item))
    if name in _DURATIONS:
        return parse_duration(value)
    if name in _SIZES:
        return parse_size(value)
    if name in _INTS:
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"expected a whole number{_INT_RANGES.get(name, '')}, "
                             f"got {value!r}") from None
    if name in _PATHS:
        return Path(value)
    if name == "path_prefix":
        return pathprefix.parse(value)
    return value


_INT_RANGES = {"port": f" from 0 to {MAX_PORT}", "workers": " of at least 1",
               "http_workers": f" from 1 to {MAX_HTTP_WORKERS}", "max_queued": " of at least 1"}


def _check_db_url(value: str) -> None:
    """Refuse a PostgreSQL URL that libpq would read otherwise than it was meant: where a
    password's `@`, `/`, `?` or `#` cuts it short, messages would quote part of it."""
    found = re.search(r"[/?#]", after := value.split("://", 1)[1])
    authority = after[:found.start()] if found else after
    tail = after[found.end():] if found else ""
    if authority.count("@") > 1:
        # `user:p@ss@host`: the URL parser would take `ss@host` for the host, and libpq's
        # error ("cannot resolve host ss@host") would then print part of the password.
        raise ValueError("the URL has more than one '@' before the host: write an '@' in "
                         "the user name or password as %40")
    host = authority.rsplit("@", 1)[-1]
    written_port = host.rsplit(":", 1)[1] if ":" in host.rsplit("]", 1)[-1] else ""
    sep = found.group() if found else ""
    if sep == "/":
        # The database runs to a `?` (libpq reads a `#` as part of it, or of an option's
        # value), then options `name=value` joined by `&`.
        path, _, options = tail.partition("?")
        names = [item.split("=", 1)[0] for item in options.split("&")] if options else []
    else:  # options right after the host part; a `#` there is read as the URL parser does
        path, names = "", [item.split("=", 1)[0] for item in re.split(r"[&#]", tail)]
    if "@" in path or any("@" in n for n in names) or (
            "@" in tail and written_port and not written_port.isdigit()):
        # `user:pa/ss@host`: the host part ends at the `/` (`user` the host, `pa` its
        # port), so `ss@host/db` would be taken for the database (`?`, `#`: for the
        # options), and messages would quote it; `user:p@ss/w@host` (or `?w@host`) the
        # same, with `ss` the host. (`?user=app@server` is an option; a database name
        # with an `@` is written %40.)
        raise ValueError("the URL has an '@' after its host part: write a '/', '?' or '#' "
                         "in the user name or password as %2F, %3F or %23")
    known = _libpq_keywords()
    unknown = [n for n in names if n and known is not None and n not in known]
    if unknown and "@" in tail:
        # `user:p@ss/w?x=1@host`: libpq's "invalid URI query parameter: "x"" quoted a
        # piece of the password. (The name is not repeated here, for the same reason.)
        raise ValueError("the URL has an option libpq does not know after its '?': where a "
                         "'?' is part of the user name or password, write it as %3F")
    try:  # what libpq would be given, and messages name: never a wrong host or port
        parts = urlsplit(value)
        # libpq's several hosts (`h1:5432,h2:5432/db`, for failover) are its to read.
        port = parts.port if "," not in authority else None
    except ValueError:
        raise ValueError("its host part cannot be read: an IPv6 address goes in brackets "
                         "([::1]), and a port is a number from 1 to 65535") from None
    if port == 0:
        raise ValueError("its port must be a number from 1 to 65535")


@functools.cache
def _libpq_keywords() -> frozenset[str] | None:
    """The connection options libpq knows (`sslmode`, `user`, ...); None where the
    PostgreSQL driver is not installed (its own error comes later)."""
    try:
        from psycopg import pq
    except ImportError:
        return None
    # (`ssl=true` is libpq's JDBC spelling of sslmode=require, read in URIs.)
    return frozenset({d.keyword.decode() for d in pq.Conninfo.get_defaults()} | {"ssl"})


def _check(name: str, value: Any) -> None:
    """Raise ValueError (what is expected) for a value that cannot be right."""
    if name == "port" and not 0 <= value <= MAX_PORT:
        raise ValueError(f"expected a whole number from 0 to {MAX_PORT}, got {value}")
    if name in ("workers", "max_queued") and value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    if name == "http_workers" and not 1 <= value <= MAX_HTTP_WORKERS:
        raise ValueError(f"must be 1 to {MAX_HTTP_WORKERS}, got {value}")
    if name == "log_cap" and not 1 <= value <= MAX_LOG_CAP:
        raise ValueError(f"must be 1 byte to {MAX_LOG_CAP // 1024 // 1024}MiB (a run's record "
                         f"keeps its log as one database value), got {value}")
    if name == "default_timeout" and value <= 0:
        raise ValueError("must be longer than zero")
    if name == "lease" and value < MIN_LEASE:
        # Renewed every third of it: a lease of 1ms kept an idle server busy at a full core.
        raise ValueError(f"must be at least {MIN_LEASE:g}s, got {value:g}s")
    if name == "host" and value.startswith("[") and value.endswith("]"):
        # (brackets are a URL's, around an IPv6 address and its port: the resolver refused it)
        raise ValueError(f"write an IPv6 address without brackets: --host {value[1:-1]}")
    if name == "log_format" and value not in ("text", "json"):
        raise ValueError("expected text or json")
    if name == "node" and not value.strip():
        raise ValueError("must not be empty")
    if name == "node" and len(value) > MAX_NODE:  # it names files: started-<node>.marks
        raise ValueError(f"at most {MAX_NODE} characters, got {len(value)}")
    if name == "db" and not value.startswith(POSTGRES_SCHEMES):
        # Never echo the value: a URL may hold a password.
        raise ValueError("expected a postgresql://... (or postgres://...) URL; the embedded "
                         "SQLite store is chosen with --data DIR")
    if name == "db":
        _check_db_url(value)
    if name == "admin_token" and (bad := _unsendable(value)):
        raise ValueError(f"{bad}: an Authorization header cannot carry it as a bearer token; "
                         "use printable characters without spaces (openssl rand -base64 24)")
    if name == "pass_env":
        for item in value:
            if not ENV_NAME.fullmatch(item):
                raise ValueError(f"{item!r} is not an environment variable name")
    if name == "trusted_proxy":
        for cidr in value:
            try:
                network = ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not an address or network "
                                 "(e.g. 10.0.0.0/8 or 192.0.2.1)") from None
            if bits_past_prefix(cidr):
                # `10.0.1.11/8`, meant as one load balancer, trusted every host of 10.0.0.0/8
                # to say who the client is (allow_ips, rate limits). allow_ips warns of it;
                # whom to believe is not to be widened by a slip.
                raise ValueError(f"{cidr!r} has bits set past its prefix: it would trust all "
                                 f"of {network}; write {cidr.split('/')[0]} for that one "
                                 f"address, or {network} for the network")


def _unsendable(token: str) -> str | None:
    """What in an admin token no client can send (a control character, which HTTP refuses in
    a header, or whitespace other than a space inside it, which clients and proxies split or
    trim at), never quoting the token; None where it can be sent. Accepted, such a token
    locked every client out with a 400. (A space goes through: `Bearer a b` is compared
    whole, as a token set so before this check was.)"""
    for i, c in enumerate(token, 1):
        if unicodedata.category(c) == "Cc":
            return f"character {i} is a control character (U+{ord(c):04X})"
        if c.isspace() and c != " ":
            return f"character {i} is whitespace (U+{ord(c):04X})"
    return None


def load_settings(flags: Mapping[str, Any], environ: Mapping[str, str],
                  names: Collection[str] | None = None) -> Settings:
    """Flags given (not None, not empty lists) win over `HOOKRUNNER_<FLAG>`, which wins over
    defaults. Only the settings in `names` (default: all) are read: a command never fails
    on a variable meant for another. Raises ValueError naming the flag or the variable
    that holds a bad value."""
    values: dict[str, Any] = {}
    source: dict[str, str] = {}
    for name in names if names is not None else setting_names():
        flag = flags.get(name)
        env_value = environ.get(env_name(name))
        raw: Any = None
        if isinstance(flag, str) and not flag.strip():
            # `--host "$BIND"` with BIND unset: an empty host would listen on every interface,
            # an empty --rules or --data mean the working directory. Never what was meant;
            # nor is `--data " "` (a directory named by a space).
            raise ValueError(f"{flag_name(name)}: empty; leave the flag out for the default")
        if isinstance(flag, str):  # as a variable's: the same value, the same setting
            flag = flag.strip()
        if name in _LISTS and isinstance(flag, list | tuple) and any(
                not _list_items(item) for item in flag):
            # `--trusted-proxy "$LB_NET"` with LB_NET unset: trusted no proxy, and hid
            # HOOKRUNNER_TRUSTED_PROXY too.
            raise ValueError(f"{flag_name(name)}: empty; leave the flag out for the default")
        if flag is not None and flag != [] and flag != ():
            raw, source[name] = flag, flag_name(name)
        elif env_value is not None and env_value.strip():
            # A variable's surrounding spaces are a quoting slip (`HOST="127.0.0.1 "`).
            raw, source[name] = env_value.strip(), env_name(name)
        if raw is None:
            continue
        try:
            values[name] = _coerce(name, raw)
            _check(name, values[name])
        except ValueError as exc:
            raise ValueError(f"{source[name]}: {exc}") from exc
    settings = replace(Settings(), **values, environ=dict(environ), sources=source)
    if bool(settings.ssl_certfile) != bool(settings.ssl_keyfile):
        raise ValueError("--ssl-certfile and --ssl-keyfile (HOOKRUNNER_SSL_CERTFILE, "
                         "HOOKRUNNER_SSL_KEYFILE) go together: give both or neither")
    return settings

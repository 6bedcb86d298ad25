"""One frozen `Settings`, from flags > `HOOKRUNNER_*` environment > defaults.

Nothing else in hookrunner reads `os.environ` for configuration: the CLI passes the
environment in once, here.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from hookrunner.units import parse_duration

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

    def __post_init__(self) -> None:
        # Absolute from the start: actions run in other directories (ansible-playbook in its
        # private data dir), so a relative work dir such as the default `./.hookrunner/work`
        # would name a different place in each (the example playbook failed under `make run`).
        object.__setattr__(self, "data", Path(self.data).absolute())

    @property
    def store_url(self) -> str:
        return self.db or str(self.data / "hookrunner.db")

    @property
    def logs_dir(self) -> Path:
        return self.data / "logs"

    def log_path(self, run_id: str, attempt: int) -> Path:
        """Where an attempt's output is kept (attempts count from 1)."""
        return self.logs_dir / run_id / f"{max(attempt, 1)}.log"

    @property
    def work_dir(self) -> Path:
        return self.data / "work"


_LISTS = {"pass_env", "trusted_proxy"}
_DURATIONS = {"lease", "keep", "default_timeout", "grace"}
_INTS = {"port", "workers", "http_workers", "max_queued", "log_cap"}
_PATHS = {"rules", "root", "data"}


def _coerce(name: str, value: Any) -> Any:
    if name in _LISTS:
        if isinstance(value, str):
            return tuple(v for v in value.replace(",", " ").split() if v)
        return tuple(value)
    if name in _DURATIONS:
        return parse_duration(value)
    if name in _INTS:
        return int(value)
    if name in _PATHS:
        return Path(value)
    return value


def load_settings(flags: Mapping[str, Any], environ: Mapping[str, str]) -> Settings:
    """Flags given (not None, not empty lists) win over `HOOKRUNNER_<FLAG>`, which wins over
    defaults. Raises ValueError naming the flag on a bad value."""
    values: dict[str, Any] = {}
    for f in fields(Settings):
        if f.name == "environ":
            continue
        flag = flags.get(f.name)
        env_value = environ.get(ENV_PREFIX + f.name.upper())
        raw: Any = None
        if flag is not None and flag != [] and flag != ():
            raw = flag
        elif env_value not in (None, ""):
            raw = env_value
        if raw is None:
            continue
        try:
            values[f.name] = _coerce(f.name, raw)
        except ValueError as exc:
            raise ValueError(f"--{f.name.replace('_', '-')}: {exc}") from exc
    settings = replace(Settings(), **values, environ=dict(environ))
    if settings.log_format not in ("text", "json"):
        raise ValueError("--log-format: expected text or json")
    if settings.workers < 1:
        raise ValueError("--workers: must be at least 1")
    if not 1 <= settings.http_workers <= MAX_HTTP_WORKERS:
        raise ValueError(f"--http-workers: must be 1 to {MAX_HTTP_WORKERS}")
    if settings.lease <= 0:
        raise ValueError("--lease: must be longer than zero")
    if settings.max_queued < 1:
        raise ValueError("--max-queued: must be at least 1")
    return settings

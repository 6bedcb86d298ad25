"""The loaded rules: frozen, fully validated, every template compiled once.

Built by `rules.load`; read by ingest (hooks, matching, rendering) and the console.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from hookrunner.templating import reads_secret
from hookrunner.verify.base import Verifier

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_MAX_BODY = 1024 * 1024  # 1 MiB, per the contract


# The names every `when` and template of a rule sees (rules.match.build_scope makes them).
SCOPE_NAMES = ("payload", "headers", "query", "event", "hook", "delivery_id", "received_at",
               "client_ip")


@dataclass(frozen=True)
class Source:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


class Compiled(Protocol):
    """A compiled template or expression (see `hookrunner.templating`)."""

    source: str

    def render(self, scope: Mapping[str, Any]) -> Any: ...


# A spec tree: the normalized `run.<kind>` mapping with every string leaf compiled.
SpecTree = Any


@dataclass(frozen=True)
class RateLimit:
    rate: float  # requests per second, refilled continuously
    burst: int
    per_client: bool = True


@dataclass(frozen=True)
class Hook:
    id: str
    verify_kind: str
    verifier: Verifier
    source: Source
    allow_ips: tuple[IPNetwork, ...] = ()
    max_body: int = DEFAULT_MAX_BODY
    dedup: Compiled | None = None
    rate_limit: RateLimit | None = None
    secret_headers: tuple[str, ...] = ()  # headers to redact when storing (signatures, tokens)
    secret_query: tuple[str, ...] = ()  # query parameters likewise (a `token` read from the URL)
    # `file:line: message`: its secret could not be read when the rules loaded, so it refuses
    # every delivery with 503 (load.load_rules `defer_secrets`); None: it verifies.
    unavailable: str | None = None
    description: str = ""  # free text, shown on the console's Rules page

    @functools.cached_property
    def dedup_reads_secret(self) -> bool:
        """Whether `dedup` may render a secret header or query value (then it is stored as a
        digest); judged once per hook, not per delivery."""
        return self.dedup is not None and reads_secret(
            getattr(self.dedup, "keys", None), self.secret_header_names)

    @functools.cached_property
    def secret_header_names(self) -> frozenset[str]:
        """`secret_headers` and `secret_query`, lower-cased (as templating.request_keys gives
        header and query names); computed once per hook, not per delivery."""
        return frozenset(h.lower() for h in (*self.secret_headers, *self.secret_query))


@dataclass(frozen=True)
class When:
    """A condition tree: an expression leaf, or all/any/not over children."""

    kind: Literal["expr", "all", "any", "not"]
    source: Source
    expr: Compiled | None = None
    children: tuple[When, ...] = ()


@dataclass(frozen=True)
class Retry:
    attempts: int = 1  # total attempts, 1 = no retry
    backoff: float = 10.0
    max_backoff: float = 600.0
    on: tuple[str, ...] = ("failed", "timed_out")


@dataclass(frozen=True)
class Concurrency:
    key: Compiled | None  # None: not given (the rule's name)
    policy: Literal["queue", "skip", "replace", "coalesce"] = "queue"


Path = tuple[str | int, ...]  # where a value sits in a rendered action: keys and indexes


@dataclass(frozen=True)
class RequestRead:
    """A template of a rule's action (or its concurrency key: `path` None) that reads header
    or query values: `keys` lower-cased, None where it may read any (templating.request_keys)."""

    path: Path | None
    source: str
    keys: frozenset[str] | None


@dataclass(frozen=True)
class Rule:
    name: str
    hooks: tuple[str, ...]
    action_kind: str
    action: SpecTree
    source: Source
    when: When | None = None
    timeout: float | None = None
    retry: Retry = field(default_factory=Retry)
    concurrency: Concurrency | None = None
    description: str = ""

    @functools.cached_property
    def request_reads(self) -> tuple[RequestRead, ...]:
        """Its templates that read request values, found once per rule (not per run)."""
        found: list[RequestRead] = []
        todo: list[tuple[Path, Any]] = [((), self.action)]
        while todo:
            path, node = todo.pop()
            if isinstance(node, Mapping):
                todo.extend(((*path, str(k)), v) for k, v in node.items())
            elif isinstance(node, list | tuple):
                todo.extend(((*path, i), v) for i, v in enumerate(node))
            elif hasattr(node, "source"):
                keys = getattr(node, "keys", None)
                if keys is None or keys:
                    found.append(RequestRead(path, node.source, keys))
        if self.concurrency is not None and self.concurrency.key is not None:
            keys = getattr(self.concurrency.key, "keys", None)
            if keys is None or keys:
                found.append(RequestRead(None, self.concurrency.key.source, keys))
        return tuple(found)


@dataclass(frozen=True)
class Ruleset:
    hooks: Mapping[str, Hook]
    rules: tuple[Rule, ...]
    files: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()  # `file:line: message`, e.g. a literal secret
    # The files that hold nothing (empty, or comments only). All of them so, a reload takes
    # it for a deploy caught truncating them (reload.LiveRules).
    empty: tuple[str, ...] = ()
    # The rules files' text, as paths under --rules and contents: nodes that must serve the
    # same rules show the same digest (/readyz, the `rules.loaded` line).
    digest: str = ""
    # The files' (name, text) as loaded: loaded again with the secret files read anew when a
    # secret is rotated while the files themselves do not load (load.reread_secrets).
    sources: tuple[tuple[str, str], ...] = field(default=(), repr=False, compare=False)

    @functools.cached_property
    def unavailable(self) -> dict[str, str]:
        """The hooks left unavailable by a secret that could not be read, and why."""
        return {i: h.unavailable for i, h in self.hooks.items() if h.unavailable is not None}

    @functools.cached_property
    def rule_sources(self) -> dict[str, Source]:
        """Where each rule is written, by name (a log line names it)."""
        return {r.name: r.source for r in self.rules}

    def rules_for(self, hook_id: str) -> list[Rule]:
        return [r for r in self.rules if hook_id in r.hooks]

"""The running gateway's shared state, handed to the HTTP handlers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hookrunner.metrics import Metrics
from hookrunner.ratelimit import RateLimiter
from hookrunner.reload import LiveRules
from hookrunner.rules.model import IPNetwork
from hookrunner.settings import Settings
from hookrunner.store.base import Store

if TYPE_CHECKING:
    from hookrunner.dispatch import Dispatcher


@dataclass
class Gateway:
    settings: Settings
    store: Store
    rules: LiveRules
    metrics: Metrics
    trusted: tuple[IPNetwork, ...] = ()
    limiter: RateLimiter = field(default_factory=RateLimiter)
    dispatcher: Dispatcher | None = None

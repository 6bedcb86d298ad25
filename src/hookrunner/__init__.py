"""hookrunner: signed webhooks -> YAML rules -> durable queue -> actions."""

from __future__ import annotations

__version__ = "0.1.0"

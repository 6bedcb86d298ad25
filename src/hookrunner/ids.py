"""Ids that sort by creation time, so listings and logs read in order."""

from __future__ import annotations

import os
import time


def new_id(prefix: str) -> str:
    """`<prefix>_<ms since epoch, hex>_<random>`: unique across nodes, sortable by time."""
    return f"{prefix}_{int(time.time() * 1000):011x}{os.urandom(5).hex()}"

"""Ids that sort by creation time, so listings and logs read in order."""

from __future__ import annotations

import os
import random
import time

# The random part needs to be unique, not secret (every id is shown to whoever may read its
# delivery): a generator of our own (no library's `random.seed` reaches it), seeded from the
# OS, and again in every forked child (--http-workers). It spares a getrandom() system call
# per id, on every accepted delivery.
_RANDOM = random.Random()
os.register_at_fork(after_in_child=_RANDOM.seed)


def new_id(prefix: str) -> str:
    """`<prefix>_<ms since epoch, hex>_<random>`: unique across nodes, sortable by time."""
    return f"{prefix}_{int(time.time() * 1000):011x}{_RANDOM.getrandbits(40):010x}"

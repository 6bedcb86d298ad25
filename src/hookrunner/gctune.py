"""The cyclic garbage collector's pace, set for a server.

Python starts a young collection every 700 net allocations of container objects. A server
with deliveries in flight crosses that line over and over (each delivery holds a few
hundred such objects until its answer), so the collector ran ~450 young, ~40 middle and a
few full collections per 14,400 deliveries: 19-33 µs per delivery, 4-5 % of the accept
path, in an in-process drive of the real protocol, app and SQLite store. At 10,000 it ran
once at most in the same drive. A delivery's objects are freed by their reference counts as
before; only cycles wait longer, and a few thousand objects more is all they can hold.
"""

from __future__ import annotations

import gc

YOUNG = 10_000  # net allocations between young collections (Python's default: 700)


def for_serving() -> None:
    """The server's pace; the older generations keep Python's own ratios."""
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(YOUNG, young), middle, old)  # (never lower than one set already)

"""The SQL of each backend: numbered migrations and named queries, kept in `.sql` files.

`queries.sql` holds blocks that start with `-- name: <query name>` (procrastinate's layout).
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_MIGRATION = re.compile(r"^(\d{4})_[\w-]+\.sql$")
_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def migrations(backend: str) -> list[tuple[int, str, str]]:
    """(version, file name, SQL) of every migration of `backend`, in order."""
    found = []
    for entry in resources.files(__package__).joinpath(backend).iterdir():
        m = _MIGRATION.match(entry.name)
        if m:
            found.append((int(m.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


@cache
def queries(backend: str) -> dict[str, str]:
    """The named queries of `backend`."""
    text = resources.files(__package__).joinpath(backend, "queries.sql").read_text("utf-8")
    parts = _NAME.split(text)
    return {name: sql.strip() for name, sql in zip(parts[1::2], parts[2::2], strict=True)}


def statements(script: str) -> list[str]:
    """Split a migration into statements (no triggers or string literals holding `;`)."""
    lines = [ln for ln in script.splitlines() if not ln.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]

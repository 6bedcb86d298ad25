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
    """Split a migration into statements at `;`, except inside a `$$`-quoted function body
    (no string literal may hold a `;`)."""
    lines = [ln for ln in script.splitlines() if not ln.lstrip().startswith("--")]
    pieces = "\n".join(lines).split("$$")
    if len(pieces) % 2 == 0:  # a `$$` left open: its statements cannot be told apart
        raise ValueError("a migration has an odd number of `$$`")
    found, current = [], ""
    # Between the `$$` marks (odd pieces) a `;` is the function's own.
    for i, piece in enumerate(pieces):
        if i % 2:
            current += f"$${piece}$$"
            continue
        first, *rest = piece.split(";")
        current += first
        if rest:
            found.append(current)
            *middle, current = rest
            found.extend(middle)
    found.append(current)
    return [s.strip() for s in found if s.strip()]


def newer_schema(backend: str, applied: set[int]) -> str | None:
    """Why a database whose schema a newer hookrunner migrated cannot be used by this one
    (its queries may miss columns, or write rows the newer one misreads); None if it can."""
    known = max((version for version, _, _ in migrations(backend)), default=0)
    newest = max(applied, default=0)
    if newest <= known:
        return None
    return (f"the database was upgraded by a newer hookrunner (schema version {newest}; this "
            f"version knows up to {known}): run that version, or restore a backup from before "
            "the upgrade")


# Logged before an upgrade's migrations (store.migrating): until they end the port is not
# open, for minutes on a database of millions of rows.
MIGRATING_HINT = "the server listens once they are applied (a large database takes a while)"
OLDER_SCHEMA = ("the database is from an older hookrunner (a schema migration is missing): "
                "start `hookrunner serve` of this version once to upgrade it, then try again")


def schema_problem(backend: str, applied: set[int] | None) -> str | None:
    """Why this version cannot use a database as it is, without migrating it (newer, or a
    migration missing; `applied` None: no schema yet); None when it can."""
    if applied is None:
        return OLDER_SCHEMA
    if (newer := newer_schema(backend, applied)) is not None:
        return newer
    if any(version not in applied for version, _, _ in migrations(backend)):
        return OLDER_SCHEMA
    return None


def pending(backend: str, applied: set[int]) -> list[str]:
    """The file names of the migrations not applied yet, in order."""
    return [name for version, name, _ in migrations(backend) if version not in applied]

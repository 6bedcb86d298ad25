"""Migration scripts split into statements: at `;`, except inside a `$$`-quoted body."""

from __future__ import annotations

import pytest

from hookrunner.store import sql


def test_statements_split_at_semicolons_outside_function_bodies() -> None:
    script = """-- a comment; not a statement
CREATE TABLE t (a INT);
CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    RETURN 1;
END $$;
CREATE INDEX i ON t (a)
"""
    assert sql.statements(script) == [
        "CREATE TABLE t (a INT)",
        "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$\nBEGIN\n    RETURN 1;\nEND $$",
        "CREATE INDEX i ON t (a)",
    ]


def test_every_migration_splits_into_whole_statements() -> None:
    """Each statement of each shipped migration has its `$$` bodies whole."""
    for backend in ("sqlite", "postgres"):
        for _, name, script in sql.migrations(backend):
            for statement in sql.statements(script):
                assert statement.count("$$") % 2 == 0, (name, statement)


def test_a_dollar_quote_left_open_is_an_error_not_a_guess() -> None:
    with pytest.raises(ValueError, match="odd number"):
        sql.statements("SELECT '$$'; SELECT 1;")

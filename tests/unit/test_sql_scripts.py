"""Migration scripts split into statements: at `;`, except inside a `$$`-quoted body."""

from __future__ import annotations

import hashlib

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


# Each migration as it shipped. A database records a migration's version once it ran, and
# never runs it again: an edit reaches no database that ran the earlier text (0008 and 0009
# were edited so, and databases migrated in between failed every run's end or every
# delivery until 0011 repaired them). Add a migration instead; pin a new one here.
SHIPPED = {
    ("postgres", "0001_init.sql"): "2a012f8c24f44c19",
    ("postgres", "0002_claim_indexes.sql"): "f3906be96cb8f037",
    ("postgres", "0003_delivery_query.sql"): "7d193da8a70a749f",
    ("postgres", "0004_deliveries_hook.sql"): "33f380665a11ea5a",
    ("postgres", "0005_runs_listing.sql"): "dfa658534d5870e7",
    ("postgres", "0006_ended_runs.sql"): "9a15ef86536fcbe8",
    ("postgres", "0007_superseded_index.sql"): "cc5b2ee33b543e38",
    ("postgres", "0008_spec_as_written.sql"): "8c7828be40a2267a",
    ("postgres", "0009_delivery_verifier.sql"): "bc9f48a851233ecb",
    ("postgres", "0010_queued_keyed_at.sql"): "11d1930cd6fff0a2",
    ("postgres", "0011_repair_edited_migrations.sql"): "594e8548727199f6",
    ("postgres", "0012_queued_skip.sql"): "76a2c0e6ff6406dd",
    ("sqlite", "0001_init.sql"): "09ecb4a51a6a6641",
    ("sqlite", "0002_claim_indexes.sql"): "f3906be96cb8f037",
    ("sqlite", "0003_delivery_query.sql"): "74c3f8cdda3d8d2b",
    ("sqlite", "0004_deliveries_hook.sql"): "33f380665a11ea5a",
    ("sqlite", "0005_runs_listing.sql"): "dfa658534d5870e7",
    ("sqlite", "0006_ended_runs.sql"): "64cb65cf5ea75ea6",
    ("sqlite", "0007_superseded_index.sql"): "cc5b2ee33b543e38",
    ("sqlite", "0008_delivery_verifier.sql"): "f7e40c6a048a3241",
    ("sqlite", "0009_queued_keyed_at.sql"): "11d1930cd6fff0a2",
    ("sqlite", "0010_queued_skip.sql"): "76a2c0e6ff6406dd",
}


def test_no_shipped_migration_is_edited() -> None:
    for backend in ("sqlite", "postgres"):
        for _, name, script in sql.migrations(backend):
            digest = hashlib.sha256(script.encode()).hexdigest()[:16]
            pinned = SHIPPED.get((backend, name))
            assert pinned is not None, f"{backend}/{name}: a new migration: pin it in SHIPPED"
            assert digest == pinned, (
                f"{backend}/{name} was edited after it shipped: a database that ran it "
                "never runs it again. Put the change in a new migration")


def test_the_version_names_each_stores_newest_migration(capsys: pytest.CaptureFixture[str]) -> None:
    """What the README's Upgrades section refers to: every development version says 0.1.0."""
    from hookrunner import __version__, cli

    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    newest = {b: max(v for v, _, _ in sql.migrations(b)) for b in ("sqlite", "postgres")}
    assert capsys.readouterr().out == (
        f"hookrunner {__version__} (schema: sqlite {newest['sqlite']}, "
        f"postgres {newest['postgres']})\n")

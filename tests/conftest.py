"""Session-wide fixtures: the throwaway PostgreSQL cluster and a fresh database per test."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Helpers are imported as `tests.<module>` however pytest was started (tests/ has no
# __init__.py, so pytest itself only puts tests/ on the path).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import pgcluster


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server: $HOOKRUNNER_TEST_PG, else a cluster started for this session."""
    given = os.environ.get("HOOKRUNNER_TEST_PG")
    if given:
        yield given
        return
    try:
        cluster = pgcluster.start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)  # missing binaries fail loudly, never skip
    try:
        yield cluster.url
    finally:
        cluster.stop()
        shutil.rmtree(cluster.dir, ignore_errors=True)


@pytest.fixture
def postgres_db(postgres_url: str) -> Iterator[str]:
    """The URL of a database created for this test alone."""
    url = pgcluster.create_database(postgres_url)
    try:
        yield url
    finally:
        pgcluster.drop_database(url)

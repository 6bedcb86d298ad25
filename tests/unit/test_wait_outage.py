"""A `?wait` whose store goes away after the delivery was journaled still answers 202."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from hookrunner.app import create_app
from hookrunner.errors import StoreUnavailable
from hookrunner.settings import Settings
from hookrunner.store import MEMORY_URL

RULES = """
hooks: {open: {verify: none}}
rules:
  - {name: slow, hook: open, run: {shell: {argv: [sleep, "2"]}}}
"""


def test_a_wait_that_loses_the_store_answers_202_not_500(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL down for longer than its pool waits (5 s): the wait's status reads fail.
    The delivery is durable, so its sender hears 202 (a 500 made it send it again)."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(RULES)
    settings = Settings(rules=tmp_path / "rules", root=tmp_path, data=tmp_path / "data",
                        db=MEMORY_URL, workers=1, admin_token="t",
                        environ={"PATH": "/usr/bin:/bin"})
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=True) as client:
        store = app.state.gateway.store

        async def unreachable(run_id: str) -> Any:
            raise StoreUnavailable("PostgreSQL unavailable: couldn't get a connection")

        monkeypatch.setattr(store, "get_run", unreachable)
        r = client.post("/hooks/open?wait=5s", json={})
        assert r.status_code == 202, r.text
        assert len(r.json()["runs"]) == 1

"""Routing errors answer JSON like every other error of the gateway."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from hookrunner.app import create_app
from hookrunner.settings import load_settings


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/hooks/", 404), ("GET", "/no/such/page", 404), ("GET", "/api/nope", 404),
     ("POST", "/healthz", 405)],
)
def test_unknown_paths_and_methods_answer_json(tmp_path: Path, method: str, path: str, status: int) -> None:
    (tmp_path / "rules").mkdir()
    settings = load_settings({"rules": str(tmp_path / "rules"), "data": str(tmp_path / "data")},
                             {"HOOKRUNNER_ADMIN_TOKEN": "t"})
    with TestClient(create_app(settings)) as client:
        r = client.request(method, path, headers={"Authorization": "Bearer t"})
    assert r.status_code == status
    assert set(r.json()) == {"error"}

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


def _app(tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / "rules").mkdir(exist_ok=True)
    settings = load_settings({"rules": str(tmp_path / "rules"), "data": str(tmp_path / "data")},
                             {"HOOKRUNNER_ADMIN_TOKEN": "t"})
    return create_app(settings)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_an_internal_error_answers_json_without_details(tmp_path: Path) -> None:
    app = _app(tmp_path)

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret detail")

    with TestClient(app, raise_server_exceptions=False) as client:
        app.state.gateway.store.list_runs = broken
        r = client.get("/api/runs", headers={"Authorization": "Bearer t"})
    assert r.status_code == 500 and r.json() == {"error": "internal error"}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("asked", ["x", "-1", "1.0", " 1", "", "1" * 10, "\u0663"])
def test_a_bad_attempt_number_is_a_400(tmp_path: Path, asked: str) -> None:
    """`-1` was told "must be a number": it is one, just not an attempt's."""
    with TestClient(_app(tmp_path)) as client:
        r = client.get("/api/runs/nope/log", params={"attempt": asked},
                       headers={"Authorization": "Bearer t"})
    assert r.status_code == 400 and r.json() == {
        "error": f"attempt must be a whole number (attempts count from 1), got {asked[:20]!r}"}


def test_readyz_says_where_a_reload_failed_without_quoting_the_message() -> None:
    from pathlib import Path

    from hookrunner.app import _where

    rules = Path("/srv/rules")
    assert _where("/srv/rules/a.yaml:12: rule 'x': unknown name 's3cr3t'", rules) == \
        "/srv/rules/a.yaml:12"
    assert _where("/srv/rules: no *.yaml or *.yml rules files now; ...", rules) == \
        "/srv/rules (see the log)"
    assert _where("cannot list the rules directory /srv/rules/team: Permission denied", rules) \
        == "/srv/rules (see the log)"
    assert _where("--root /nope is not a directory: relative paths ...", rules) == \
        "--root (see the log)"
    assert _where("/srv/rules: cannot load the rules: KeyError: 'x'", rules) == \
        "/srv/rules (see the log)"
    assert _where("something else", rules) == "(see the log)"

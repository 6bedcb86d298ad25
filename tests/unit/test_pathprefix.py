"""`--path-prefix`: how a prefix is read, refused and taken off a path (pure logic; the real
thing behind nginx is tests/integration/test_path_prefix.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.routing import Route

from hookrunner import pathprefix
from hookrunner.app import create_app
from hookrunner.console.forms import safe_next
from hookrunner.settings import load_settings


@pytest.mark.parametrize(("given", "prefix"), [
    ("/hookrunner", "/hookrunner"), ("/hookrunner/", "/hookrunner"), ("/", ""),
    ("/ops/hooks-gw", "/ops/hooks-gw"), ("/a.b_c~d/", "/a.b_c~d"), ("/api-gw", "/api-gw"),
])
def test_a_prefix_is_written_without_its_trailing_slash(given: str, prefix: str) -> None:
    assert pathprefix.parse(given) == prefix


@pytest.mark.parametrize(("given", "says"), [
    ("hookrunner", "starting with '/'"), ("", "starting with '/'"),
    ("/a//b", "no '//'"), ("/a/../b", "no '.' or '..' part"), ("/.", "no '.' or '..' part"),
    ("/hook runner", "letters, digits"), ('/x"onclick', "letters, digits"), ("/x?y", "letters"),
    ("/caf%C3%A9", "letters"), ("/api", "one of hookrunner's own paths"),
    ("/hooks/x", "starts with /hooks"), ("/runs", "own paths"), ("/static/", "own paths"),
])
def test_a_prefix_that_could_not_be_written_into_pages_or_told_apart_is_refused(
        given: str, says: str) -> None:
    with pytest.raises(ValueError) as refused:
        pathprefix.parse(given)
    assert says in str(refused.value)


@pytest.mark.parametrize(("path", "routed"), [
    ("/hookrunner/api/runs", "/api/runs"), ("/hookrunner", "/"), ("/hookrunner/", "/"),
    ("/api/runs", "/api/runs"), ("/hookrunnerx/healthz", "/hookrunnerx/healthz"),
    ("/x/hookrunner/healthz", "/x/hookrunner/healthz"),
])
def test_only_a_whole_leading_prefix_is_taken_off(path: str, routed: str) -> None:
    assert pathprefix.strip(path, "/hookrunner") == routed
    assert pathprefix.strip(path, "") == path


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_every_first_segment_of_the_apps_own_paths_is_one_a_prefix_may_not_start_with(
        tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    settings = load_settings({"rules": str(tmp_path / "rules"), "data": str(tmp_path / "data")},
                             {"HOOKRUNNER_ADMIN_TOKEN": "t"})
    app = create_app(settings)
    firsts = {r.path.split("/")[1] for r in app.routes if isinstance(r, Route)} - {""}
    assert firsts <= pathprefix.OWN, firsts - pathprefix.OWN


def test_the_setting_reads_the_flag_or_its_variable_and_names_it_when_wrong() -> None:
    assert load_settings({"path_prefix": "/hr/"}, {}).path_prefix == "/hr"
    assert load_settings({}, {"HOOKRUNNER_PATH_PREFIX": "/hr"}).path_prefix == "/hr"
    assert load_settings({}, {}).path_prefix == ""
    with pytest.raises(ValueError, match=r"^--path-prefix: '/login' starts with /login"):
        load_settings({"path_prefix": "/login"}, {})


@pytest.mark.parametrize(("target", "under_prefix", "at_root"), [
    ("/hookrunner/runs/x?attempt=2", "/hookrunner/runs/x?attempt=2", "/hookrunner/runs/x?attempt=2"),
    ("/hookrunner", "/hookrunner", "/hookrunner"),
    ("/other-app/admin", "/hookrunner/", "/other-app/admin"),
    ("/hookrunner/../other", "/hookrunner/", "/hookrunner/../other"),
    ("/hookrunner/%2e%2e/other", "/hookrunner/", "/hookrunner/%2e%2e/other"),
    ("/hookrunner/..\\other", "/hookrunner/", "/hookrunner/..\\other"),
    ("/hookrunnerx/y", "/hookrunner/", "/hookrunnerx/y"),
    ("//evil.example/", "/hookrunner/", "/"), ("https://evil.example/", "/hookrunner/", "/"),
    ("/\\evil.example", "/hookrunner/", "/"), ("", "/hookrunner/", "/"), (None, "/hookrunner/", "/"),
])
def test_after_a_login_the_console_goes_back_only_to_its_own_pages(
        target: str | None, under_prefix: str, at_root: str) -> None:
    assert safe_next(target, "/hookrunner") == under_prefix
    assert safe_next(target, "") == at_root

"""The HTTP surface against a real server: auth challenges, routing, what a stored delivery
keeps (query, redacted headers) and shows, and the modes of what it writes to disk."""

from __future__ import annotations

import base64
from collections.abc import Callable

import httpx

from tests.serverproc import ADMIN_TOKEN, Server

RULES = """
hooks:
  open: {verify: {none: {}}}
  basic: {verify: {basic: {username: ops, password: {env: BASIC_PW}}}}
  tok: {verify: {token: {secret: {env: TOK}}}}
rules:
  - {name: any, hook: open, run: {shell: {argv: ["true"]}}}
"""
ENV = {"BASIC_PW": "pw-1", "TOK": "tok-1"}


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_a_refused_basic_or_bearer_hook_names_its_scheme(make_server: Callable[..., Server]) -> None:
    server = make_server(RULES, env=ENV)
    for headers in ({}, {"Authorization": _basic("ops", "wrong")}):
        r = httpx.post(f"{server.url}/hooks/basic", json={}, headers=headers)
        assert r.status_code == 401 and r.json() == {"error": "verification failed"}
        assert r.headers["www-authenticate"] == 'Basic realm="hookrunner"'
    good = httpx.post(f"{server.url}/hooks/basic", json={},
                      headers={"Authorization": _basic("ops", "pw-1")})
    assert good.status_code == 202 and "www-authenticate" not in good.headers
    r = httpx.post(f"{server.url}/hooks/tok", json={}, headers={"Authorization": "Bearer no"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == 'Bearer realm="hookrunner"'


def test_the_admin_api_takes_the_bearer_scheme_in_any_case(make_server: Callable[..., Server]) -> None:
    server = make_server(RULES, env=ENV)
    for scheme in ("Bearer", "bearer", "BEARER"):
        r = httpx.get(f"{server.url}/api/runs", headers={"Authorization": f"{scheme} {ADMIN_TOKEN}"})
        assert r.status_code == 200, scheme
    refused = httpx.get(f"{server.url}/api/runs", headers={"Authorization": "bearer nope"})
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"


def test_a_trailing_slash_is_a_404_never_a_redirect(make_server: Callable[..., Server]) -> None:
    server = make_server(RULES, env=ENV)
    forged = {"Host": "evil.example"}
    for method, path in (("POST", "/hooks/open/"), ("GET", "/api/runs/"), ("GET", "/rules/")):
        r = httpx.request(method, server.url + path, headers={
            **forged, "Authorization": f"Bearer {ADMIN_TOKEN}"}, json={} if method == "POST" else None)
        assert r.status_code == 404, (path, r.status_code)
        assert "location" not in r.headers and r.json() == {"error": "Not Found"}

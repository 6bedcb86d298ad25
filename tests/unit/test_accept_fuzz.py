"""The whole accept path in-process (Starlette TestClient, memory store), fed random requests:
every answer is a clear 2xx or 4xx with a JSON body, never a 500 or an exception."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from hookrunner.app import create_app
from hookrunner.settings import Settings
from hookrunner.store import MEMORY_URL

RULES = """
hooks:
  open:
    verify: {none: {}}
    dedup: "{{ payload.id }}"
  small:
    verify: {none: {}}
    max_body: 64
  gh:
    verify: {github: {secret: fuzz-secret}}
  stripe:
    verify: {stripe: {secret: whsec_fuzz}}
  slack:
    verify: {slack: {secret: fuzz-secret}}
  tok:
    verify: {token: {secret: fuzz-token}}
  limited:
    verify: {none: {}}
    rate_limit: {rate: 1/h, burst: 5}
rules:
  - name: render
    hook: [open, small, limited]
    when: payload.render is defined
    run:
      shell:
        argv: ["true", "{{ payload.render }}", "{{ payload.render.x | default(1) }}"]
        env: {V: "{{ payload.render | tojson }}"}
    concurrency: {key: "k-{{ payload.render }}", policy: coalesce}
  - name: compare
    hook: [open, gh, stripe, slack, tok]
    when:
      any:
        - payload.n > 3 and payload.s is match("^a")
        - headers["x-kind"] == "x" or event == "push"
        - payload.ip is in_cidr("10.0.0.0/8")
    run: {shell: {argv: ["true"]}}
"""

ANSWERS = {200, 202, 400, 401, 403, 404, 405, 413, 415, 429}
HOOKS = ["open", "small", "gh", "stripe", "slack", "tok", "limited", "nope"]
HEADER_NAMES = ["Content-Type", "X-Hub-Signature-256", "X-GitHub-Event", "X-GitHub-Delivery",
                "Stripe-Signature", "X-Slack-Signature", "X-Slack-Request-Timestamp",
                "Authorization", "X-Forwarded-For", "X-Kind", "Content-Encoding"]
CONTENT_TYPES = ["application/json", "application/x-www-form-urlencoded", "text/plain",
                 "application/xml", "multipart/form-data", "application/json; charset=latin-1"]

# What httpx will put on the wire: printable latin-1, no CR/LF.
header_value = st.one_of(
    st.sampled_from([*CONTENT_TYPES, "sha256=00", "t=1,v1=00", "v0=00", "Bearer fuzz-token",
                     "push", "10.1.2.3", "x", "1700000000"]),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
            max_size=60),
)
json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
              st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=12,
)
json_doc = st.fixed_dictionaries(
    {}, optional={"id": json_value, "render": json_value, "n": json_value, "s": json_value,
                  "ip": json_value, "type": json_value, "event_id": json_value},
)
bodies = st.one_of(
    json_doc.map(lambda d: json.dumps(d).encode()),
    json_value.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.integers(min_value=1, max_value=5000).map(lambda n: b"[" * n),
    json_doc.map(lambda d: b"payload=" + quote(json.dumps(d)).encode()),
)
paths = st.one_of(
    st.sampled_from(HOOKS).map(lambda h: f"/hooks/{h}"),
    st.text(max_size=30).map(lambda t: "/hooks/" + quote(t, safe="")),
)
queries = st.one_of(st.just(""), st.sampled_from(
    ["?wait=abc", "?wait=0", "?wait=10ms", "?wait=-1s", "?wait=nan", "?wait=", "?x=1&x=2"]))


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("fuzz")
    (root / "rules").mkdir()
    (root / "rules" / "fuzz.yaml").write_text(RULES)
    settings_ = Settings(rules=root / "rules", root=root, data=root / "data", db=MEMORY_URL,
                         workers=2, admin_token="fuzz-admin", environ={"PATH": "/usr/bin:/bin"})
    with TestClient(create_app(settings_), raise_server_exceptions=True) as c:
        yield c


def test_the_fuzzed_app_has_its_hooks_loaded(client: TestClient) -> None:
    assert client.get("/readyz").status_code == 200
    r = client.post("/hooks/open", content=b'{"render": {"x": 2}}',
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 202 and len(r.json()["runs"]) == 1


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT"]), path=paths, query=queries,
       body=bodies,
       headers=st.lists(st.tuples(st.sampled_from(HEADER_NAMES), header_value), max_size=6))
def test_any_request_gets_a_clear_answer_never_a_500(
    client: TestClient, method: str, path: str, query: str, body: bytes,
    headers: list[tuple[str, str]],
) -> None:
    raw = [(k.encode(), v.encode("latin-1")) for k, v in headers]  # as a sender's bytes
    r = client.request(method, path + query, content=body, headers=raw)
    assert r.status_code in ANSWERS, (r.status_code, r.text)
    routed = path.removeprefix("/hooks/") in HOOKS
    if routed or r.headers.get("content-type") == "application/json":
        doc: Any = r.json()
        if r.status_code >= 400:
            assert set(doc) == {"error"}
    if r.status_code == 429:
        assert int(r.headers["Retry-After"]) >= 1


def test_the_server_is_still_ready_after_the_fuzz(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200

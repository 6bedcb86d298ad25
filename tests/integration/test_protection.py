"""Hook-level protection on a real server: allow_ips, --trusted-proxy, rate limits, max_body.

Two servers on the same rules: one with the default (no trusted proxy: X-Forwarded-For is
never believed) and one that trusts the loopback address as its reverse proxy.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serverproc import Server

RULES = """
hooks:
  internal:
    verify: {none: {}}
    allow_ips: [10.0.0.0/8, "2001:db8::/32"]
  limited:
    verify: {none: {}}
    rate_limit: {rate: 1/m, burst: 2}
  shared-limit:
    verify: {none: {}}
    rate_limit: {rate: 1/m, burst: 1, per_client: false}
  small:
    verify: {none: {}}
    max_body: 1KiB
  per-minute:
    verify: {none: {}}
    rate_limit: 5/m
  guarded:
    verify: {token: {secret: "s3cret-token-1"}}
"""


def _start(root: Path, args: list[str]) -> Server:
    (root / "rules").mkdir()
    (root / "rules" / "hooks.yaml").write_text(RULES)
    return Server(root / "rules", root / "data", root, args=args).start()


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = _start(tmp_path_factory.mktemp("direct"), [])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = _start(tmp_path_factory.mktemp("proxied"), ["--trusted-proxy", "127.0.0.1/32"])
    yield srv
    srv.stop()


def _post(server: Server, hook: str, body: bytes = b"{}", *, client: str | None = None,
          headers: dict[str, str] | None = None) -> httpx.Response:
    h = {"Content-Type": "application/json", **(headers or {})}
    if client is not None:
        h["X-Forwarded-For"] = client
    return httpx.post(f"{server.url}/hooks/{hook}", content=body, headers=h, timeout=30)


def test_an_address_outside_allow_ips_is_refused_with_403(direct: Server) -> None:
    r = _post(direct, "internal")
    assert r.status_code == 403 and r.json() == {"error": "address not allowed"}
    assert 'reason="address not allowed" client=127.0.0.1' in direct.output()


def test_forwarded_for_is_never_believed_by_default(direct: Server) -> None:
    """Without --trusted-proxy anyone could claim to be 10.0.0.1 in a header."""
    assert _post(direct, "internal", client="10.0.0.1").status_code == 403


def test_forwarded_for_from_a_trusted_proxy_names_the_client(proxied: Server) -> None:
    assert _post(proxied, "internal", client="10.1.2.3").status_code == 202
    assert _post(proxied, "internal", client="2001:db8::5").status_code == 202
    assert _post(proxied, "internal", client="203.0.113.7").status_code == 403
    # A client that prepends a spoofed hop only fools itself: the proxy's entry is last.
    assert _post(proxied, "internal", client="10.9.9.9, 203.0.113.7").status_code == 403
    # The proxy itself (no header) is not inside allow_ips either.
    assert _post(proxied, "internal").status_code == 403
    with proxied.admin() as c:
        deliveries = c.get("/api/deliveries", params={"hook": "internal"}).json()["deliveries"]
    assert {d["client_ip"] for d in deliveries} == {"10.1.2.3", "2001:db8::5"}


def test_a_rate_limited_hook_answers_429_with_retry_after(direct: Server) -> None:
    assert [_post(direct, "limited").status_code for _ in range(2)] == [202, 202]
    r = _post(direct, "limited")
    assert r.status_code == 429 and r.json() == {"error": "rate limited"}
    # 1/m: the next token is about a minute away.
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert _post(direct, "limited").status_code == 429
    # Logged as the other refusals, but a flood is not a line per request: the first at once,
    # the next only a second later (two here only if this machine took that long between).
    refused = [line for line in direct.output().splitlines()
               if "delivery.rejected" in line and "rate limited" in line]
    assert 1 <= len(refused) <= 2 and "hook=limited" in refused[0], refused


def test_a_flood_of_forged_or_refused_requests_is_a_line_a_second_not_one_each(
        direct: Server) -> None:
    """Any client can send these as fast as it can: one line each was ~6,000 lines a
    second (journald's default rate limit then drops every line of the server)."""
    time.sleep(1.1)  # what earlier tests on this server had held back is said by now
    before = len(direct.output().splitlines())
    started = time.monotonic()
    with httpx.Client(base_url=direct.url, timeout=30) as c:
        for _ in range(150):
            assert c.post("/hooks/guarded", json={}, headers={
                "Authorization": "Bearer forged"}).status_code == 401
            assert c.post("/hooks/internal", json={}).status_code == 403
        # Another reason is a line of its own at once: a flood of forgeries does not hide
        # a sender's own problem.
        assert c.post("/hooks/guarded", json={}).status_code == 401
    took = time.monotonic() - started
    time.sleep(1.2)  # the held-back count is said once its second is over
    lines = direct.output().splitlines()[before:]  # (only this test's: the server is shared)
    forged = [x for x in lines if "delivery.rejected" in x and "hook=guarded" in x]
    refused = [x for x in lines if "delivery.rejected" in x and "hook=internal" in x
               and "count=" in x]
    assert 1 <= len(forged) <= took + 3, (len(forged), took)
    assert 'reason="token mismatch"' in forged[0] and "client=127.0.0.1" in forged[0]
    mismatches = [x for x in forged if 'reason="token mismatch"' in x]
    assert sum(int(x.split("count=")[1].split()[0]) for x in mismatches) == 150, forged
    assert any('reason="missing header Authorization"' in x for x in forged), forged
    assert refused and len(refused) <= took + 3, (len(refused), took)


def test_rate_limits_are_per_client_unless_the_hook_says_otherwise(proxied: Server) -> None:
    assert [_post(proxied, "limited", client="198.51.100.1").status_code for _ in range(3)] == [
        202, 202, 429]
    assert _post(proxied, "limited", client="198.51.100.2").status_code == 202
    # per_client: false is one bucket for the hook.
    assert _post(proxied, "shared-limit", client="198.51.100.1").status_code == 202
    assert _post(proxied, "shared-limit", client="198.51.100.2").status_code == 429


def test_a_body_over_max_body_is_refused_with_413(direct: Server) -> None:
    assert _post(direct, "small", b'{"a": "' + b"x" * 900 + b'"}').status_code == 202
    r = _post(direct, "small", b'{"a": "' + b"x" * 1100 + b'"}')
    assert r.status_code == 413 and r.json() == {"error": "body larger than 1024 bytes"}

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is counted while reading
        for _ in range(20):
            yield b" " * 100

    r = httpx.post(f"{direct.url}/hooks/small", content=chunks(),
                   headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 413
    assert httpx.get(f"{direct.url}/healthz").status_code == 200


def test_a_rate_per_minute_lets_its_count_through_at_once_then_spaces_them(direct: Server) -> None:
    """`5/m`: five at once (the bucket holds the count as written), then one every 12 s."""
    answers = [_post(direct, "per-minute") for _ in range(6)]
    assert [a.status_code for a in answers] == [202] * 5 + [429]
    assert int(answers[-1].headers["retry-after"]) in range(1, 13)


def _send_whole_then_read(server: Server, hook: str, size: int) -> bytes:
    """As Python's urllib and many SDKs do: `Connection: close`, the whole body written,
    and only then the answer read."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(f"POST /hooks/{hook} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n".encode())
        s.sendall(b"a" * size)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
        return answer


@pytest.mark.parametrize(("hook", "status"), [("small", b"413"), ("internal", b"403")])
def test_an_early_refusal_reaches_a_client_that_sends_its_whole_body_first(
        direct: Server, hook: str, status: bytes) -> None:
    """audit (contract): the answer was given from the head and the socket closed while the
    body still came, so the kernel reset the connection, and urllib got a broken pipe or a
    reset instead of the 413 or 403."""
    for _ in range(3):
        answer = _send_whole_then_read(direct, hook, 8 * 2**20)
        assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
    assert httpx.get(f"{direct.url}/healthz", timeout=10).status_code == 200


def test_a_slow_body_after_an_early_refusal_is_read_while_it_comes(direct: Server) -> None:
    """A body still arriving past the first LINGER (2 s) was reset all the same: the rest
    is now read while it keeps coming, and a client that stops sending is closed after a
    quiet LINGER."""
    size = 64 * 65536
    with socket.create_connection(("127.0.0.1", direct.port), timeout=30) as s:
        s.sendall(f"POST /hooks/small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n".encode())
        for _ in range(64):  # ~6.5 s of body: past uvicorn's 5 s keep-alive timer too
            s.sendall(b"a" * 65536)
            time.sleep(0.1)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    # A client that sends no more is let go once it has been quiet for LINGER.
    with socket.create_connection(("127.0.0.1", direct.port), timeout=30) as s:
        s.sendall(b"POST /hooks/small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  b"Content-Length: 10000000\r\n\r\n" + b"a" * 4096)
        answer = b""
        while chunk := s.recv(65536):  # ends: the server closes (else the 30 s timeout)
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]

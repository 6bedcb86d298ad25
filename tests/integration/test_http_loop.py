"""A rule whose http action posts to a hook that leads back to it: a loop, cut after
hops.MAX_HOPS deliveries instead of making deliveries and runs for ever."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from hookrunner import hops
from tests.serverproc import Server, free_port


def test_a_rule_that_posts_to_its_own_hook_stops_after_the_hop_limit(
        make_server: Callable[..., Server]) -> None:
    port = free_port()
    rules = f"""
hooks:
  loop: {{verify: {{none: {{}}}}}}
rules:
  - name: again
    hook: loop
    retry: {{attempts: 3, backoff: 1s}}
    run:
      http:
        url: "http://127.0.0.1:{port}/hooks/loop"
        json: {{n: "{{{{ (payload.n | default(0) | int) + 1 }}}}"}}
"""
    server = make_server(rules, port=port)
    assert httpx.post(f"{server.url}/hooks/loop", json={}, timeout=10).status_code == 202

    def runs(c: httpx.Client) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = c.get("/api/runs", params={"limit": 100}).json()["runs"]
        return listed

    with server.admin() as c:
        deadline = time.monotonic() + 60
        while len([r for r in runs(c) if r["status"] in ("succeeded", "failed")]) \
                < hops.MAX_HOPS + 1:
            assert time.monotonic() < deadline, runs(c)
            time.sleep(0.2)
        time.sleep(1.5)  # nothing more comes: the last one was refused, and not retried
        listed = runs(c)
    assert len(listed) == hops.MAX_HOPS + 1, [r["status"] for r in listed]
    last = listed[0]  # the newest
    assert last["status"] == "failed" and last["attempt"] == 1, last
    assert "HTTP 508" in last["reason"] and "Loop Detected" in last["reason"], last["reason"]
    assert all(r["status"] == "succeeded" for r in listed[1:]), [r["status"] for r in listed]
    assert "hops" not in last["spec"]  # the action's own note, never shown
    assert f'delivery.rejected count=1 hook=loop reason="loop detected" hops={hops.MAX_HOPS + 1}' \
        in server.output(), server.output()
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert 'hookrunner_deliveries_total{hook="loop",outcome="rejected_loop"} 1.0' in metrics


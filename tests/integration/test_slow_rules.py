"""A slow rule, or a big body, does not hold the server (offload), on a real server.

Audit: a rule sorting and mapping a long list took ~0.5 s a delivery on the event loop, and a
burst of them held /healthz and /readyz for seconds (a Kubernetes probe's 1 s timeout would
restart the pod) and every other hook with them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from hookrunner.offload import BIG_BODY
from tests.serverproc import Server

RULES = """
hooks:
  heavy: {verify: {none: {}}}
  light: {verify: {none: {}}}
rules:
  - name: heavy
    hook: heavy
    when: >-
      (payload.l | map("string") | map("upper") | unique | list | length) > 0
      and (payload.l | sort | list | length) > 0
    run: {shell: {argv: ["true"]}}
  - name: light
    hook: light
    run: {shell: {argv: ["true"]}}
"""
HEAVY = json.dumps({"l": list(range(30_000))}).encode()  # ~0.2 s of matching here


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("slow")
    (root / "rules").mkdir()
    (root / "rules" / "hooks.yaml").write_text(RULES)
    srv = Server(root / "rules", root / "data", root).start()
    yield srv
    srv.stop()


def _post(server: Server, hook: str, body: bytes) -> httpx.Response:
    return httpx.post(f"{server.url}/hooks/{hook}", content=body, timeout=60,
                      headers={"Content-Type": "application/json"})


def test_probes_and_other_hooks_answer_while_slow_deliveries_are_matched(server: Server) -> None:
    assert len(HEAVY) <= BIG_BODY  # the slow rule's doing, not the body's size
    # Matched on the loop: that is how it is found slow (two in a row).
    first = _post(server, "heavy", HEAVY)
    assert first.status_code == 202, first.text
    assert _post(server, "heavy", HEAVY).status_code == 202
    assert "hook.slow_match" in server.output() and "hook=heavy" in server.output()

    heavy_done: list[tuple[float, int]] = []

    def send_heavy() -> None:
        r = _post(server, "heavy", HEAVY)
        heavy_done.append((time.monotonic(), r.status_code))

    senders = [threading.Thread(target=send_heavy) for _ in range(6)]
    for t in senders:
        t.start()
    time.sleep(0.05)
    probes_done: list[float] = []
    with httpx.Client(base_url=server.url, timeout=60) as c:
        for path in ("/healthz", "/readyz", "/healthz", "/readyz"):
            assert c.get(path).status_code == 200
            probes_done.append(time.monotonic())
        light = c.post("/hooks/light", content=b"{}", headers={"Content-Type": "application/json"})
        assert light.status_code == 202
        probes_done.append(time.monotonic())
    for t in senders:
        t.join(60)
    # On the loop, each probe waited for a slow delivery's matching to end: the last one
    # answered after most of them. Now all were answered before the third of six.
    ends = sorted(at for at, _ in heavy_done)
    assert [status for _, status in heavy_done] == [202] * 6
    assert probes_done[-1] < ends[2], (probes_done, ends)
    # Each slow delivery was journaled and ran as its rule says.
    assert server.wait_run(light.json()["runs"][0])["status"] == "succeeded"
    assert server.wait_run(first.json()["runs"][0])["status"] == "succeeded"


def test_a_big_body_is_parsed_off_the_loop_and_accepted(server: Server) -> None:
    body = json.dumps({"l": [1], "pad": "x" * (BIG_BODY + 1)}).encode()
    r = _post(server, "light", body)
    assert r.status_code == 202
    assert server.wait_run(r.json()["runs"][0])["status"] == "succeeded"

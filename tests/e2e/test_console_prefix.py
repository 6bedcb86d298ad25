"""The console in a real Chromium through a real nginx that serves hookrunner at
/hookrunner/ (`--path-prefix`, the README's `location` block): the login, a run's live log
and status (the page's scripts fetch under the prefix), the live deliveries list and the
logout all stay under the prefix."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import shot
from tests.nginxproc import Nginx, readme_location
from tests.serverproc import ADMIN_TOKEN, Server, post_github

PREFIX = "/hookrunner"
SECRET = "e2e-prefix-secret"
RULES = """
hooks:
  github:
    verify:
      github:
        secret: {env: GITHUB_WEBHOOK_SECRET}
rules:
  - name: deploy
    hook: github
    when: event == "push"
    run:
      shell:
        argv: ["scripts/deploy.sh", "{{ payload.after }}"]
"""
# A line, then it holds until the test opens its gate: the page is seen following a run
# that is provably still running.
DEPLOY = """#!/bin/sh
echo "deploying $1"
n=0
while [ ! -e "{gates}/$1" ]; do
  n=$((n + 1)); [ $n -gt 600 ] && echo "gate never opened" && exit 3
  sleep 0.05
done
echo "deployed $1"
"""


@pytest.fixture(scope="module")
def gates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gates")


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory, gates: Path) -> Iterator[tuple[Server, Nginx]]:
    root = tmp_path_factory.mktemp("prefix")
    (root / "rules").mkdir()
    (root / "rules" / "rules.yaml").write_text(RULES)
    (root / "scripts").mkdir()
    (root / "scripts" / "deploy.sh").write_text(DEPLOY.format(gates=gates))
    (root / "scripts" / "deploy.sh").chmod(0o755)
    server = Server(root / "rules", root / "data", root, env={"GITHUB_WEBHOOK_SECRET": SECRET},
                    args=["--path-prefix", PREFIX, "--trusted-proxy", "127.0.0.1"]).start()
    nginx = Nginx(root / "nginx", f"127.0.0.1:{server.port}", readme_location(PREFIX)).start()
    yield server, nginx
    nginx.stop()
    server.stop()


def push(nginx: Nginx, commit: str) -> tuple[str, str]:
    """The delivery's id and its run's."""
    r = post_github(nginx.url + PREFIX, SECRET, {"after": commit}, delivery=f"gh-{commit}")
    assert r.status_code == 202, r.text
    return r.json()["delivery_id"], r.json()["runs"][0]


def test_the_console_works_under_the_prefix_through_the_proxy(
        page: Page, proxied: tuple[Server, Nginx], gates: Path) -> None:
    _, nginx = proxied
    commit = f"p{int(time.time() * 1000)}"
    _, run_id = push(nginx, commit)
    outside: list[str] = []  # any request the page makes past the prefix
    page.on("request", lambda r: outside.append(r.url)
            if not r.url.startswith(nginx.url + PREFIX + "/") else None)
    page.goto(f"{nginx.url}{PREFIX}/runs/{run_id}")
    expect(page).to_have_url(f"{nginx.url}{PREFIX}/login?next=%2Fhookrunner%2Fruns%2F{run_id}")
    page.fill("#token", ADMIN_TOKEN)
    page.click("#login-submit")
    expect(page).to_have_url(f"{nginx.url}{PREFIX}/runs/{run_id}")
    log = page.locator("#log")
    expect(log).to_contain_text(f"deploying {commit}")  # streamed by the page's script
    expect(page.locator("#run-status")).to_have_text("running")
    (gates / commit).touch()
    expect(log).to_contain_text(f"deployed {commit}")
    expect(page.locator("#run-status")).to_have_text("succeeded")  # polled by the script
    shot(page, "prefix-01-run")
    page.click("nav >> text=Deliveries")
    expect(page).to_have_url(f"{nginx.url}{PREFIX}/")
    later = f"q{int(time.time() * 1000)}"
    (gates / later).touch()
    delivery_id, _ = push(nginx, later)
    # The list refreshes itself (its script fetches the rows under the prefix).
    expect(page.locator("#delivery-rows")).to_contain_text(delivery_id)
    shot(page, "prefix-02-deliveries")
    page.click("#logout")
    expect(page).to_have_url(f"{nginx.url}{PREFIX}/login")
    assert outside == [], outside

"""`serve --ssl-certfile F --ssl-keyfile F`: hooks and the API over HTTPS."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.integration.conftest import GITHUB_SECRET, write_script
from tests.integration.test_gateway import PUSH, RULES
from tests.serverproc import ADMIN_TOKEN, Server, github_signature


def test_signed_push_over_https_with_the_given_certificate(
    make_server: Callable[..., Server], project: Path
) -> None:
    cert, key = project / "cert.pem", project / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    write_script(project, "deploy.sh", "echo tls-ok\n")
    server = make_server(RULES, args=["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)])
    assert server.url.startswith("https://")
    trust = ssl.create_default_context(cafile=str(cert))
    body = httpx.Request("POST", "/", json=PUSH).content
    r = httpx.post(f"{server.url}/hooks/github", content=body, verify=trust, headers={
        "Content-Type": "application/json", "X-GitHub-Event": "push",
        "X-Hub-Signature-256": github_signature(GITHUB_SECRET, body)})
    assert r.status_code == 202, r.text
    run = httpx.get(f"{server.url}/api/runs/{r.json()['runs'][0]}", verify=trust,
                    headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert run.status_code == 200 and run.json()["rule"] == "redeploy"

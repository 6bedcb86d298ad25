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


def _serial(port: int) -> str:
    done = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}"],
                          input=b"", capture_output=True, timeout=20)
    pem = done.stdout.decode(errors="replace")
    cert = pem[pem.index("-----BEGIN CERTIFICATE-----"):pem.index("-----END CERTIFICATE-----") + 25]
    return subprocess.run(["openssl", "x509", "-noout", "-serial"], input=cert.encode(),
                          capture_output=True, check=True).stdout.decode().strip()


def test_http_workers_serve_the_certificate_the_start_checked(
    make_server: Callable[..., Server], project: Path
) -> None:
    """A worker started later (replacing one that died) read the files again: after a
    renewal the server presented two certificates at random, and a pair caught half-renewed
    made the replacement die every second with a traceback."""
    import os
    import re
    import signal
    import time

    from tests.integration.test_http_workers import children, until

    cert, key = project / "cert.pem", project / "key.pem"
    make = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run([*make, "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    server = make_server(RULES, args=["--ssl-certfile", str(cert), "--ssl-keyfile", str(key),
                                      "--http-workers", "2"])
    first = _serial(server.port)
    # A renewal caught halfway: a new certificate beside the old key.
    subprocess.run([*make, "-keyout", str(project / "other.key"), "-out", str(cert)],
                   check=True, capture_output=True)
    assert server.proc is not None
    main = int(re.search(r"server.http_workers .*main_pid=(\d+)", server.output()).group(1))  # type: ignore[union-attr]
    until(lambda: len(children(server.proc.pid)) == 3, 10, "main + 2 workers")  # type: ignore[union-attr]
    worker = min(children(server.proc.pid) - {main})
    os.kill(worker, signal.SIGKILL)
    until(lambda: len(children(server.proc.pid)) == 3  # type: ignore[union-attr]
          and worker not in children(server.proc.pid), 15, "a replacement")  # type: ignore[union-attr]
    time.sleep(1.5)
    assert {_serial(server.port) for _ in range(8)} == {first}
    assert "Traceback" not in server.output() and "http_worker_exited" in server.output()
    assert server.output().count("server.http_worker_exited") == 1, server.output()[-2000:]

"""The ceiling for `ingest.py`: Starlette on uvicorn (uvloop, httptools) that verifies the
GitHub HMAC of the raw body, parses the JSON and answers 202. Nothing else."""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

SECRET = os.environ["GITHUB_WEBHOOK_SECRET"].encode()


async def hook(request: Request) -> Response:
    body = await request.body()
    expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, request.headers.get("x-hub-signature-256", "")):
        return JSONResponse({"error": "verification failed"}, status_code=401)
    payload = json.loads(body)
    return JSONResponse({"ok": True, "ref": payload.get("ref")}, status_code=202)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[Route("/hooks/{hook_id}", hook, methods=["POST"]),
                        Route("/healthz", healthz)])

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
                access_log=False, log_level="warning", server_header=False)

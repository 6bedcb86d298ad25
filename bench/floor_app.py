"""The floor for `ingest.py`: the least a durable gateway can do per delivery in CPython.

uvloop and a raw httptools protocol (no uvicorn, no Starlette, no routing, no limits): it
verifies the GitHub HMAC of the raw body, parses the JSON, writes one row (id, hook, event,
headers, body) to SQLite (WAL, synchronous=FULL) in a group commit on a thread, and answers
202 with the delivery id once that commit is done. None of hookrunner's rules, checks,
limits or bounds: it shows what the accept path's journal costs by itself in Python, and so
how much of hookrunner's cost is its own work rather than the language's.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import sqlite3
import threading
import uuid
from typing import Any, cast

import httptools
import uvloop

SECRET = os.environ["GITHUB_WEBHOOK_SECRET"].encode()
Row = tuple[str, str, str, str, bytes]


class Committer:
    """Rows queued by the loop, written and committed by one thread in batches."""

    def __init__(self, path: str, loop: asyncio.AbstractEventLoop) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS deliveries (id TEXT PRIMARY KEY, "
                        "hook TEXT, event TEXT, headers TEXT, body BLOB)")
        self.loop = loop
        self.pending: list[tuple[Row, asyncio.Future[None]]] = []
        self.ready = threading.Condition()
        threading.Thread(target=self.run, daemon=True).start()

    def add(self, row: Row) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self.loop.create_future()
        with self.ready:
            self.pending.append((row, future))
            self.ready.notify()
        return future

    def run(self) -> None:
        while True:
            with self.ready:
                while not self.pending:
                    self.ready.wait()
                batch, self.pending = self.pending, []
            self.db.execute("BEGIN")
            self.db.executemany("INSERT INTO deliveries VALUES (?, ?, ?, ?, ?)",
                                [row for row, _ in batch])
            self.db.execute("COMMIT")
            self.loop.call_soon_threadsafe(_settle, [future for _, future in batch])


def _settle(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


class Protocol(asyncio.Protocol):
    committer: Committer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body, headers, url = b"".join(self.body), self.headers, self.url
        self.body, self.headers = [], {}
        if not url.startswith(b"/hooks/"):
            self.answer(b"200 OK", b'{"status": "ok"}')  # the readiness probe
            return
        expected = b"sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest().encode()
        if not hmac.compare_digest(expected, headers.get(b"x-hub-signature-256", b"")):
            self.answer(b"401 Unauthorized", b'{"error": "verification failed"}')
            return
        try:
            payload: Any = json.loads(body)
        except ValueError:
            self.answer(b"400 Bad Request", b'{"error": "body is not valid JSON"}')
            return
        delivery_id = "dlv_" + uuid.uuid4().hex
        answer = json.dumps({"delivery_id": delivery_id, "runs": [],
                             "ref": payload.get("ref") if isinstance(payload, dict) else None},
                            separators=(",", ":")).encode()
        row = (delivery_id, url.decode("latin-1"),
               headers.get(b"x-github-event", b"").decode("latin-1"),
               json.dumps({k.decode("latin-1"): v.decode("latin-1") for k, v in headers.items()}),
               body)
        self.committer.add(row).add_done_callback(
            lambda _: self.answer(b"202 Accepted", answer))

    def answer(self, status: bytes, body: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json"
                                 b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n"
                                 + body)


async def serve(port: int, db: str) -> None:
    loop = asyncio.get_running_loop()
    Protocol.committer = Committer(db, loop)
    server = await loop.create_server(Protocol, "127.0.0.1", port)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True, help="SQLite file (made if missing)")
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.db))


if __name__ == "__main__":
    main()

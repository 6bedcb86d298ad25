"""The e2e benchmark's client, run as its own process: N signed GitHub pushes at a fixed
concurrency over keep-alive HTTP/1.1 connections. Each body carries a unique `bench_id`
(also sent as X-GitHub-Delivery); the send time and answer status of each id are written
as JSON to --out.

    python bench/loadgen.py --url http://127.0.0.1:PORT/hooks/github --n 2000 --concurrency 32 --out FILE
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

from common import GITHUB_SECRET, github_push, github_signature

PLACEHOLDER = "BENCHID-000000000000"
READ_LIMIT = 1 << 20


def body_for(template: bytes, bench_id: str) -> bytes:
    return template.replace(PLACEHOLDER.encode(), bench_id.encode(), 1)


async def _read_answer(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length, chunked = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def worker(url: str, template: bytes, ids: list[str], results: dict[str, list[float]],
                 timeout: float) -> None:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        for bench_id in ids:
            body = body_for(template, bench_id)
            request = (
                f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                f"Content-Type: application/json\r\nX-GitHub-Event: push\r\n"
                f"X-GitHub-Delivery: {bench_id}\r\n"
                f"X-Hub-Signature-256: {github_signature(body, GITHUB_SECRET)}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            sent = time.time()
            writer.write(request)
            try:
                status = await asyncio.wait_for(_read_answer(reader), timeout)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                status = 0  # no answer: counted, never retried
                results[bench_id] = [sent, status, time.time()]
                writer.close()
                reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
                continue
            results[bench_id] = [sent, status, time.time()]
    finally:
        writer.close()


async def main_async(args: argparse.Namespace) -> None:
    template = github_push(bench_id=PLACEHOLDER)
    ids = [f"{args.prefix}{i:06d}" for i in range(args.n)]
    results: dict[str, list[float]] = {}
    shares = [ids[i::args.concurrency] for i in range(args.concurrency)]
    await asyncio.gather(*(worker(args.url, template, share, results, args.timeout)
                           for share in shares if share))
    with open(args.out, "w") as f:
        json.dump(results, f)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--concurrency", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--prefix", default="b")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for one answer")
    args = p.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_async(args))
    else:
        uvloop.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

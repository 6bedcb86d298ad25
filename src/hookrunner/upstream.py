"""An HTTP worker process's way to the main process: everything but hooks is proxied there.

With `--http-workers N`, extra processes share the port to accept hooks (see multiproc).
The console's sessions, the dispatcher's state and /metrics live in the main process, so
every other request is forwarded to it over a Unix socket, streamed both ways (a followed
run log is a long response), with the client's address in X-Forwarded-For.
"""

from __future__ import annotations

import asyncio

import httpx
from starlette.types import Message, Receive, Scope, Send

# Per-connection headers are not forwarded (RFC 9110 7.6.1); the server frames its own answer.
_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
                  b"transfer-encoding", b"upgrade"})


class Upstream:
    def __init__(self, socket_path: str, tls: bool) -> None:
        # The main process listens on that socket with the same TLS settings as on the port;
        # the hop never leaves this machine, so its certificate is not checked.
        self._client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=socket_path, verify=False, retries=1),
            base_url="https://hookrunner" if tls else "http://hookrunner",
            timeout=httpx.Timeout(None, connect=5.0), trust_env=False)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        headers = [(k, v) for k, v in scope["headers"] if k not in _HOP]
        client = scope.get("client")
        if client:
            headers.append((b"x-forwarded-for", client[0].encode("latin-1")))
        path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        url = path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
        request = self._client.build_request(scope["method"], url, headers=headers,
                                             content=bytes(body))
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError:
            await _answer(send, 502, b'{"error":"main process unreachable"}')
            return
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": [(k, v) for k, v in response.headers.raw
                                    if k.lower() not in _HOP]})
            chunks = response.aiter_raw().__aiter__()
            while True:
                # A followed log may never end by itself: stop when the client leaves.
                step = asyncio.ensure_future(chunks.__anext__())
                await asyncio.wait({step, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    step.cancel()
                    return
                try:
                    chunk = step.result()
                except StopAsyncIteration:
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            gone.cancel()
            await response.aclose()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _answer(send: Send, status: int, body: bytes) -> None:
    start: Message = {"type": "http.response.start", "status": status,
                      "headers": [(b"content-type", b"application/json"),
                                  (b"content-length", str(len(body)).encode())]}
    await send(start)
    await send({"type": "http.response.body", "body": body})

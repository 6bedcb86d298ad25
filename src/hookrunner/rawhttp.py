"""Plain ASGI for the hook path: reading a request and writing a JSON answer.

The hook endpoint is the one path under load; Starlette's routing, middleware stack, Request
and JSONResponse cost about as much as verifying and parsing a 5 KB push (measured), so the
accept path speaks ASGI directly. Answers look exactly like the rest of the app's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import Receive, Scope, Send

from hookrunner import jsontext
from hookrunner.verify.base import Headers


class ClientGone(Exception):
    """The client disconnected before its answer: there is no one to answer."""


async def disconnected(receive: Receive) -> None:
    """Returns once the client has gone (after its body was read, nothing else arrives)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class TooLarge(Exception):
    pass


@dataclass(slots=True)
class Answer:
    status: int
    doc: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Answer:
    return Answer(status, {"error": message}, headers or {})


_ENCODE = jsontext.encoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def encode(doc: Any) -> bytes:
    """As Starlette's JSONResponse renders: compact, UTF-8."""
    return _ENCODE(doc).encode()


def answer_parts(answer: Answer) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The answer's headers and body, as written."""
    body = encode(answer.doc)
    raw = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers.items()]
    return raw, body


async def send_answer(send: Send, answer: Answer, *, head: bool = False) -> None:
    raw, body = answer_parts(answer)
    await send({"type": "http.response.start", "status": answer.status, "headers": raw})
    await send({"type": "http.response.body", "body": b"" if head else body})


def headers_of(scope: Scope) -> Headers:
    return Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]])


def query_pairs(scope: Scope) -> list[tuple[str, str]]:
    """The query string's (name, value) pairs, decoded, in order."""
    raw: bytes = scope.get("query_string", b"")
    return parse_qsl(raw.decode("latin-1"), keep_blank_values=True) if raw else []



async def read_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """The body, at most `limit` bytes: past it (declared or read) raise TooLarge at once."""
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise TooLarge
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)

"""The console's CSS and JS, read once at the start as its templates and code are: files
replaced on disk under a running server (an upgrade in place) were served with the old pages.
Each URL carries a hash of its file (`?v=`), so a browser never keeps an old script either."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import NamedTuple

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

DIRECTORY = Path(__file__).parent / "static"
_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


class _File(NamedTuple):
    body: bytes
    media_type: str
    etag: str


def _read(directory: Path) -> dict[str, _File]:
    files = {}
    for path in sorted(directory.iterdir()):
        if path.suffix in _TYPES:
            body = path.read_bytes()
            files[path.name] = _File(body, _TYPES[path.suffix],
                                     f'"{hashlib.sha256(body).hexdigest()[:20]}"')
    return files


FILES = _read(DIRECTORY)


def url(name: str) -> str:
    """`/static/console.js?v=<hash>`: a new file is a new URL."""
    return f"/static/{name}?v={FILES[name].etag.strip(chr(34))[:10]}"


async def serve(request: Request) -> Response:
    found = FILES.get(request.path_params["name"])
    if found is None:
        raise HTTPException(status_code=404)
    headers = {"ETag": found.etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    asked = request.headers.get("if-none-match", "")
    if found.etag in asked or asked.strip() == "*":
        return Response(status_code=304, headers=headers)
    return Response(found.body, media_type=found.media_type, headers=headers)

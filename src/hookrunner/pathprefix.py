"""The public path prefix (`--path-prefix /hookrunner`): hookrunner served by a reverse
proxy below its host's root (nginx's `location /hookrunner/`).

Every URL hookrunner writes (the console's links, redirects and scripts, its session
cookie's path, a hook's `status_url`) starts with the prefix. A request is taken with the
prefix stripped, as a proxy that strips it sends it, or with it still on: one that keeps it
(or a browser on the node itself) is served the same.
"""

from __future__ import annotations

import re

# The first segments of hookrunner's own paths: a prefix starting with one of them could not
# be told from a stripped path (`/api` + `/runs` against `/api/runs`).
OWN = frozenset({"hooks", "api", "healthz", "readyz", "metrics", "login", "logout", "static",
                 "runs", "deliveries", "rules", "fragments"})
# RFC 3986's unreserved characters: a prefix is written into pages, headers and cookie
# attributes as it is, so nothing there may need quoting or escaping.
_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")
MAX_LENGTH = 200  # characters; it is repeated in every link of a page


def parse(value: str) -> str:
    """`/hookrunner`, `/ops/hooks/` or `/`: the prefix as hookrunner writes it (no trailing
    slash; empty for none). Raises ValueError saying what is wrong."""
    if not value.startswith("/"):
        raise ValueError(f"expected a path starting with '/', e.g. /hookrunner; got {value!r}")
    if len(value) > MAX_LENGTH:
        raise ValueError(f"at most {MAX_LENGTH} characters, got {len(value)}")
    inner = value.strip("/")
    segments = inner.split("/") if inner else []
    for segment in segments:
        if not _SEGMENT.fullmatch(segment) or segment in (".", ".."):
            raise ValueError(f"{value!r}: each part between slashes is letters, digits, '-', "
                             "'.', '_' or '~' (no '.' or '..' part, no '//')")
    if segments and segments[0] in OWN:
        raise ValueError(f"{value!r} starts with /{segments[0]}, one of hookrunner's own paths: "
                         "choose another name, e.g. /hookrunner")
    return "".join(f"/{s}" for s in segments)


def strip(path: str, prefix: str) -> str:
    """The path as hookrunner routes it: `prefix/x` is `/x` (the prefix alone is `/`); any
    other path is taken as sent, stripped by the proxy already."""
    if prefix and path.startswith(prefix):
        rest = path[len(prefix):]
        if not rest:
            return "/"
        if rest.startswith("/"):
            return rest
    return path

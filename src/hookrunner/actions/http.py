"""Kind `http`: one HTTP request; a non-2xx answer (redirects included) fails the run."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from hookrunner.actions import spec
from hookrunner.actions.base import RunContext, RunResult, register
from hookrunner.actions.process import deadline_for, format_seconds
from hookrunner.actions.values import stringify
from hookrunner.errors import ActionError, ConfigError

KIND = "http"
KEYS = ("url", "method", "headers", "json", "body")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
DEFAULT_METHOD = "POST"
RESPONSE_LOG_CAP = 64 * 1024  # bytes of the response body copied into the run log
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
SCHEMES = ("http", "https")


def normalize_http(raw: Any) -> dict[str, Any]:
    spec_ = spec.check_mapping(raw, KIND)
    spec.check_keys(spec_, KIND, KEYS)
    out: dict[str, Any] = {"url": _url_spec(spec_)}
    method = (spec.optional_str(spec_, "method", KIND) or DEFAULT_METHOD).upper()
    if method not in METHODS:
        raise ConfigError(f"http.method must be one of {', '.join(METHODS)}", path=("method",))
    out["method"] = method
    headers = spec.str_map(spec_, "headers", KIND, names=HEADER_NAME)
    if headers is not None:
        out["headers"] = headers
    if "json" in spec_ and "body" in spec_:
        raise ConfigError("http: give 'json' or 'body', not both", path=("body",))
    if "json" in spec_:
        out["json"] = spec_["json"]
    if "body" in spec_:
        out["body"] = spec.scalar_str(spec_["body"], ("body",), "http.body")
    return out


def _url_spec(raw: Mapping[str, Any]) -> str | dict[str, str]:
    """A URL template, or `{env: NAME}`: a URL kept out of the rules (it often holds a token)."""
    value = raw.get("url")
    if not isinstance(value, Mapping):
        return spec.required_str(raw, "url", KIND)
    name = value.get("env")
    if set(value) != {"env"} or not isinstance(name, str) or not spec.ENV_NAME.match(name):
        raise ConfigError("http.url must be a string or {env: NAME}", path=("url",))
    return {"env": name}


def resolve_url(value: Any, env: Mapping[str, str]) -> str:
    """The rendered `url`; `{env: NAME}` is read from the action's environment (`--pass-env`)."""
    if not isinstance(value, Mapping):
        return stringify(value)
    name = stringify(value.get("env"))
    url = env.get(name, "")
    if not url:
        raise ActionError(f"http: url: {name} is not set in the action's environment "
                          f"(serve --pass-env {name})")
    return url


def redacted(url: str, *, path: bool = True) -> str:
    """The URL without credentials or query (either may hold a token), for the log; without
    its path too where `path` is False: a URL kept in `{env: NAME}` is kept there because it
    is a secret, and Slack's or Teams' incoming webhooks carry their token in the path."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:  # `http://[::1`, a port past 65535: say no more than the scheme
        return f"{url.partition(':')[0][:16]}:<not a valid URL>"
    return urlunsplit((parts.scheme, host, parts.path if path else "/...", "", ""))


def _valid(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError past 65535
    except ValueError:
        return False
    return parts.scheme in SCHEMES and bool(parts.hostname) and url.isprintable()


class HttpRunner:
    kind = KIND

    def normalize(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        return normalize_http(raw)

    def needs_delivery(self, rendered: Mapping[str, Any]) -> bool:
        return False

    def implicit_concurrency_key(self, rendered: Mapping[str, Any]) -> str | None:
        return None

    async def run(self, rendered: Mapping[str, Any], ctx: RunContext) -> RunResult:
        url = resolve_url(rendered.get("url"), ctx.env)
        source = rendered.get("url")
        if isinstance(source, Mapping):
            shown = f"{redacted(url, path=False)} (${source.get('env')})"
        else:
            shown = redacted(url)
        if not _valid(url):
            raise ActionError(f"http: not an http(s) URL: {shown}")
        method = stringify(rendered.get("method") or DEFAULT_METHOD).upper()
        # Values as UTF-8 (a payload's `é` is no reason to fail); CR/LF is still refused.
        headers = {k: stringify(v).encode() for k, v in (rendered.get("headers") or {}).items()}
        for name, value in headers.items():
            if b"\r" in value or b"\n" in value or b"\0" in value:  # never quote it: a token
                raise ActionError(f"http: header {name} holds a line break or NUL")
        kwargs: dict[str, Any] = {"headers": headers}
        if "json" in rendered:
            kwargs["json"] = rendered["json"]
        elif "body" in rendered:
            kwargs["content"] = stringify(rendered["body"]).encode()
        ctx.log.note(f"{method} {shown}")

        loop = asyncio.get_running_loop()
        deadline = deadline_for(ctx)
        request = asyncio.ensure_future(_request(method, url, kwargs, ctx))
        canceller = asyncio.ensure_future(ctx.cancel.wait())
        try:
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            await asyncio.wait({request, canceller}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            canceller.cancel()
            if not request.done():
                request.cancel()
        if not request.done() or request.cancelled():
            if ctx.cancel.is_set():
                ctx.log.note("canceled")
                return RunResult("canceled", reason="canceled")
            reason = f"timed out after {format_seconds(ctx.timeout or 0.0)}"
            ctx.log.note(reason)
            return RunResult("timed_out", reason=reason)
        return request.result()


async def _request(method: str, url: str, kwargs: dict[str, Any], ctx: RunContext) -> RunResult:
    try:
        async with (
            httpx.AsyncClient(timeout=None, follow_redirects=False, trust_env=False) as client,
            client.stream(method, url, **kwargs) as response,
        ):
            ctx.log.note(f"HTTP {response.status_code} {response.reason_phrase}".rstrip())
            kept, piece = 0, b""
            async for chunk in response.aiter_bytes():
                piece = chunk[: RESPONSE_LOG_CAP - kept]
                ctx.log.write(piece)
                kept += len(piece)
                if kept >= RESPONSE_LOG_CAP:
                    ctx.log.note(f"response body cut at {RESPONSE_LOG_CAP} bytes")
                    break
            else:
                if piece and not piece.endswith(b"\n"):
                    ctx.log.write(b"\n")
    except httpx.HTTPError as exc:
        reason = f"request failed: {type(exc).__name__}: {exc}".rstrip(": ")
        ctx.log.note(reason)
        return RunResult("failed", reason=reason)
    except (httpx.InvalidURL, ValueError) as exc:
        # A URL or header value httpx refuses; its message may quote the value (a token).
        reason = f"request failed: the URL or a header value is not valid ({type(exc).__name__})"
        ctx.log.note(reason)
        return RunResult("failed", reason=reason)
    status = response.status_code
    outputs = {"status": status}
    if 200 <= status < 300:
        return RunResult("succeeded", outputs=outputs)
    return RunResult("failed", reason=f"HTTP {status}", outputs=outputs)


register(HttpRunner())

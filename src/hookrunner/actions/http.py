"""Kind `http`: one HTTP request; a non-2xx answer (redirects included) fails the run."""

from __future__ import annotations

import asyncio
import base64
import datetime
import email.utils
import functools
import json
import os
import re
import ssl
import time
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, parse_qsl, unquote, unquote_plus, urlsplit

import httpx

from hookrunner import __version__, hops, redact
from hookrunner.actions import spec
from hookrunner.actions.base import RunContext, RunResult, register
from hookrunner.actions.paths import confine
from hookrunner.actions.process import deadline_for, stopped
from hookrunner.actions.values import stringify
from hookrunner.errors import ActionError, ConfigError
from hookrunner.redact import log_url

KIND = "http"
KEYS = ("url", "method", "headers", "json", "body", "ca")
URL_ENV = "url_env"  # where `url: {env: NAME}` goes (see _env_ref)
USER_AGENT = f"hookrunner/{__version__}".encode()
# The scheme and host a templated url writes out (`https://ci.example.com`), which a value
# may not change (see fixed_part, _pinned). Written by normalize from the rule's own text,
# under a key no template writes.
URL_FIXED = redact.URL_FIXED
# The templates of URL_FIXED's holes, each rendered on its own beside the URL, so that
# _pinned reads what a value put in the host (a port of `8080/deploy/admin?`) as a value.
URL_HOLES = redact.URL_HOLES
TEMPLATE_START = re.compile(r"\{[{%#]")
EXPRESSION = re.compile(r"\{\{.*?\}\}", re.DOTALL)
COMMENT = re.compile(r"\{#.*?#\}", re.DOTALL)
HOLE = "\ufffc"  # where a `{{ ... }}` is, in URL_FIXED (no character of a URL's host)
THEN = "\ufffb"  # in URL_FIXED, before the text the rule writes after a host ending in HOLE
HEADERS_ENV = "headers_env"  # where `headers: {X: {env: NAME}}` go
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
DEFAULT_METHOD = "POST"
RECANCEL_EVERY = 1.0  # seconds: a request cut off is cancelled again while it has not ended
RESPONSE_LOG_CAP = 64 * 1024  # bytes of the response body copied into the run log
RAW_LOG_CAP = 16 * RESPONSE_LOG_CAP  # bytes of it read as sent (packed), however little they unpack to
MAX_MEMBERS = 100  # gzip members of one answer unpacked (each a decompressor of its own)
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
SCHEMES = ("http", "https")
MAX_PORT = 65535
CREDENTIALS_TWICE = ("http: the URL carries credentials and the rule sets an Authorization "
                     "header: httpx would send the URL's; keep one")


def normalize_http(raw: Any) -> dict[str, Any]:
    spec_ = spec.check_mapping(raw, KIND)
    spec.check_keys(spec_, KIND, KEYS)
    out: dict[str, Any] = {}
    url = spec_.get("url")
    if isinstance(url, Mapping):
        out[URL_ENV] = _env_ref(url, "http.url", ("url",))
    else:
        out["url"] = spec.required_str(spec_, "url", KIND)
        fixed = fixed_part(out["url"])
        if fixed:
            out[URL_FIXED] = fixed
            holes = hole_templates(out["url"])[:fixed.partition(THEN)[0].count(HOLE)]
            if holes:
                out[URL_HOLES] = holes
    method = (spec.optional_str(spec_, "method", KIND) or DEFAULT_METHOD).upper()
    if method not in METHODS:
        templated = " (it is not templated: a rule per method)" if "{{" in method or "{%" in method \
            else ""
        raise ConfigError(f"http.method must be one of {', '.join(METHODS)}{templated}",
                          path=("method",))
    out["method"] = method
    headers = spec_.get("headers")
    if isinstance(headers, Mapping):
        # Template values as any other strings; `{env: NAME}` ones apart (see _env_ref).
        templates = {k: v for k, v in headers.items() if not isinstance(v, Mapping)}
        plain = spec.str_map({"headers": templates}, "headers", KIND, names=HEADER_NAME)
        refs = spec.str_map({"headers": {k: _env_ref(v, f"http.headers.{k}", ("headers", k))
                                         for k, v in headers.items() if k not in templates}},
                            "headers", KIND, names=HEADER_NAME)
        if own := [k for k in headers if isinstance(k, str) and k.lower() == hops.HEADER.lower()]:
            # The loop guard's count is hookrunner's to send: a rule's own (`"1"`, or the
            # delivery's passed on) made a self-posting rule post without end.
            raise ConfigError(f"http.headers.{own[0]}: {hops.HEADER} is hookrunner's own (the "
                              "count that stops a loop of hooks): leave it out",
                              path=("headers", own[0]))
        if plain:
            out["headers"] = plain
        if refs:
            out[HEADERS_ENV] = refs
    elif headers is not None:
        spec.str_map(spec_, "headers", KIND)  # says what is wrong with it
    if "json" in spec_ and "body" in spec_:
        raise ConfigError("http: give 'json' or 'body', not both", path=("body",))
    if "json" in spec_:
        if (where := _binary_at(spec_["json"], ("json",))) is not None:
            # YAML's `!!binary` is bytes, which went as their Python repr, `"b'hello'"`.
            raise ConfigError("http.json: a !!binary value has no JSON form: write it as text "
                              "(base64, if that is what the endpoint wants)", path=where)
        out["json"] = spec_["json"]
    if "body" in spec_:
        out["body"] = spec.scalar_str(spec_["body"], ("body",), "http.body")
    if isinstance(headers, Mapping) and any(str(k).lower() == "authorization" for k in headers) \
            and _literal_credentials(out.get("url", "")):
        raise ConfigError(CREDENTIALS_TWICE, path=("url",))  # every run would fail on it
    ca = spec.optional_str(spec_, "ca", KIND)
    if ca is not None:
        if "{{" in ca or "{%" in ca:
            raise ConfigError("http.ca is the path of a CA bundle, not a template", path=("ca",))
        out["ca"] = ca
    return out


def fixed_part(url: str) -> str | None:
    """The scheme and host of a templated URL as its rule writes them, each `{{ ... }}` in
    them as HOLE (`https://ci.example.com`, `https://HOLE.example.com`, `http://hostHOLE`
    where the path's template follows the host at once; templates side by side are one
    HOLE). None where the URL has no template, or the rule writes no `://` before the first
    `/`, or a `{% %}` block is in its host: there a value may name any host, as the rule
    says."""
    if TEMPLATE_START.search(url) is None:
        return None
    skeleton = EXPRESSION.sub(HOLE, COMMENT.sub("", url.strip()))
    while HOLE + HOLE in skeleton:
        skeleton = skeleton.replace(HOLE + HOLE, HOLE)
    scheme, sep, rest = skeleton.partition("://")
    if not sep or not scheme or any(c in scheme for c in "/?#"):
        return None
    netloc = re.split(r"[/?#\\]", rest, maxsplit=1)[0]
    if not netloc or "{%" in netloc:
        return None
    if not netloc.endswith(HOLE) or netloc == HOLE:  # a whole-host template may name any host
        return f"{scheme}://{netloc}"
    if not netloc[:-1].endswith((":", ".", "-")):  # `http://host{{ path }}`: a path follows
        return f"{scheme}://{netloc}"
    # A host that ends with a template (a port, `api-{{ region }}`) ends where the value
    # does: `8443/admin?` would put the rule's own path in the query. The text the rule
    # writes next (up to its next template or block) must follow the host as written.
    then = rest[len(netloc):].split(HOLE, 1)[0].split("{%", 1)[0]
    return f"{scheme}://{netloc}{THEN}{then}" if then else f"{scheme}://{netloc}"


def hole_templates(url: str) -> list[list[str]]:
    """The `{{ ... }}` of each HOLE of fixed_part's skeleton, in order; side by side ones
    (`:{{ port }}{{ path }}`) are one HOLE, each rendered on its own: the first is the
    value of the place, the others a path after it."""
    text, end = COMMENT.sub("", url.strip()), -1
    holes: list[list[str]] = []
    for found in EXPRESSION.finditer(text):
        if found.start() == end:
            holes[-1].append(found.group())
        else:
            holes.append([found.group()])
        end = found.end()
    return holes


def _shown_fixed(fixed: str) -> str:
    """URL_FIXED as a refusal says it: without a user's part or a query the rule writes
    (a token), templates as `{{…}}`."""
    fixed, _, then = fixed.partition(THEN)
    scheme, _, netloc = fixed.partition("://")
    then = re.split(r"[?#]", then, maxsplit=1)[0]
    return f"{scheme}://{netloc.rpartition('@')[2]}{then}".replace(HOLE, "{{…}}")


def _pinned(url: str, fixed: str, values: Any = None) -> bool:
    """Whether `url` keeps the scheme and host its rule writes (`fixed`, see fixed_part). A
    templated part of the host is printable ASCII but `@` (credentials a value would add),
    `/`, `?`, `#`, `\\` or `%`, and one label where it ends the host's name after text the
    rule writes (see _HOST_END); one that ends the host right after text the rule writes
    (`http://api.example.com{{ payload.path }}`) adds nothing to it, since there the rule
    means a path (`.evil.example/`, `:8443` or `1:9000` would move the request, with the
    rule's headers, to another host or port); after a `:` it is a port, digits. Where the
    rule writes text after such a host, it follows the host (see fixed_part). `values`:
    the holes' own renderings (URL_HOLES; None in a run queued before they were kept),
    read as values: `url` must be the rule's text with them in their places."""
    try:
        got = urlsplit(url)
    except ValueError:
        return False
    fixed, _, then = fixed.partition(THEN)
    if values is not None and not _as_written(url, fixed, then, values):
        return False
    # (Where the holes' values are known, _as_written placed `then` after the whole group of
    # side-by-side templates, a path's too: `:{{ port }}{{ path }}/ok`.)
    if values is None and then and not url.partition("://")[2][len(got.netloc):].startswith(then):
        return False
    scheme, _, netloc = fixed.partition("://")
    if HOLE in scheme:  # `http{{ s }}://host/`: any scheme the client takes, the same host
        if got.scheme.lower() not in SCHEMES:
            return False
        scheme = got.scheme
    pieces = netloc.split(HOLE)
    holes = [_HOST_END if _ends_name(pieces, i) else _HOST for i in range(len(pieces) - 1)]
    if len(pieces) > 1 and pieces[-1] == "" and pieces[-2]:  # the host ends with a template
        holes[-1] = "[0-9]*" if pieces[-2].endswith(":") else \
            _HOST_END if pieces[-2][-1] in ".-" else ""
    pattern = "".join(re.escape(piece) + hole for piece, hole in zip(pieces, [*holes, ""], strict=True))
    return got.scheme.lower() == scheme.lower() and \
        re.fullmatch(pattern, got.netloc, re.IGNORECASE) is not None and _read_alike(url, got)


def _read_alike(url: str, got: Any) -> bool:
    """Whether the client sends to the host and port these checks read (`got`, urlsplit's):
    where the two parsers differ (IDNA makes the full stop of `x\u3002example` a dot), a value
    could pass them and move the request all the same. Label by label: the client's are
    ASCII, a name written in Unicode (`b\u00fccher.example`) being `xn--` labels there."""
    try:
        client = httpx.URL(url)
        default = {"http": 80, "https": 443}.get(got.scheme.lower())
        if (client.port or default) != (got.port or default):
            return False
        theirs = client.raw_host.decode("ascii").lower().split(".")
    except (httpx.InvalidURL, ValueError, UnicodeDecodeError):
        return False
    ours = (got.hostname or "").lower().split(".")
    return len(theirs) == len(ours) and all(
        t == o if o.isascii() else t.startswith("xn--")
        for t, o in zip(theirs, ours, strict=True))


# What a value may hold in a hole of the scheme or host (see _as_written): printable ASCII
# (the client reads U+3002 and U+FF0E as dots: IDNA's full stops) without `%` (a proxy may
# read `%2e` as a dot, review; no host name needs one), never a character that ends the
# host (a value of `8080/deploy/admin?` would carry the rule's own path after its `/deploy`
# into the query), nor `@`; a port's, digits; at the end of the host's name, one label: no
# `:`, and no `.` (`api-{{ region }}` of `x.attacker.example` named the sender's domain).
_HOST = r"(?:(?![@/?#\\%])[!-~])*"
_HOST_END = r"(?:(?![@/?#\\%:.])[!-~])*"
_HOST_VALUE = re.compile(_HOST)
_HOST_END_VALUE = re.compile(_HOST_END)
_PORT_VALUE = re.compile(r"[0-9]*")


def _as_written(url: str, fixed: str, then: str, values: Any) -> bool:
    """Whether `url` starts as the rule writes its scheme and host (`fixed`) and the text
    after them (`then`), with `values` (the holes' renderings) in the holes, each a value
    of its place (a path's template right after the host excepted: any text)."""
    pieces = fixed.split(HOLE)
    if not isinstance(values, list) or len(values) != len(pieces) - 1:
        return False
    texts = []
    for i, value in enumerate(values):
        parts = [stringify(v) for v in value] if isinstance(value, list) else [stringify(value)]
        before, last = pieces[i], i == len(values) - 1 and pieces[-1] == ""
        place = _PORT_VALUE if last and before.endswith(":") else \
            _HOST_END_VALUE if _ends_name(pieces, i) else _HOST_VALUE if not last else None
        # (None: a path right after the host, or the whole host.) Of side-by-side templates
        # the first is the place's value; at the host's end, the rest is a path after it,
        # which starts as one (`:{{ port }}{{ path }}` of `41` and `531/ok` was port 41531).
        rest = "".join(parts[1:])
        if place is not None and (
                not parts or place.fullmatch(parts[0]) is None
                or (last and rest and rest[0] not in "/?#")
                or (not last and rest and place.fullmatch(parts[0] + rest) is None)):
            return False
        texts.append("".join(parts))
    written = "".join(piece + text for piece, text in zip(pieces, [*texts, ""], strict=True))
    return url.startswith(written + then)


def _ends_name(pieces: list[str], i: int) -> bool:
    """Whether the template between pieces i and i+1 of a host ends its name after text the
    rule writes (`api-{{ region }}`, `api{{ n }}:8080`, `10.0.0.{{ n }}:8080`): then it is
    one label of it, not more (another domain)."""
    before, after = pieces[i], pieces[i + 1]
    if after == "" and i == len(pieces) - 2:  # the host's last text: a port or a label
        return before.endswith((".", "-"))
    name = before.rpartition("://")[2].rpartition("@")[2]  # (the host's own text before it)
    return after.startswith(":") and name != "" and not name.endswith(":")


def _dot_segment(url: str) -> bool:
    """Whether the URL's path has a `..` segment (`%2e%2e` too), which the client resolves
    before sending: `/builds/{{ id | urlencode }}` with an id of `../../admin` would be
    `/admin` (urlencode keeps `/`). Read decoded too, split at `/` and `\\`: an endpoint
    that decodes `%2F` before routing reads `..%2F..%2Fadmin` so."""
    path = urlsplit(url).path
    return any(part == ".." for segment in path.split("/")
               for part in re.split(r"[/\\]", unquote(segment)))


def literal_problem(url: str) -> str | None:
    """What is wrong with a URL written without templates (every run would be refused)."""
    if TEMPLATE_START.search(url):
        return None
    try:  # shown as the log shows it: a rule's URL may carry credentials
        _check_url(url.strip(), log_url(url.strip()))
    except ActionError as exc:
        return str(exc).removeprefix("http: ")
    return None


def _literal_credentials(url: str) -> bool:
    """Whether a URL written without templates has a user name (`https://u:p@host/`)."""
    if "{" in url:
        return False
    try:
        return urlsplit(url).username is not None
    except ValueError:
        return False


def trust(ca: Any, root: Path) -> ssl.SSLContext:
    """The certificates an https answer must chain to: the system's, or `ca` (a PEM bundle;
    a relative path is under --root) for an internal CA. Each is loaded once (a context
    costs ~30 ms of CPU: once a run, it was most of an http run's cost), and a `ca` file
    again when it changes."""
    if not ca:
        return _system_trust()
    path = Path(stringify(ca))
    path = path if path.is_absolute() else confine(root, str(path))
    try:
        stat = path.stat()
        return _bundle_trust(str(path), stat.st_mtime_ns, stat.st_size)
    except (OSError, ssl.SSLError) as exc:
        raise ActionError(f"http: ca: cannot load {ca}: {getattr(exc, 'strerror', None) or exc}") from None


@functools.cache
def _system_trust() -> ssl.SSLContext:
    """The system's CA store (Debian's ca-certificates, where `update-ca-certificates` puts
    an internal CA), as curl trusts; certifi's bundle (httpx's own default) only where the
    system has none. OpenSSL's own paths, not SSL_CERT_FILE/SSL_CERT_DIR: the server's
    environment is not the action's."""
    paths = ssl.get_default_verify_paths()
    cafile = paths.openssl_cafile if os.path.isfile(paths.openssl_cafile) else None
    capath = paths.openssl_capath if os.path.isdir(paths.openssl_capath) and \
        any(os.scandir(paths.openssl_capath)) else None
    if cafile is None and capath is None:
        import certifi

        cafile = certifi.where()
    return ssl.create_default_context(cafile=cafile, capath=capath)


@functools.lru_cache(maxsize=32)
def _bundle_trust(path: str, mtime_ns: int, size: int) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=path)


def _binary_at(value: Any, path: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """Where in a `json` value a bytes item (YAML `!!binary`) is, or None."""
    if isinstance(value, bytes | bytearray):
        return path
    items = value.items() if isinstance(value, Mapping) else \
        enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if (found := _binary_at(item, (*path, key))) is not None:
            return found
    return None


def _env_ref(value: Any, where: str, path: tuple[str, ...]) -> str:
    """`{env: NAME}` -> NAME: a value kept out of the rules (a token, a token-bearing URL),
    read from the action's environment (`serve --pass-env NAME`) when the run starts. Kept
    under keys of their own (URL_ENV, HEADERS_ENV), which no template writes: a payload
    rendering `{"env": "X"}` into `url` cannot make the run read a variable."""
    name = value.get("env") if isinstance(value, Mapping) else None
    if not isinstance(value, Mapping) or set(value) != {"env"} or not isinstance(name, str) \
            or not spec.ENV_NAME.match(name):
        if isinstance(name, str) and name.startswith("$"):  # the shell's way to read it
            raise ConfigError(f"{where}: env names the variable without a `$`", path=path)
        raise ConfigError(f"{where} must be a string or {{env: NAME}}", path=path)
    return name


def from_env(name: Any, env: Mapping[str, str], where: str) -> str:
    found = env.get(stringify(name), "")
    if not found:
        raise ActionError(f"http: {where}: {name} is not set in the action's environment "
                          f"(serve --pass-env {name})")
    try:  # bytes that are not UTF-8 reach Python as lone surrogates: not sendable
        found.encode()
    except UnicodeEncodeError:
        raise ActionError(f"http: {where}: {name} is not valid UTF-8") from None
    return found


def resolve_url(rendered: Mapping[str, Any], env: Mapping[str, str]) -> str:
    if URL_ENV in rendered:
        return from_env(rendered[URL_ENV], env, "url")
    url = rendered.get("url")
    if not isinstance(url, str):  # a template that gave an object, say
        raise ActionError(f"http: url must be a string, got {type(url).__name__}")
    return url


def _valid(url: str) -> bool:
    return _url_problem(url) is None


def _url_problem(url: str) -> str | None:
    """Why `url` is no http(s) URL to send to, said without quoting it (it may hold
    credentials) but for its port, whose text a value may have made (`:{{ port }}` of
    `65536`, or `http://host{{ path }}` of `:8443/x`); None when it is one."""
    if not url.isprintable():
        return "it holds a line break or another control character"
    try:
        parts = urlsplit(url)
    except ValueError:  # `http://[::1`
        return "its host cannot be read (an IPv6 address goes in brackets: [::1])"
    if parts.scheme not in SCHEMES:
        return "its scheme is not http or https" if parts.scheme else "it has no scheme"
    host_port = parts.netloc.rpartition("@")[2]
    after_host = host_port.partition("]")[2] if host_port.startswith("[") else host_port
    if ":" in after_host:
        port = after_host.partition(":")[2]
        if not port:
            return "its port is empty"
        if not (port.isascii() and port.isdigit()):
            # Quoted only where no `@` is in the URL: a password's `#` or `/` ends the host
            # part early for urlsplit, and the "port" is then the password's start.
            return f"its port {port[:20]!r} is not a number" if "@" not in url else \
                "its port is not a number (a user name or password with a `/`, `?` or `#` in " \
                "it is written %2F, %3F, %23)"
        digits = port.lstrip("0")
        if len(digits) > len(str(MAX_PORT)) or not 1 <= int(digits or "0") <= MAX_PORT:
            return f"its port {port[:20]}{'...' if len(port) > 20 else ''} is not from 1 to " \
                   f"{MAX_PORT}"
    if not parts.hostname:
        return "it names no host"
    return None


def _check_url(url: str, shown: str) -> None:
    """ActionError for a URL that may not be requested (`shown` is how the log shows it)."""
    if not url.isprintable():  # the shown form would hide what is wrong with it
        raise ActionError("http: the URL holds a line break or another control character")
    problem = _url_problem(url)
    if problem is not None:
        raise ActionError(f"http: not an http(s) URL ({problem}): {shown}")
    if _dot_segment(url):
        raise ActionError(f"http: the URL's path has a `..` segment, which would be sent as "
                          f"another path: {shown}")
    try:  # what httpx itself refuses (`http://xn--/`): each attempt would, the same way
        httpx.Request("GET", url)  # (its Host header reads the IDNA form)
    except (httpx.InvalidURL, ValueError) as exc:
        raise ActionError(f"http: not a URL the client can send ({type(exc).__name__}): "
                          f"{shown}") from None


class HttpRunner:
    kind = KIND
    stand_ins = {"url": "http://example.invalid/"}  # (see shell's)

    def normalize(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        return normalize_http(raw)

    def needs_delivery(self, rendered: Mapping[str, Any]) -> bool:
        return False

    def implicit_concurrency_key(self, rendered: Mapping[str, Any]) -> str | None:
        return None

    def refusal(self, rendered: Mapping[str, Any], root: Path) -> str | None:
        try:  # `ca` is no template: the rules' load judged it (its file is `check`'s warning)
            _prepare(rendered, _UNREAD_ENV)
        except ActionError as exc:
            return str(exc)
        return None

    async def run(self, rendered: Mapping[str, Any], ctx: RunContext) -> RunResult:
        method, url, shown, kwargs = _prepare(rendered, ctx.env)
        ctx.log.note(f"{method} {shown}")

        loop = asyncio.get_running_loop()
        deadline = deadline_for(ctx)
        verify = trust(rendered.get("ca"), ctx.root)
        answered: list[RunResult] = []  # what the status decides, once the answer's head is in
        via = proxy_for(url, ctx.env)
        secrets = sent_secrets(rendered, url, kwargs["headers"], via[1] if via else None)
        request = asyncio.ensure_future(_request(method, url, kwargs, verify, ctx, answered,
                                                 secrets, secret_path=URL_ENV in rendered,
                                                 proxy=via))
        canceller = asyncio.ensure_future(ctx.cancel.wait())
        cut = False  # the request was cancelled: the timeout, a cancel, the server's stop
        try:
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            await asyncio.wait({request, canceller}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            canceller.cancel()
            # Its end: what it read of the body, held back for a secret that might begin
            # there, goes to the log now, before the note and the log's close. Cancelled
            # again while it has not ended (a library may swallow one cancellation, and
            # nothing else bounds the request: httpx runs without a timeout of its own).
            while not request.done():
                cut = True
                request.cancel()
                await asyncio.wait({request}, timeout=RECANCEL_EVERY)
        if cut and not request.cancelled():
            request.exception()  # (an error of its cleanup: retrieved, the cut decides)
        if cut or request.cancelled():
            if answered:
                # Stopped reading a body that stalls after its status (the timeout, a cancel,
                # the server's stop): the endpoint has acted on the request, so its status
                # decides, as for a body that breaks off (a retry, or the requeue of a stop,
                # would send a non-idempotent request again).
                why = "a cancel came" if ctx.cancel.is_set() else \
                    f"the timeout ({ctx.timeout:g}s) ran out"
                ctx.log.note(f"the answer's body had not ended when {why}: the status decides")
                return answered[0]
            return stopped(ctx)
        return request.result()


def _prepare(rendered: Mapping[str, Any], env: Mapping[str, str]
             ) -> tuple[str, str, str, dict[str, Any]]:
    """The method, URL, URL as logged, and httpx's arguments; ActionError for a request
    that may not be sent."""
    # Spaces around it (an env file's, a template's) are no part of it, as for a browser.
    url = resolve_url(rendered, env).strip(" \t\r\n")
    shown = (f"{log_url(url, path=False)} (${rendered[URL_ENV]})" if URL_ENV in rendered
             else log_url(url))
    _check_url(url, shown)
    fixed = rendered.get(URL_FIXED)
    if isinstance(fixed, str) and not _pinned(url, fixed, rendered.get(URL_HOLES)):
        raise ActionError(f"http: a templated value changed the scheme or host that the rule "
                          f"writes out ({_shown_fixed(fixed)}): {shown}")
    proxy_for(url, env)  # a proxy that cannot be used: refused before anything is sent
    method = stringify(rendered.get("method") or DEFAULT_METHOD).upper()
    # Values as UTF-8 (a payload's `é` is no reason to fail); CR/LF is still refused.
    headers = {k: stringify(v).encode() for k, v in (rendered.get("headers") or {}).items()}
    headers.update({k: from_env(v, env, f"header {k}").encode()
                    for k, v in (rendered.get(HEADERS_ENV) or {}).items()})
    headers = {name: _header_value(name, value) for name, value in headers.items()}
    if not any(name.lower() == "accept-encoding" for name in headers):
        headers["Accept-Encoding"] = b"identity"  # the log shows the body as it comes
    if not any(name.lower() == "user-agent" for name in headers):
        headers["User-Agent"] = USER_AGENT  # an endpoint (a hook of this server) can tell
    # A loop's guard, always this count (a spec stored with the header of its own, before
    # normalize_http refused one, counted nothing).
    headers = {k: v for k, v in headers.items() if k.lower() != hops.HEADER.lower()}
    headers[hops.HEADER] = str(rendered.get(hops.KEY) or 1).encode()
    if urlsplit(url).username is not None and any(
            name.lower() == "authorization" for name in headers):
        raise ActionError(CREDENTIALS_TWICE)
    kwargs: dict[str, Any] = {"headers": headers}
    if "json" in rendered and rendered["json"] is None:
        # A payload's `null` forwarded: httpx reads `json=None` as no body at all.
        kwargs["content"] = b"null"
        if not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = b"application/json"
    elif "json" in rendered:
        kwargs["json"] = rendered["json"]
    elif "body" in rendered:
        kwargs["content"] = stringify(rendered["body"]).encode()
    return method, url, shown, kwargs


class _UnreadEnv(dict[str, str]):
    """What a dry run reads for `{env: NAME}`: a plain stand-in (an http URL, a header value
    without credentials), since the CLI's environment is not the server's."""

    def get(self, key: str, default: Any = None) -> Any:
        if key.lower().endswith("_proxy"):  # which proxies the server passes is unknown
            return default
        return "https://env.invalid/"


_UNREAD_ENV = _UnreadEnv()


# What httpx's errors without a message mean (a reset connection says only "ReadError").
_UNSAID: dict[type[Exception], str] = {
    httpx.ReadError: "the connection was closed or reset while the answer was read",
    httpx.WriteError: "the connection was closed or reset while the request was sent",
    httpx.RemoteProtocolError: "the server broke the HTTP protocol (or closed the connection)",
    httpx.ConnectError: "could not connect",
}
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_CONTROL_TEXT = re.compile("[\x80-\x9f\u2028\u2029]")  # C1, Unicode's line breaks (decoded)


def _header_value(name: str, value: bytes) -> bytes:
    """A header value as HTTP has it: without the spaces and tabs around it (an env file's
    trailing space), and never with a control character, refused without quoting the value
    (it may be a token)."""
    if _CONTROL.search(value) or _CONTROL_TEXT.search(value.decode("utf-8", "replace")):
        raise ActionError(f"http: header {name} holds a line break or another control character")
    return value.strip(b" \t")


def proxy_for(url: str, env: Mapping[str, str]) -> tuple[str, str] | None:
    """The proxy the action's environment names for `url` (`serve --pass-env HTTPS_PROXY`,
    read as curl reads it: `<scheme>_proxy`, then `all_proxy`, either case, none for a host
    in `no_proxy`), with the variable's name; None for none. The server's own environment is
    never read (it is not the action's)."""
    def var(name: str) -> tuple[str, str] | None:
        for each in (name, name.upper()):
            value = (env.get(each) or "").strip()
            if value:
                return each, value
        return None

    parts = urlsplit(url)
    found = var(f"{parts.scheme}_proxy") or var("all_proxy")
    if found is None:
        return None
    name, proxy = found
    if "://" not in proxy:
        proxy = f"http://{proxy}"  # `proxy.internal:3128`, as curl reads it
    scheme = proxy.partition("://")[0].lower()
    if scheme not in SCHEMES:
        raise ActionError(f"http: ${name} names a {scheme} proxy: only http:// and https:// "
                          "proxies are supported")
    if not _valid(proxy):
        raise ActionError(f"http: ${name} is not a proxy URL: {log_url(proxy)}")
    bypass = var("no_proxy")
    if bypass is not None and parts.hostname is not None and _bypassed(
            parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), bypass[1]):
        return None
    return name, proxy


def _bypassed(host: str, port: int, no_proxy: str) -> bool:
    """Whether `no_proxy` (curl's reading: `*`, a name and its subdomains with or without a
    leading dot, an address, IPv6 bare or in brackets, each with an optional `:port`) lists
    the host. urllib's reading missed `::1` and a port the URL leaves implicit."""
    host = host.lower().rstrip(".")
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        want_port: int | None = None
        if entry.startswith("["):  # [v6] or [v6]:port
            name, _, rest = entry[1:].partition("]")
            if rest.startswith(":") and rest[1:].isdigit():
                want_port = int(rest[1:])
        elif entry.count(":") == 1 and entry.rsplit(":", 1)[1].isdigit():
            name, _, number = entry.rpartition(":")
            want_port = int(number)
        else:
            name = entry  # a name, an IPv4 address or a bare IPv6 one
        name = name.lstrip(".").rstrip(".")
        if want_port is not None and want_port != port:
            continue
        if host == name or host.endswith("." + name):
            return True
    return False


NOT_SHOWN = -1  # _wbits: an encoding whose body the log does not show


def _wbits(encoding: str) -> int | None:
    """zlib's window bits for a Content-Encoding, None for none (`identity`), or NOT_SHOWN
    for one whose body is not shown: more than one, or one the standard library cannot
    read."""
    name = encoding.strip().lower()
    if name in ("", "identity"):
        return None
    if name in ("gzip", "x-gzip"):
        return 31
    if name == "deflate":
        return 47  # zlib-wrapped, as the RFC says (or gzip)
    return NOT_SHOWN


async def _request(method: str, url: str, kwargs: dict[str, Any], verify: ssl.SSLContext,
                   ctx: RunContext, answered: list[RunResult],
                   secrets: tuple[bytes, ...] = (), *, secret_path: bool = False,
                   proxy: tuple[str, str] | None = None) -> RunResult:
    """`proxy`: proxy_for's answer for this URL (the variable's name, the proxy)."""
    status: int | None = None  # once the answer's status line is in
    if proxy is not None:
        ctx.log.note(f"through the proxy {log_url(proxy[1])} (${proxy[0]})")

    async def seen(response: httpx.Response) -> None:
        """The status, judged as soon as it is in: as a response hook, before httpx reads a
        3xx's Location (one it cannot parse raised with the status unseen, and the run
        was retried, a POST sent again each time)."""
        nonlocal status
        if status is not None:
            return
        status = response.status_code
        ctx.log.note(f"HTTP {response.status_code} {response.reason_phrase}".rstrip())
        if 300 <= status < 400 and response.headers.get("location"):
            ctx.log.note(f"Location: {_location(response.headers['location'], secret_path, secrets)}")
        answered.append(_by_status(status, response.headers.get("retry-after"), ctx))

    reading = False  # the body is being read (else: httpx still making the answer)
    ctx.starting()
    try:
        async with (
            httpx.AsyncClient(timeout=None, follow_redirects=False, trust_env=False,
                              verify=verify, proxy=proxy[1] if proxy else None,
                              event_hooks={"response": [seen]}) as client,
            client.stream(method, url, **kwargs) as response,
        ):
            await seen(response)
            reading = True
            await _log_body(response, ctx, secrets)
    except httpx.HTTPError as exc:
        if status is None or isinstance(exc, httpx.LocalProtocolError):
            return _not_answered(exc, ctx, secrets)
        # The status is in and the endpoint has acted on the request; only the body (which
        # is not needed, as for one cut at the cap) broke off, or the Location of a 3xx not
        # followed is no URL: the status decides, and a retry does not send a
        # non-idempotent request again.
        ctx.log.note(f"the answer's body broke off: {_said(exc)}" if reading
                     else "its Location is not a valid URL")
    except (httpx.InvalidURL, ValueError) as exc:
        if answered:  # a 3xx's Location httpx cannot read (`https://xn--/`): the status decides
            ctx.log.note("its Location is not a valid URL")
            return answered[0]
        # A URL or header value httpx refuses; its message may quote the value (a token).
        reason = f"request failed: the URL or a header value is not valid ({type(exc).__name__})"
        ctx.log.note(reason)
        return RunResult("failed", reason=reason)
    assert answered
    return answered[0]


def _location(location: str, secret_path: bool, secrets: tuple[bytes, ...]) -> str:
    """A 3xx's Location as logged: without credentials or query, and where the URL is a
    secret (`{env:}`), without its path too, as the request's own line: a redirect to
    https or to a trailing `/` names the same secret path. What the request carried that
    is secret is scrubbed (an endpoint may put it in its redirect)."""
    return _scrubbed(log_url(location, path=not secret_path), secrets)


def _scrubbed(text: str, secrets: tuple[bytes, ...]) -> str:
    """`text` without what the request carried that is secret (sent_secrets)."""
    for secret in secrets:
        text = text.replace(secret.decode(errors="replace"), redact.REDACTED)
    return text


def sent_secrets(rendered: Mapping[str, Any], url: str, headers: Mapping[str, bytes],
                 proxy: str | None = None) -> tuple[bytes, ...]:
    """What the request carried that the stored action shows `[redacted]`: secret-named
    headers' values (and a `Bearer`'s token alone), `{env:}` headers, the URL's credentials,
    and an `{env:}` URL's path and query (Slack's token is in the path). An endpoint that
    echoes the request (a debug endpoint, a proxy's error page) must not put them in the
    run's log and a `?wait` answer."""
    env_headers = {k.lower() for k in rendered.get(HEADERS_ENV) or {}}
    found: set[bytes] = set()
    for name, value in headers.items():
        if name.lower() in env_headers or redact.secret_key(name):
            found.add(value)
            found.add(value.partition(b" ")[2])  # `Bearer <token>`: the token, quoted alone
    parts = urlsplit(url)
    found.update(_credentials(parts))
    if URL_ENV in rendered:
        # Whole, and as an echo shows them apart or decoded (httpbin's `args`: each query
        # value alone, `%2F` as `/`); the path's segments too (Slack's token is one).
        pieces = [parts.path, parts.query, unquote(parts.path), unquote_plus(parts.query)]
        pieces += [value for _, value in parse_qsl(parts.query, keep_blank_values=True)]
        pieces += [pair.partition("=")[2] for pair in parts.query.split("&")]
        pieces += parts.path.split("/") + [unquote(seg) for seg in parts.path.split("/")]
        found.update(p.encode() for p in pieces if p)
    if proxy is not None:  # its credentials go as Proxy-Authorization, which it may echo
        found.update(_credentials(urlsplit(proxy)))
    # As an endpoint echoing the request as JSON writes them: `"`, `\`, and non-ASCII
    # escaped, `/` as `\/` too (PHP's json_encode; AWS keys and base64 tokens hold `/`),
    # `&`, `<`, `>` as `\u0026`... (Go's encoding/json). Only of values long enough to be
    # looked for at all: `/api/v2` escaped would garble every echo of its path.
    for value in [v for v in found if len(v) >= SENT_SECRET_MIN]:
        text = value.decode("utf-8", "replace")
        for escaped in (json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1]):
            found.update((escaped.encode(), escaped.replace("/", "\\/").encode(),
                          escaped.translate(_GO_ESCAPES).encode()))
    # Longer than redact's: `X-Auth-Enabled: true` would garble every `true` of the answer.
    return tuple(sorted((v for v in found if len(v) >= SENT_SECRET_MIN), key=len, reverse=True))


def _credentials(parts: SplitResult) -> set[bytes]:
    """A URL's user name and password, and both as Basic auth sends them."""
    found = {p.encode() for p in (parts.username, parts.password) if p}
    if parts.username is not None:  # sent as Basic auth: as it is on the wire, too
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        found.add(base64.b64encode(pair))
    return found


SENT_SECRET_MIN = 8
_GO_ESCAPES = str.maketrans({"&": "\\u0026", "<": "\\u003c", ">": "\\u003e"})


class _Scrubbing:
    """The answer's bytes into the log with `secrets` replaced, one split across two reads
    included (the last bytes that could begin one wait for the next read)."""

    def __init__(self, ctx: RunContext, secrets: tuple[bytes, ...]) -> None:
        self.ctx, self.secrets = ctx, secrets
        self.held = b""
        self.keep = max((len(s) for s in secrets), default=1) - 1

    def write(self, data: bytes) -> None:
        if not self.secrets:
            self.ctx.log.write(data)
            return
        text = self.held + data
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        cut = max(0, len(text) - self.keep)
        self.held = text[cut:]
        self.ctx.log.write(text[:cut])

    def flush(self, cut: bool = False) -> None:
        """What is held; `cut`: the answer is cut off here (its cap, a bad encoding), so a
        held end that begins a secret is the start of one: `[redacted]`, not its bytes."""
        held = self.held
        if cut:  # (a start of 4 bytes or more: shorter ones are any text's)
            for start in range(max(0, len(held) - 3)):
                if any(s.startswith(held[start:]) for s in self.secrets):
                    held = held[:start] + REDACTED
                    break
        self.ctx.log.write(held)
        self.held = b""


REDACTED = redact.REDACTED.encode()


async def _log_body(response: httpx.Response, ctx: RunContext,
                    secrets: tuple[bytes, ...] = ()) -> None:
    """The first RESPONSE_LOG_CAP bytes of the answer into the run log, with `secrets`
    (sent_secrets) scrubbed. Read as sent and unpacked here, at most that much: httpx would
    unpack a whole network read at once, and a few KB of gzip can unpack to gigabytes."""
    out = _Scrubbing(ctx, secrets)
    try:
        await _log_pieces(response, ctx, out)
    finally:
        out.flush()


async def _log_pieces(response: httpx.Response, ctx: RunContext, out: _Scrubbing) -> None:
    encoding = response.headers.get("content-encoding", "")
    wbits = _wbits(encoding)
    if wbits == NOT_SHOWN:
        ctx.log.note(f"the answer's body is {encoding}-encoded: not shown")
        return
    unpacker = None if wbits is None else functools.partial(zlib.decompressobj, wbits=wbits)
    decoder = None if unpacker is None else unpacker()
    kept, piece, sent, read, members = 0, b"", False, 0, 1
    async for chunk in response.aiter_raw():
        sent = sent or bool(chunk)
        read += len(chunk)
        room = RESPONSE_LOG_CAP - kept
        try:
            if decoder is None or unpacker is None:
                piece = chunk[:room]
            else:
                piece = decoder.decompress(decoder.unconsumed_tail + chunk, room)
                while decoder.eof and decoder.unused_data and len(piece) < room:
                    # gzip's members one after another (`cat a.gz b.gz`): one text
                    members += 1
                    if members > MAX_MEMBERS:
                        out.write(piece)
                        out.flush(cut=True)
                        ctx.log.note(f"the answer's body has more than {MAX_MEMBERS} "
                                     f"{encoding} members: not shown further")
                        return
                    rest, decoder = decoder.unused_data, unpacker()
                    piece += decoder.decompress(rest, room - len(piece))
        except zlib.error:
            out.flush(cut=True)
            ctx.log.note(f"the answer's body is not valid {encoding}: not shown further")
            return
        if read > RAW_LOG_CAP and kept + len(piece) < RESPONSE_LOG_CAP:
            # Empty gzip members or deflate blocks, without end: each costs the event loop
            # CPU and unpacks to nothing, so the cap on what is shown was never reached.
            out.write(piece)
            out.flush(cut=True)
            ctx.log.note(f"the answer's {encoding} body unpacks to less than "
                         f"{RESPONSE_LOG_CAP} bytes in its first {RAW_LOG_CAP}: not shown "
                         "further")
            return
        out.write(piece)
        kept += len(piece)
        if kept >= RESPONSE_LOG_CAP:
            out.flush(cut=True)
            ctx.log.note(f"response body cut at {RESPONSE_LOG_CAP} bytes")
            return
    if piece and not piece.endswith(b"\n"):
        out.write(b"\n")
    out.flush()
    if decoder is not None and not decoder.eof and sent:
        ctx.log.note(f"the answer's {encoding} body ended before its end")


MAX_RETRY_AFTER = 1e9  # seconds: "never" already (the rule's max_backoff bounds the wait)
# Client errors a retry can change: a timeout, "too early", "too many requests".
RETRIED_4XX = frozenset({408, 425, 429})
LOOP_DETECTED = 508  # a hook's answer past hops.MAX_HOPS
LOOP_NOTE = (" (not retried: Loop Detected; from a hookrunner hook, the request went through "
             f"{hops.MAX_HOPS} http actions of hookrunner rules in a row: a rule posts to a "
             "hook that leads back to it)")
NOT_RETRIED_STATUS = (" (not retried: the same request would get the same {} answer; only a"
                      " 5xx, 408, 425 or 429 is retried)")


def _by_status(status: int, retry_after: str | None, ctx: RunContext) -> RunResult:
    """The run's outcome as the answer's status decides it. A 3xx (not followed) and a 4xx
    other than RETRIED_4XX come back the same for the same request, so they are not retried;
    a `Retry-After` sets the least wait before a retry."""
    outputs = {"status": status}
    if 200 <= status < 300:
        return RunResult("succeeded", outputs=outputs)
    if 300 <= status < 500 and status not in RETRIED_4XX:
        return RunResult("failed", reason=f"HTTP {status}", outputs=outputs, final=True,
                         final_note=NOT_RETRIED_STATUS.format(f"{status // 100}xx"))
    if status == LOOP_DETECTED:  # (hookrunner.hops) every retry would be refused the same
        return RunResult("failed", reason=f"HTTP {status}", outputs=outputs, final=True,
                         final_note=LOOP_NOTE)
    wait = None if retry_after is None else retry_after_seconds(retry_after, time.time())
    if wait is not None:
        ctx.log.note(f"Retry-After: {wait:.0f}s" if wait >= 1e6 else f"Retry-After: {wait:g}s")
    elif retry_after is not None:
        ctx.log.note("Retry-After is neither seconds nor an HTTP date: ignored")
    return RunResult("failed", reason=f"HTTP {status}", outputs=outputs, retry_after=wait)


def retry_after_seconds(value: str, now: float) -> float | None:
    """A `Retry-After` value (RFC 9110 10.2.3: whole seconds, or an HTTP date) as seconds
    from `now`, 0 for a date past; None for anything else."""
    value = value.strip()
    if value.isdigit() and value.isascii():
        digits = value.lstrip("0") or "0"  # (int() of 4,300 digits or more raises)
        return float(int(digits)) if len(digits) <= 9 else MAX_RETRY_AFTER
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # `-0000`: RFC 5322's "no zone known"; HTTP dates are GMT
        when = when.replace(tzinfo=datetime.UTC)
    return min(max(0.0, round(when.timestamp() - now, 3)), MAX_RETRY_AFTER)


def _not_answered(exc: httpx.HTTPError, ctx: RunContext,
                  secrets: tuple[bytes, ...] = ()) -> RunResult:
    if isinstance(exc, httpx.LocalProtocolError):
        # The client refused what it was to send (h11 quotes the header value: a token).
        reason = f"request failed: the request could not be sent ({type(exc).__name__})"
    else:
        # (a proxy's or a library's words may quote what was sent)
        reason = _scrubbed(f"request failed: {_said(exc)}", secrets)
    ctx.log.note(reason)
    return RunResult("failed", reason=reason)


# h11 quotes what it received (`illegal status line: bytearray(b'POST /T0001/secret...')`):
# an endpoint that is no HTTP server, echoing the request, put its URL and headers, secrets
# included, in the run's reason, the `?wait` answer and the server's log.
_RECEIVED = re.compile(r":\s*(bytearray\(|b'|b\")")


def _said(exc: httpx.HTTPError) -> str:
    said = str(exc) or _UNSAID.get(type(exc), "")
    if isinstance(exc, httpx.RemoteProtocolError) and (quoted := _RECEIVED.search(said)):
        said = said[:quoted.start()] + " (what was received is not shown)"
    cause = _os_cause(exc)
    if cause is not None and cause not in said:  # "All connection attempts failed": why
        said = f"{said} ({cause})" if said else cause
    return f"{type(exc).__name__}: {said}".rstrip(": ")


def _os_cause(exc: BaseException) -> str | None:
    """The operating system's word on a failure httpx wraps (`connection refused`)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        # An SSLError's errno is OpenSSL's error kind (1: SSL_ERROR_SSL), not the system's:
        # read as EPERM it said "(operation not permitted)" after every certificate error.
        if isinstance(cause, OSError) and not isinstance(cause, ssl.SSLError) \
                and cause.errno is not None and cause.errno > 0:
            return os.strerror(cause.errno).lower()
        cause = cause.__cause__ or cause.__context__
    return None


register(HttpRunner())

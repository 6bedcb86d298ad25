"""Hide secret-looking values: of a rendered action before the API or the console shows it,
and of a delivery's headers and query parameters before they are stored.

The store keeps the action as it runs (the dispatcher needs it) until the run ends, and then
only with its hidden values redacted (ended_spec, below); its display is always redacted.
A delivery's request is redacted before it is journaled (nothing secret in the store), so a
replay sees `[redacted]` there too.

One rule names what is secret-looking (`secret_key`), for action keys, header names and
query parameter names alike: a name containing one of SECRET_WORDS (`API_TOKEN`,
`db_password`, `X-Auth-Token`, `Stripe-Signature`, `X-Api-Key`, `Cookie`), or with one of
SECRET_PARTS as a whole `-`/`_`-separated part (`X-Auth`, `sig`, `X-Pass`), or exactly `key`
or `code` (query parameters of API keys, Azure Functions' key). Every value of an http
action's `headers` is hidden, and so is the password part of a URL (or its user name,
where it has no password: then that is the credential).

A delivery's rule explanations show each condition's value: one that reads a secret-named
header or query value is stored without it (templating.request_keys, rules.match).
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from hookrunner import hops

REDACTED = "[redacted]"
# Where a rendered action lists the places of its values rendered from secret request values.
HIDDEN_PATHS = "hidden_paths"
# An http action's environment references (actions.http URL_ENV, HEADERS_ENV): variable
# names, shown as they are (the values never enter the spec).
ENV_NAMES = frozenset({"url_env", "headers_env"})
URL_FIXED = "url_fixed"  # actions.http URL_FIXED: kept with the run, never shown
URL_HOLES = "url_holes"  # actions.http URL_HOLES: the same
PROGRAM_TEMPLATED = "program_templated"  # actions.shell's: kept with the run, never shown
PATHS_WRITTEN = "paths_written"  # actions.paths.written_dirs: the same
# (hops.KEY: actions.http's count of hops, kept with the run, never shown)
OWN_CHECKS = frozenset({URL_FIXED, URL_HOLES, PROGRAM_TEMPLATED, PATHS_WRITTEN,
                        hops.KEY})  # not the rule's
SECRET_WORDS = ("password", "passwd", "passphrase", "token", "secret", "authorization",
                "authentication", "api_key", "apikey", "private_key", "access_key", "credential",
                "cookie", "session", "signature", "hmac", "jwt", "bearer", "functions_key",
                "subscription_key", "signing_key", "webhook_key", "client_key", "master_key")
_JOINED_WORDS = tuple(dict.fromkeys(w.replace("_", "") for w in SECRET_WORDS))
# Parts too short to look for inside longer words (`author`, `design`, `bypass`). Not `key`:
# `X-Event-Key` (Bitbucket's event) and `Idempotency-Key` are no secrets.
SECRET_PARTS = frozenset({"auth", "sig", "pwd", "pass"})
# `?code=` is Azure Functions' key parameter (or an OAuth code), as a whole name only.
SECRET_NAMES = frozenset({"key", "code"})
# Named like secrets, but they are senders' delivery ids (kept as the delivery's dedup key).
NOT_SECRET = frozenset({"i_twilio_idempotency_token"})
_KNOWN: dict[str, bool] = {}  # secret_key's verdicts, by name
_KNOWN_MAX = 1024
_KNOWN_NAME = 64  # longer names are not kept
_URL_START = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_PARTS = re.compile(r"[^a-z0-9]+")


def secret_key(name: str) -> bool:
    # Every header of every delivery is judged: the same few dozen names, so remember them
    # (~1 us each otherwise); a long, made-up name is judged afresh and never kept, and a
    # sender's stream of made-up names empties the memory rather than growing it.
    secret = _KNOWN.get(name)
    if secret is None:
        secret = _judge(name)
        if len(name) <= _KNOWN_NAME:
            if len(_KNOWN) >= _KNOWN_MAX:
                _KNOWN.clear()
            _KNOWN[name] = secret
    return secret


def _judge(name: str) -> bool:
    lowered = name.lower().replace("-", "_")
    if lowered in NOT_SECRET:
        return False
    # Also with the separators dropped: `privateKey`, `accessKey` and a header's lowered
    # `x-accesskey` were shown (only `apikey` was listed joined).
    joined = lowered.replace("_", "")
    return (lowered in SECRET_NAMES or any(w in joined for w in _JOINED_WORDS)
            or not SECRET_PARTS.isdisjoint(_PARTS.split(lowered)))


def redact_pairs(pairs: Iterable[tuple[str, str]], also: Iterable[str] = ()) -> list[tuple[str, str]]:
    """Headers or query parameters with secret-looking values (and those named in `also`,
    case-insensitive: a verifier's own headers) replaced by REDACTED."""
    named = {a.lower() for a in also}
    if named:
        return [(k, REDACTED if k.lower() in named or secret_key(k) else v) for k, v in pairs]
    # Every delivery's headers come here: a name judged before is one lookup in
    # secret_key's memory, not a call.
    known = _KNOWN.get
    return [(k, REDACTED if (secret := known(k)) or (secret is None and secret_key(k)) else v)
            for k, v in pairs]


def redact_spec(spec: Any, action: str = "") -> Any:
    """A copy of `spec` with secret values replaced by REDACTED: those under secret-looking
    keys, and those at the HIDDEN_PATHS the spec lists (values rendered from secret headers
    or query parameters: ingest._new_run)."""
    shown = _walk(spec, headers_secret=action == "http")
    if isinstance(shown, dict):
        shown.pop(HIDDEN_KEY, None)
        for key in OWN_CHECKS:  # an action's own checks (actions.http, .shell), not the rule's
            shown.pop(key, None)
    if isinstance(shown, dict) and isinstance(spec, dict):
        if action == "http":
            shown.update({k: spec[k] for k in ENV_NAMES if k in spec})
        for path in shown.pop(HIDDEN_PATHS, None) or ():
            _hide_at(shown, path)
    return shown


HIDDEN_KEY = "hidden_concurrency_key"  # true: the run's concurrency key read a secret
MIN_SCRUBBED = 4  # shorter values are not scrubbed from text: they would garble it


def shown_key(key: str | None, spec: Any) -> str | None:
    """A run's concurrency key as the API and the console show it."""
    hidden = key is not None and isinstance(spec, dict) and spec.get(HIDDEN_KEY)
    return REDACTED if hidden else key


def hidden_values(spec: Any) -> tuple[str, ...]:
    """The texts at a spec's HIDDEN_PATHS (as the action gets them), longest first."""
    found: set[str] = set()
    if isinstance(spec, dict):
        for path in spec.get(HIDDEN_PATHS) or ():
            value = _follow(spec, path) if isinstance(path, list) else None
            for text in _texts(value):
                found.update(_quoted_forms(text))
    return tuple(sorted((t for t in found if len(t) >= MIN_SCRUBBED), key=len, reverse=True))


def named_secret_values(spec: Any) -> tuple[str, ...]:
    """The texts under a spec's secret-looking keys (a terraform var `db_password`), longest
    first: shown `[redacted]` in the spec, so an output echoing one must not show it."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if secret_key(str(k)):
                    found.update(_texts(v))
                else:
                    walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(spec)
    return tuple(sorted((t for t in found if len(t) >= MIN_SCRUBBED), key=len, reverse=True))


TF_VAR = "TF_VAR_"


def passed_secret_values(environ: Mapping[str, str], pass_env: Iterable[str]) -> tuple[str, ...]:
    """The values of Terraform variables passed to actions under a secret-looking name
    (`serve --pass-env TF_VAR_db_password`), judged as a rule's `vars` name is: kept out of
    the rules, they must not show in a stored output where the same var given in `vars` is
    `[redacted]`."""
    found = {environ[name] for name in pass_env if name.startswith(TF_VAR)
             and name in environ and secret_key(name.removeprefix(TF_VAR))}
    return tuple(t for t in found if len(t) >= MIN_SCRUBBED)


def _quoted_forms(text: str) -> set[str]:
    """`text`, and the forms an error may quote it in: as an http action logs a URL (log_url:
    one that is no URL, `cb.example/x?t=1`, is quoted up to its `?`; not for text with a
    space, which is no URL however cut), and as a path resolved (a program or `cwd` is
    named so: `a//b` as `a/b`; after a `..`, only what follows the last one, which is what
    the template put there: `scripts/../x.sh` as `x.sh`)."""
    forms = {text}
    if not any(c.isspace() for c in text):
        forms.add(log_url(text))
    if "/" in text:
        parts = text.split("/")
        if ".." in parts:
            tail = "/".join(parts[len(parts) - parts[::-1].index(".."):])
            if tail:
                forms.add(posixpath.normpath(tail))
        else:
            forms.add(posixpath.normpath(text))
    return forms


def _texts(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _texts(v)] + [json.dumps(value)]
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)] + [json.dumps(value)]
    return [json.dumps(value)]


def scrub(text: str, values: tuple[str, ...]) -> str:
    """`text` with each of `values` (and its repr, as an error message quotes it) replaced."""
    for value in values:
        if value in text:
            text = text.replace(value, REDACTED)
        quoted = repr(value)[1:-1]
        if quoted != value and quoted in text:
            text = text.replace(quoted, REDACTED)
    return text


def scrub_tree(value: Any, values: tuple[str, ...]) -> Any:
    """`value` (JSON: a terraform action's outputs) with `values` scrubbed from its texts
    and keys; a number that is one of them (a PIN passed as a var) is REDACTED."""
    if isinstance(value, str):
        return scrub(value, values)
    if isinstance(value, dict):
        return {scrub(str(k), values): scrub_tree(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_tree(v, values) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool) and \
            json.dumps(value) in values:
        return REDACTED
    return value


def log_url(url: str, *, path: bool = True) -> str:
    """The URL without credentials or query (either may hold a token), for the log; without
    its path too where `path` is False: a URL kept in `{env: NAME}` is kept there because it
    is a secret, and Slack's or Teams' incoming webhooks carry their token in the path."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:  # IPv6, as the URL writes it
            host = f"[{host}]"
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:  # `http://[::1`, a port past 65535: say no more than the scheme
        return f"{url.partition(':')[0][:16]}:<not a valid URL>"
    return urlunsplit((parts.scheme, host, parts.path if path else "/...", "", ""))


def _follow(tree: Any, steps: list[Any]) -> Any:
    """The value at `steps` (keys and indexes) in `tree`, or None where there is none."""
    for step in steps:
        try:
            tree = tree[step]
        except (KeyError, IndexError, TypeError):
            return None
    return tree


def _hide_at(tree: Any, path: Any) -> None:
    if not isinstance(path, list) or not path:
        return
    *parents, last = path
    tree = _follow(tree, parents)
    in_list = isinstance(tree, list) and isinstance(last, int) and -len(tree) <= last < len(tree)
    if in_list or (isinstance(tree, dict) and last in tree):
        tree[last] = REDACTED


def _walk(value: Any, *, headers_secret: bool) -> Any:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            key = str(k)
            if secret_key(key) or (headers_secret and key.lower() == "headers" and isinstance(v, dict)):
                out[key] = _hide(v)
            else:
                out[key] = _walk(v, headers_secret=headers_secret)
        return out
    if isinstance(value, list | tuple):
        return [_walk(v, headers_secret=headers_secret) for v in value]
    if isinstance(value, str):
        return redact_url(value)
    return value


def _hide(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): REDACTED for k in value}
    return REDACTED


def redact_url(text: str) -> str:
    """`https://user:pw@host/x?api_key=k&ref=main` ->
    `https://user:[redacted]@host/x?api_key=[redacted]&ref=main`; a user name without a
    password is the credential itself (`https://ghp_token@github.com/...`, Stripe's
    `sk_live_...:`), and is hidden instead. Other text unchanged, to the character (put
    back together, a URL loses a tab or an empty `?`: the API showed other text than ran)."""
    if not _URL_START.match(text):
        return text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:  # not a URL after all
        return text
    original = parts
    if parts.username is not None or parts.password is not None:
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        netloc = f"{parts.username or ''}:{REDACTED}@{host}" if parts.password \
            else f"{REDACTED}@{host}"
        if port is not None:
            netloc += f":{port}"
        parts = parts._replace(netloc=netloc)
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        if any(secret_key(name) for name, _ in pairs):
            parts = parts._replace(query=urlencode(redact_pairs(pairs), safe="[]"))
    if "=" in parts.fragment:  # `#access_token=...` (OAuth's implicit flow): never sent, but kept
        pairs = parse_qsl(parts.fragment, keep_blank_values=True)
        if any(secret_key(name) for name, _ in pairs):
            parts = parts._replace(fragment=urlencode(redact_pairs(pairs), safe="[]"))
    return text if parts == original else urlunsplit(parts)


# A run's stored spec holds the real values at its HIDDEN_PATHS (and its concurrency key the
# real key, under HIDDEN_KEY) only while the run may still run: every statement that ends a
# run stores them through these (SQLite: as SQL functions of the connection; PostgreSQL: the
# same functions in migration 0006; the memory store calls them). They never raise: a spec
# they cannot read is kept as it is rather than fail the statement that ends the run.

def ended_spec(spec: Any) -> Any:
    """`spec` with the values at its HIDDEN_PATHS replaced by REDACTED (in place; returned)."""
    paths = spec.get(HIDDEN_PATHS) if isinstance(spec, dict) else None
    if isinstance(paths, list):
        for path in paths:
            with contextlib.suppress(Exception):  # a path of a shape no template makes
                _hide_at(spec, path)
    return spec


def ended_spec_text(text: Any) -> Any:
    """ended_spec of a spec stored as JSON text (SQLite's column)."""
    if not isinstance(text, str) or f'"{HIDDEN_PATHS}"' not in text:
        return text  # most runs: nothing to do, and no parse
    try:
        return json.dumps(ended_spec(json.loads(text)), separators=(",", ":"))
    except Exception:  # never fail the statement that ends the run
        return text


# How the stored spec (compact JSON: store._rows.dumps) says its key was made from a secret;
# read as text, since the spec may be megabytes (an http body) and this runs on every end.
_HIDDEN_KEY_TEXT = f'"{HIDDEN_KEY}":true'


def ended_key(spec: Any, key: Any) -> Any:
    """A run's concurrency key as it is kept once the run has ended: REDACTED where it was
    rendered from a secret (HIDDEN_KEY)."""
    if key is None:
        return None
    hidden = _HIDDEN_KEY_TEXT in spec if isinstance(spec, str) else \
        shown_key(key, spec) == REDACTED
    return REDACTED if hidden else key

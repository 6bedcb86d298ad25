"""What each CLI command does (the parsing is in cli.py)."""

from __future__ import annotations

import errno
import json
import logging
import os
import pwd
import signal
import stat
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from hookrunner.errors import ConfigErrors, HookrunnerError, StartupRefused, StoreUnavailable
from hookrunner.settings import Settings
from hookrunner.store.base import RUN_STATUSES, Delivery, Store
from hookrunner.units import utc_iso

if TYPE_CHECKING:  # the commands import what they use as they run: a quick CLI start
    from hookrunner.rules.model import Ruleset
    from hookrunner.verify.base import Headers

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_STARTUP = 3  # the server could not start (as uvicorn's own command says)
# A `?wait=` answers by the grace and this many seconds into a stop: before uvicorn's
# cut-off at the grace + 5 s (timeout_graceful_shutdown below).
WAIT_ANSWER_MARGIN = 2.0


def serve(settings: Settings) -> int:
    from hookrunner import preflight
    from hookrunner.logs import event, setup_logging

    try:
        preflight.check_files(settings)
    except preflight.UsageError as exc:
        print(f"hookrunner: {exc}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(settings.log_format)
    from hookrunner.procguard import not_dumpable

    if (why := not_dumpable()) is not None and why != "not on Linux":
        event("server.still_dumpable", logging.WARNING, reason=why,
              effect="actions may read this server's environment and memory")
    for low in preflight.resource_limits(settings):
        event("server.limit_low", logging.WARNING, limit=low)
    for everyone in preflight.trusts_everyone(settings):
        event("server.trusts_every_peer", logging.WARNING, trusted_proxy=everyone,
              effect="any client names its own address in X-Forwarded-For: allow_ips, "
                     "per-client rate limits and client_ip believe it",
              hint="name the load balancers' own addresses or network")
    try:
        preflight.data_dir(settings)
        preflight.tls(settings)
        if settings.http_workers > 1:
            from hookrunner import multiproc

            return multiproc.serve(settings)
        sockets = preflight.listen(settings.host, settings.port)
    except StartupRefused as exc:
        event("server.refused", logging.ERROR, reason=str(exc))
        return EXIT_STARTUP
    from hookrunner.app import create_app

    settings = replace(settings, port=sockets[0].getsockname()[1])  # --port 0: the one it got
    app = create_app(settings)
    server = _server(uvicorn_config(app, settings), app)
    try:
        server.run(sockets=sockets)
    except SystemExit as exc:  # uvicorn's exit when the app did not start
        if exc.code != EXIT_STARTUP or getattr(app.state, "refused", None) is None:
            raise
    if not server.started:
        return EXIT_STARTUP
    # Stopped by a signal that uvicorn's re-raise did not end us with (one this process
    # inherited as ignored: a shell's background job ignores SIGINT): the status says so.
    if server.exit_code:
        return int(server.exit_code)
    return 128 + server.exit_signal if server.exit_signal else EXIT_OK


def uvicorn_config(app: Any, settings: Settings) -> Any:
    import uvicorn

    return uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=None, access_log=False,
        http=_http_protocol(),
        ws="none",  # no WebSocket endpoint: an upgrade request is an ordinary request
        # uvicorn would believe X-Forwarded-For from 127.0.0.1 by default; only --trusted-proxy
        # decides that (hookrunner.clientip).
        proxy_headers=False,
        ssl_certfile=settings.ssl_certfile or None, ssl_keyfile=settings.ssl_keyfile or None,
        timeout_graceful_shutdown=int(settings.grace) + 5, server_header=False,
    )


class _QuietRefusal(logging.Filter):
    """Once the app has said why it does not start (app.refuse), uvicorn's own account
    (the lifespan's traceback, "Application startup failed") adds only noise."""

    def __init__(self, app: Any) -> None:
        super().__init__()
        self.app = app

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(self.app.state, "refused", None) is None


def _server(config: Any, app: Any, stop_signal: int | None = None,
            main_gone_signal: int | None = None) -> Any:
    """uvicorn's server, but SIGTERM/SIGINT also stop the dispatcher taking work at once.

    uvicorn first waits for open HTTP requests (a `?wait=` may take long) and only then runs
    the lifespan shutdown; this way the grace period of running runs counts from the signal.
    A second stop cancels the running runs at once (cleanly, and recorded).

    `stop_signal`: a process of `--http-workers`. Its supervisor passes each stop asked of
    the server on as this signal, and only those are counted: one Ctrl-C, or one signal to
    the whole process group, also reaches each process itself (the same stop again). A
    SIGTERM or SIGINT to this process alone (or its supervisor's death) is a first stop.
    `main_gone_signal`: an HTTP worker's main process died. Nothing will end the runs a
    `?wait` waits for, so it stops and answers them at once (a `202`): waiting out the grace
    period kept the supervisor, and so the server, from being restarted."""
    import uvicorn

    logging.getLogger("uvicorn.error").addFilter(_QuietRefusal(app))

    class Server(uvicorn.Server):
        stops = 0
        stopping = False
        interrupted_only = True  # every stop so far a Ctrl-C: the exit status says 130
        exit_signal = 0
        exit_code = 0  # shut_down's: the status the server exits with

        def shut_down(self, code: int) -> None:
            """A stop the server decides itself (Gateway.shut_down), as a SIGTERM."""
            self.exit_code = code
            captured = getattr(self, "_captured_signals", None)
            signalled = bool(captured)
            self.handle_exit(signal.SIGTERM, None)
            if captured is not None and not signalled:
                captured.clear()  # no signal to re-raise at the end: the status is `code`

        def handle_exit(self, sig: int, frame: Any) -> None:
            if sig != signal.SIGINT or stop_signal is not None:
                self.interrupted_only = False
            if stop_signal is None or sig == stop_signal:
                self.stops += 1
            elif self.stopping:
                return  # another copy of the stop under way
            self.stopping = True
            # An extra HTTP worker process has no dispatcher of its own to stop.
            gw = app.state.gateway
            gw.stopping = True
            if gw.answer_by is None:  # see ingest._stop_deadline
                gw.answer_by = time.monotonic() + gw.settings.grace + WAIT_ANSWER_MARGIN
            stop = getattr(app.state.gateway.dispatcher, "begin_stop_threadsafe", None)
            if stop is not None:
                stop(now=self.stops > 1)
            # Never uvicorn's forced exit (a SIGINT after a stop signal): it skips the
            # lifespan shutdown, so nothing records how the running runs ended.
            super().handle_exit(signal.SIGTERM, frame)
            self.exit_signal = signal.SIGINT if self.interrupted_only else signal.SIGTERM
            captured = getattr(self, "_captured_signals", None)
            if captured:  # re-raised once stopped, one of them: the exit status says which
                captured[:] = [self.exit_signal]

        def main_gone(self, sig: int, frame: Any) -> None:
            app.state.gateway.answer_by = time.monotonic()  # see ingest._stop_deadline
            self.handle_exit(signal.SIGTERM, frame)

        def run(self, *args: Any, **kwargs: Any) -> None:
            if stop_signal is not None:
                signal.signal(stop_signal, self.handle_exit)
            if main_gone_signal is not None:
                signal.signal(main_gone_signal, self.main_gone)
            super().run(*args, **kwargs)

    server = Server(config)
    app.state.gateway.shut_down = server.shut_down
    return server


def _http_protocol() -> Any:
    """httptools with a bounded request head (see httpproto); h11 bounds its own."""
    try:
        from hookrunner.httpproto import BoundedHttpToolsProtocol
    except ImportError:  # httptools not installed: uvicorn picks h11
        return "auto"
    return BoundedHttpToolsProtocol


def check(settings: Settings, secrets: bool = True) -> int:
    """`secrets`: read the hooks' secrets too, as `serve` will (False: `--without-secrets`)."""
    from hookrunner.rules.load import load_rules
    from hookrunner.rules.report import format_check
    from hookrunner.verify.secrets import SecretUnavailable

    try:
        ruleset = load_rules(settings.rules, root=settings.root, strict=True,
                             secrets_required=secrets)
    except ConfigErrors as exc:
        print(format_check(exc), file=sys.stderr)
        if all(isinstance(e, SecretUnavailable) for e in exc.errors):
            print("(only secrets are missing: `check --without-secrets` checks the rest, as a "
                  "CI job without them would)", file=sys.stderr)
        return EXIT_FAIL
    *warnings, summary = format_check(ruleset).split("\n")
    if warnings:  # on standard error, as a failed check's (`check > /dev/null` keeps them)
        print("\n".join(warnings), file=sys.stderr)
    print(summary + ("" if secrets else " (secrets not read)"))
    return EXIT_OK


def _parse_address(text: str) -> str:
    from hookrunner.clientip import is_address, plain

    if not is_address(text.strip()):
        raise HookrunnerError(f"--client-ip {text!r}: not an IP address")
    return plain(text.strip())


def _parse_query(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise HookrunnerError(f"--query {text!r}: expected 'name=value'")
    return name, value


def _parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise HookrunnerError(f"--header {text!r}: expected 'Name: value'")
    # As the server receives it: names lower-cased (`{{ headers }}`), the value's bytes
    # one character each (latin-1), read as UTF-8 where they are (Headers.as_utf8) once
    # the verifier has had them; a byte that is not UTF-8 stays a character of its own.
    return name.strip().lower(), os.fsencode(value.strip(" \t")).decode("latin-1")


def _refused_header(content_type: str | None, encoding: str | None) -> str:
    """The `--header` a 415 answers: parse_body refuses a Content-Encoding before it reads
    the Content-Type."""
    from hookrunner.payload import unsupported_coding

    if unsupported_coding(encoding) is not None:
        return f"--header {f'Content-Encoding: {encoding}'!r}"
    return f"--header {f'Content-Type: {content_type}'!r}"


def _payload_error(name: str, exc: OSError) -> HookrunnerError:
    why = {errno.ENOENT: "no such file", errno.EISDIR: "is a directory",
           errno.EACCES: "permission denied"}.get(exc.errno or 0, exc.strerror or str(exc))
    return HookrunnerError(f"cannot read --payload {name}: {why}")


def _open_payload(name: str) -> BinaryIO:
    """Opened with the command line's checks; read once the hook's max_body is known."""
    try:
        return open(name, "rb")  # closed by dry_run
    except OSError as exc:
        raise _payload_error(name, exc) from None


def _payload_size(f: BinaryIO, head: bytes) -> str:
    """The size of a --payload past max_body: a regular file's, else "more than" what was read
    (a pipe or a device goes on)."""
    try:
        st = os.fstat(f.fileno())
    except OSError:
        st = None
    if st is not None and stat.S_ISREG(st.st_mode):
        return str(st.st_size)
    return f"more than {len(head) - 1}"


def _read_payload(f: BinaryIO, name: str, limit: int) -> bytes:
    """At most `limit` bytes: `--payload /dev/zero` (or a huge file) was read whole, until a
    MemoryError, before its size was compared with max_body."""
    try:
        return f.read(limit)
    except OSError as exc:
        raise _payload_error(name, exc) from None


def dry_run(settings: Settings, mode: str, hook_id: str, payload_file: str, header_args: list[str],
            query_args: Sequence[str] = (), client_ip: str | None = None) -> int:
    """`test` and `explain`: match (and render) against a payload file; runs nothing. `test`
    exits 1 when a matching rule's action cannot be rendered (a CI check catches it)."""
    from hookrunner.verify.base import Headers

    # The command line first: a typo there is a usage error (2), whatever the rules say.
    try:
        headers = Headers(_parse_header(h) for h in header_args)
        query_pairs = [_parse_query(q) for q in query_args]
        if client_ip is not None:
            client_ip = _parse_address(client_ip)
        payload = _open_payload(payload_file)
    except HookrunnerError as exc:
        print(f"hookrunner: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with payload:
        return _dry_run(settings, mode, hook_id, payload_file, payload, headers, query_pairs,
                        client_ip)


def _dry_run(settings: Settings, mode: str, hook_id: str, payload_file: str, payload_io: BinaryIO,
             headers: Headers, query_pairs: list[tuple[str, str]], client_ip: str | None) -> int:
    from hookrunner.payload import PayloadError, as_storable, body_labels, parse_body
    from hookrunner.rules.match import build_scope, evaluate
    from hookrunner.rules.report import dry_run_report, format_explain, render_matched
    from hookrunner.verify.base import Headers, SignedRequest

    query = dict(query_pairs)
    ruleset = _operator_rules(settings)
    if ruleset is None:
        return EXIT_FAIL
    if hook_id not in ruleset.hooks:
        print(f"hookrunner: unknown hook {hook_id!r}; defined: {', '.join(sorted(ruleset.hooks))}",
              file=sys.stderr)
        return EXIT_FAIL
    hook = ruleset.hooks[hook_id]
    if (bad := _refused_query(query_pairs)) is not None:
        print(f"hookrunner: the server answers this request {bad}, and journals and runs "
              "nothing", file=sys.stderr)
        return EXIT_FAIL
    from hookrunner import hops
    from hookrunner.clientip import allowed

    refused = client_ip is not None and bool(hook.allow_ips) and \
        not allowed(client_ip, hook.allow_ips)
    if refused:  # said, and the rules still shown; `test` exits 1 (nothing would run)
        print(f"hookrunner: {client_ip} is not in hook {hook_id!r}'s allow_ips: the server "
              "answers a request from it 403, and journals and runs nothing", file=sys.stderr)
    elif client_ip is None and hook.allow_ips:
        print(f"hookrunner: note: hook {hook_id!r} has allow_ips, and no --client-ip was given: "
              "the server refuses (403) a request from any other address", file=sys.stderr)
    if not refused and (many := hops.too_many(headers)) is not None:
        print(f"hookrunner: the server answers this request 508 (loop detected: "
              f"{hops.HEADER} {many}), and journals and runs nothing", file=sys.stderr)
        return EXIT_FAIL
    try:  # one byte past max_body tells a body too large
        body = _read_payload(payload_io, payload_file, hook.max_body + 1)
    except HookrunnerError as exc:
        print(f"hookrunner: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if len(body) > hook.max_body:  # as the server does, before anything else of the body
        print(f"hookrunner: the body is {_payload_size(payload_io, body)} bytes, past the "
              f"max_body of hook "
              f"{hook_id!r} ({hook.max_body}): the server answers it 413, and journals and "
              "runs nothing", file=sys.stderr)
        return EXIT_FAIL
    try:
        content_type, encoding = body_labels(headers)
    except PayloadError as exc:  # the request's headers, not the file: refused as a 413 is
        print(f"hookrunner: --header: {exc.message} (the server answers it {exc.status}, and "
              "journals and runs nothing)", file=sys.stderr)
        return EXIT_FAIL
    try:
        payload = parse_body(body, content_type, encoding)
    except PayloadError as exc:
        if exc.status == 415:  # the request's header, not the file: refused as a 413 is
            print(f"hookrunner: {_refused_header(content_type, encoding)}: {exc.message} (the "
                  "server answers it 415, and journals and runs nothing)", file=sys.stderr)
            return EXIT_FAIL
        print(f"hookrunner: cannot parse --payload {payload_file}: {exc.message} (the server "
              f"answers it {exc.status})", file=sys.stderr)
        return EXIT_USAGE
    # No signature to check in a dry run: take the event type the way the verifier reads it.
    verifier = hook.verifier
    learned = verifier.learned(SignedRequest(headers=headers, body=body))
    # (cleaned as the server stores it: a NUL or a lone surrogate a body's event type holds)
    event = as_storable(learned.event) if learned.event is not None else None
    source = getattr(verifier, "event_source", None)  # (senders without one have none)
    if event is None and source is not None:
        print(f"hookrunner: note: `event` is null: this sender's event type is read from "
              f"{source}, which the request given lacks"
              + (" (add a header with --header)" if "header" in source else ""),
              file=sys.stderr)
    if learned.reply is not None:  # as the server does: a handshake is answered, not matched
        print(f"{event} is a handshake: the server answers it with {json.dumps(learned.reply)} "
              "and journals and runs nothing (no rule is matched)")
        return EXIT_OK
    if headers.get("content-type") is None:  # as senders send it: rules may read it
        headers = Headers([*headers.items(), ("content-type", "application/json")])
    if headers.get("content-length") is None:  # the server's request always has one here
        headers = Headers([*headers.items(), ("content-length", str(len(body)))])
    # An id like the server's (`delivery_id is match("dlv_")` must hold here too).
    scope = build_scope(hook=hook_id, delivery_id="dlv_dry_run", received_at=time.time(),
                        headers=headers.as_utf8(), query=query, payload=payload, event=event,
                        client_ip=client_ip)
    from hookrunner import bounds

    # The server's one budget for a delivery's conditions and templates together
    # (ingest.plan_runs): past it, the rest do not match or render here either.
    with bounds.delivery():
        results = evaluate(ruleset, hook_id, scope)
        rendered = render_matched(results, scope) if mode == "test" else None
    report = None if rendered is None else dry_run_report(
        results, scope, _refusal(settings), settings.default_timeout, rendered)
    if client_ip is None and any(not r.matched and _reads(r.rule.when, "client_ip")
                                 for r in results):
        print("hookrunner: note: `client_ip` is null without --client-ip, and a rule that did "
              "not match reads it: give the sender's address with --client-ip", file=sys.stderr)
    if report is None:
        print(format_explain(results))
        return EXIT_OK
    print(report.text)
    _say_dedup_key(hook, learned, scope, body, headers.get("content-type"))
    return EXIT_FAIL if report.unrenderable or refused else EXIT_OK


def _refused_query(query: list[tuple[str, str]]) -> str | None:
    """What the server answers a request refused for its query, first of all (ingest.admit;
    a NUL, which it refuses too, cannot come from the command line), or None."""
    from hookrunner.units import parse_duration

    waits = [value for name, value in query if name == "wait"]
    if len(waits) > 1:
        return "400 (wait: given more than once)"
    if waits:
        try:
            parse_duration(waits[0])
        except ValueError as exc:
            return f"400 (wait: {exc})"
    return None


def _say_dedup_key(hook: Any, learned: Any, scope: Any, body: bytes,
                   content_type: str | None) -> None:
    """The key a resend of this delivery would be a duplicate by (the hook's `dedup`, or the
    sender's id), or that it has none."""
    from hookrunner.errors import TemplateError
    from hookrunner.ingest import _dedup_key
    from hookrunner.templating import null_parts_fail

    if hook.dedup is not None:
        try:  # (its error said here, as the server's log line would say it)
            with null_parts_fail():
                hook.dedup.render(scope)
        except TemplateError as exc:
            print(f"\nthe hook's dedup fails for this delivery ({exc}): the server uses "
                  "the sender's id instead" + (f", {learned.delivery_id!r}" if
                                              learned.delivery_id else ", and there is none"))
            return
    from hookrunner.verify.base import LearnsNothing

    key = _dedup_key(hook, learned, scope, body, content_type)
    if key is not None:
        print(f"\ndelivery key for duplicates: {key!r}")
    elif isinstance(hook.verifier, LearnsNothing) and hook.dedup is None:
        # (Not "the headers given carry none": no header would give one.)
        print(f"\ndelivery key for duplicates: none (every resend runs again): the "
              f"{hook.verify_kind} verifier has no delivery id; give the hook a `dedup:` "
              "template (a field of the payload that names the event) to drop resends")
    else:
        print("\ndelivery key for duplicates: none (every resend runs again): the sender's "
              "headers given carry no delivery id" + (
                  ", and the hook's dedup gives nothing" if hook.dedup else ""))


def _reads(when: Any, name: str) -> bool:
    """Whether a rule's `when` (a condition tree) reads `name`."""
    if when is None:
        return False
    names: frozenset[str] = getattr(when.expr, "names", frozenset()) \
        if when.expr is not None else frozenset()
    return name in names or any(_reads(child, name) for child in when.children)


def _refusal(settings: Settings) -> Callable[[str, Mapping[str, Any]], str | None]:
    """What the server's runner would refuse of a rendered action, against --root."""
    from hookrunner.actions import RUNNERS

    root = Path(settings.root).resolve()

    def refusal(kind: str, rendered: Mapping[str, Any]) -> str | None:
        runner = RUNNERS.get(kind)
        return runner.refusal(rendered, root) if runner is not None else None

    return refusal


async def explain_delivery(settings: Settings, delivery_id: str) -> int:
    """`explain --delivery`: a stored delivery's request (headers, query, body, event, as
    received) against the current rules: why a rule did or did not match it, after a fix."""
    from hookrunner.payload import PayloadError
    from hookrunner.redact import REDACTED
    from hookrunner.replay import stored_scope
    from hookrunner.rules.match import evaluate
    from hookrunner.rules.report import format_explain

    ruleset = _operator_rules(settings)
    if ruleset is None:
        return EXIT_FAIL
    delivery = await _stored_delivery(settings, delivery_id)
    if delivery is None:
        return EXIT_FAIL
    if delivery.hook not in ruleset.hooks:
        print(f"hookrunner: hook {delivery.hook!r} of {delivery_id} is not defined in the rules "
              f"in --rules {settings.rules} (removed since, or not the server's rules)",
              file=sys.stderr)
        return EXIT_FAIL
    try:
        scope = stored_scope(delivery)
    except PayloadError as exc:
        print(f"hookrunner: the stored body cannot be parsed: {exc.message}", file=sys.stderr)
        return EXIT_FAIL
    sent = f", event {delivery.event}" if delivery.event is not None else ""
    print(f"{delivery.id} (hook {delivery.hook}{sent}) against the rules in {settings.rules}:")
    from hookrunner import bounds

    with bounds.delivery():  # the server's budget for the delivery (see dry_run)
        text = format_explain(evaluate(ruleset, delivery.hook, scope))
    print(text)
    from hookrunner.payload import form_json_hint
    from hookrunner.verify.base import Headers

    if (hint := form_json_hint(delivery.body, Headers(delivery.headers).get("content-type"))):
        print(f"hookrunner: note: {hint}", file=sys.stderr)
    if REDACTED in text:  # matched as it arrived, maybe: the secret was not stored
        print(f"hookrunner: note: {REDACTED} is a secret-looking header or query value, which "
              "is not stored: a condition on it cannot decide here as it did on arrival "
              "(`hookrunner delivery` shows how it was decided then)", file=sys.stderr)
    return EXIT_OK


def served_rules(settings: Settings) -> Settings:
    """For a command on a stored delivery (`replay`, `explain --delivery`): the rules and
    root of the server on --data, where --rules was left to its default
    (hookrunner.servedrules), and said on stderr where they are not ./rules."""
    from hookrunner import servedrules

    found = None if "rules" in settings.sources else servedrules.recorded(settings.data)
    if found is None:
        return settings
    rules, root = found
    if "root" in settings.sources:  # given: as for the rules, what is given wins
        root = settings.root
    if rules != settings.rules.absolute() or root != settings.root.absolute():
        print(f"hookrunner: reading the rules of the server on --data {settings.data}: --rules "
              f"{rules} --root {root} (give --rules to read others)", file=sys.stderr)
    return replace(settings, rules=rules, root=root,
                   sources={**settings.sources, "rules": SERVED_RULES})


SERVED_RULES = "the server's --rules"  # (as settings.sources name where a setting came from)


def served_timeout(settings: Settings) -> Settings:
    """For `replay`: the default timeout of the server on --data, which runs what is queued
    (hookrunner.servedrules), unless HOOKRUNNER_DEFAULT_TIMEOUT is set here, which wins as
    --rules does, and is said where it is not the server's."""
    from hookrunner import servedrules
    from hookrunner.units import format_duration

    timeout = servedrules.recorded_timeout(settings.data)
    if timeout is None:  # no server ever ran here, or one of a version before the record had it
        return settings
    given = settings.sources.get("default_timeout")
    if given is None:
        return replace(settings, default_timeout=timeout,
                       sources={**settings.sources, "default_timeout": SERVED_TIMEOUT})
    if timeout != settings.default_timeout:
        print(f"hookrunner: note: a rule without `timeout` gets {given}'s "
              f"{format_duration(settings.default_timeout)}, not the {format_duration(timeout)} "
              f"of the server on --data {settings.data}", file=sys.stderr)
    return settings


SERVED_TIMEOUT = "the server's HOOKRUNNER_DEFAULT_TIMEOUT"


def _operator_rules(settings: Settings) -> Ruleset | None:
    """The rules for a command that runs nothing (secrets need not be readable from an
    operator's shell); None once their errors were printed."""
    from hookrunner.rules.load import load_rules

    try:
        return load_rules(settings.rules, root=settings.root, secrets_required=False)
    except ConfigErrors as exc:
        for e in exc.errors:
            print(e, file=sys.stderr)
        return None


class NoStore(HookrunnerError):
    pass


def _readable_store(path: Path) -> None:
    """Raise NoStore where the SQLite file is missing, or this user may not read it (the
    data dir is the server's user's, 0700: an operator's own `runs` met a traceback)."""
    found: bool | None = True
    try:
        os.stat(path)
    except FileNotFoundError:
        found = False
    except PermissionError:  # (newer Pythons' exists() says False for it)
        found = None
    except OSError:
        found = False
    if found is False:
        raise NoStore(f"no hookrunner store at {path} (is --data right?)")
    if found and path.stat().st_size == 0:  # (read below as "from an older hookrunner")
        raise NoStore(f"{path} is empty (0 bytes): no server has started on it yet, or it was "
                      "truncated (restore it from a backup)")
    if found is None or not os.access(path, os.R_OK):
        denied = path.parent if found is None else path
        try:
            owner = f" ({pwd.getpwuid(denied.stat().st_uid).pw_name}'s)"
        except (OSError, KeyError):
            owner = ""
        raise NoStore(f"cannot read {denied}{owner}: permission denied; run this as the "
                      "server's user (e.g. `sudo -u <user> hookrunner ...`)")


def _data_store(settings: Settings) -> None:
    """Raise NoStore where --data cannot hold the SQLite store, or its file is gone, as
    `serve` says it (not "is --data right?" of a file deleted where a server has run)."""
    from hookrunner.preflight import lost_store

    if settings.data.exists() and not settings.data.is_dir():
        raise NoStore(f"{settings.given_as('data')} {settings.data} is not a directory")
    lost = lost_store(Path(settings.store_url), settings.logs_dir, settings.data)
    if lost is not None:
        raise NoStore(lost)
    _readable_store(Path(settings.store_url))


async def _open(settings: Settings) -> Store:
    """The server's store, for the CLI. A missing SQLite file is an error, not a new store:
    `runs --data typo` must not answer "no runs" from an empty database it just made."""
    from hookrunner.store import open_store

    if not settings.db:
        _data_store(settings)
    if settings.db and settings.sources.get("data") == "--data" \
            and settings.sources.get("db") != "--db":
        # Both name a store: the database wins, as for `serve` (where --data holds the logs).
        # Say so, or `runs --data X` would list another store's runs without a word.
        from hookrunner.preflight import postgres_target

        print(f"hookrunner: using the PostgreSQL store of {settings.given_as('db')} "
              f"({postgres_target(settings.db)}), not --data", file=sys.stderr)
    if settings.db:
        from hookrunner.preflight import reach_postgres

        try:
            await reach_postgres(settings.db, need_schema=True)
        except StartupRefused as exc:
            raise NoStore(str(exc)) from None
    store = open_store(settings.store_url)
    try:
        await store.open(migrate=False)  # a server running an older version may be on it
    except StoreUnavailable as exc:
        from hookrunner.preflight import read_only_fs

        if not settings.db and read_only_fs(settings.data):
            raise NoStore(f"{exc} ({settings.given_as('data')} {settings.data} is on a read-only "
                          "file system, and SQLite writes beside its database even to read "
                          "it: copy the directory somewhere writable to look at it)") from exc
        raise NoStore(str(exc)) from exc
    return store


async def _open_or_say(settings: Settings) -> Store | None:
    try:
        return await _open(settings)
    except NoStore as exc:
        print(f"hookrunner: {exc}", file=sys.stderr)
        return None


async def replay(settings: Settings, delivery_id: str, rule: str | None = None) -> int:
    from hookrunner.replay import ReplayError, replay_delivery

    ruleset = _operator_rules(settings)
    if ruleset is None and settings.sources.get("rules") == SERVED_RULES:
        # The server's own files: it serves the last rules that loaded, which are in memory.
        print("hookrunner: the server's rules files have the errors above; it serves the rules "
              "it loaded last, which only it has: replay through it (POST "
              "/api/deliveries/ID/replay), or fix the files", file=sys.stderr)
        return EXIT_FAIL
    if ruleset is None:
        # The CLI matches against its own --rules, not the running server's live rules.
        print(f"hookrunner: replay matches the delivery against the rules in --rules "
              f"{settings.rules} (default ./rules): point it at the server's rules directory, "
              "or replay through the server (POST /api/deliveries/ID/replay)", file=sys.stderr)
        return EXIT_FAIL
    store = await _open_or_say(settings)
    if store is None:
        return EXIT_FAIL
    try:
        answer = await replay_delivery(store, ruleset, delivery_id, settings.default_timeout,
                                       rule=rule)
    except ReplayError as exc:
        where = f" (read from --rules {settings.rules})" if exc.of_rules else ""
        print(f"hookrunner: {exc}{where}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        await store.close()
    runs = answer["runs"]
    for explained in answer["matches"]:  # a `when` that errs never matches: say why
        if explained.get("error") is not None:
            print(f"hookrunner: rule {explained['rule']}: its when could not be evaluated: "
                  f"{explained['error']}", file=sys.stderr)
    names = {r.name for r in ruleset.rules}
    for name in answer["no_longer_matched"]:
        print(f"hookrunner: rule {name} matched this delivery when it arrived and does not "
              "now (hookrunner explain --delivery shows why)" if name in names else
              f"hookrunner: rule {name} matched this delivery when it arrived and is not in "
              f"--rules {settings.rules} (renamed or removed since, or these are not the "
              "server's rules)", file=sys.stderr)
    if answer.get("note"):
        print(f"hookrunner: note: {answer['note']}", file=sys.stderr)
    if rule is not None and not runs:  # nothing was queued: only the reason
        print(f"hookrunner: rule {rule!r} does not match the delivery now (hookrunner explain "
              "shows why); nothing was queued", file=sys.stderr)
        return EXIT_FAIL
    print(f"replayed {delivery_id}: {len(runs)} run(s) queued" + (": " + " ".join(runs) if runs else ""))
    # Nothing queued, where rules ran for it on arrival: not what a replay was asked for.
    return EXIT_FAIL if not runs and answer["no_longer_matched"] else EXIT_OK


def _took(start: float | None, end: float) -> str:
    if not start:
        return "-"
    # Times are wall-clock: one stepped back (or another node's, ahead) gave `-315359998.9s`.
    return f"{end - start:.1f}s" if end >= start else "? (the clock moved back meanwhile)"


def _ts(t: float | None) -> str:
    """UTC, as the logs and the console give times: one clock to compare them by."""
    return utc_iso(t) if t else "-"


def _word(name: str) -> str:
    """A rule name as one column of `runs`: quoted (JSON) where a space or quote is in it."""
    return json.dumps(name, ensure_ascii=False) \
        if not name or any(c.isspace() or c in "\"'\\" for c in name) else name


async def runs(settings: Settings, status: str | None, limit: int, rule: str | None = None,
               delivery: str | None = None, before: str | None = None) -> int:
    if status is not None and status not in RUN_STATUSES:
        print(f"hookrunner: --status must be one of {', '.join(RUN_STATUSES)}, got {status!r}",
              file=sys.stderr)
        return EXIT_USAGE
    from hookrunner.logs import terminal_safe

    store = await _open_or_say(settings)
    if store is None:
        return EXIT_FAIL
    try:
        items = await store.list_runs(status=status, limit=limit + 1, rule=rule,
                                      delivery_id=delivery, before=before)
        more, items = len(items) > limit, items[:limit]
        if not items and before is not None and await store.get_run(before) is None:
            print(f"hookrunner: --before: no run {before!r} is stored (it may have been "
                  "removed by --keep since)", file=sys.stderr)
            return EXIT_FAIL
        if not items and delivery is not None and await store.get_delivery(delivery) is None:
            # (It said "no runs of delivery ..." and exit 0, as for one that matched no rule.)
            print(f"hookrunner: no delivery {delivery!r} is stored (is the name right? it may "
                  "have been removed by --keep)", file=sys.stderr)
            return EXIT_FAIL
        running = await store.list_runs(status="running", limit=1000) \
            if any(r.status == "queued" for r in items) else []
        # (An older run waiting for its retry holds a queue key: among the newest queued.)
        queued = await store.list_runs(status="queued", limit=1000) \
            if any(r.status == "queued" and r.concurrency_key for r in items) else []
        # An ended run took what its last attempt took (one canceled, or skipped for a newer
        # run, while it waited for its retry ended later than that ran); one waiting for its
        # retry, what the attempt that failed took (it said `-`).
        # (A query each: only for runs between attempts or that ended there, as a cancel
        # during a retry's wait does, and for the first page's worth of them.)
        lasts = {r.id: (await store.attempts(r.id))[-1:]
                 for r in [r for r in items
                           if r.status in ("canceled", "skipped", "queued") and r.attempt > 0
                           ][:100]}
    finally:
        await store.close()
    from hookrunner.waiting import describe, waiting_for

    now = time.time()
    # SQLite: queued runs wait for a server to start, not for a worker
    unserved = any(r.status in ("queued", "running") for r in items) and _unserved(settings)
    for r in items:
        code = "-" if r.exit_code is None else str(r.exit_code)
        took = _took(r.started_at, r.finished_at) if r.finished_at else "-"
        if lasts.get(r.id) and lasts[r.id][0].finished_at is not None:
            last = lasts[r.id][0]
            took = _took(last.started_at, last.finished_at or 0.0)
        stopped = r.status == "running" and unserved
        if r.status == "running" and r.started_at:  # (one word, as each column: `awk` reads it)
            took = "-" if unserved else f"{_took(r.started_at, now)}+"
        waits = describe(waiting_for(r, running, now, queued), _ts)
        if waits and unserved:
            waits = "a server: none runs on this --data" + (
                f" (then {waits})" if not waits.startswith("a free worker") else "")
        print(f"{r.id}  {r.status:<9}  {_ts(r.created_at)}  {_word(r.rule)}  attempt={r.attempt}  "
              f"exit={code}  took={took}  delivery={r.delivery_id}"
              + (f"  waiting for {waits}" if waits else "")
              + ("  (its server has stopped)" if stopped else "")
              + (f"  ({terminal_safe(r.reason)})" if r.reason else ""))
    if not items:
        asked = [f"{what} {value!r}" for what, value in
                 (("status", status), ("rule", rule), ("delivery", delivery)) if value]
        older = f" older than {before}" if before else ""
        named = asked and not before and not (status and len(asked) == 1)
        print(f"no runs{older}" + (f" of {', '.join(asked)}" if asked else "")
              + (" (is the name right?)" if named else ""), file=sys.stderr)
    elif more:  # on stderr: a script reading the lines is not disturbed
        print(f"(older runs: the same with --before {items[-1].id})", file=sys.stderr)
    return EXIT_OK


async def show_log(settings: Settings, run_id: str, attempt: int | None) -> int:
    """A run's output, as `GET /api/runs/ID/log` gives it once the attempt has ended; of a
    running attempt, what its log file holds so far (a run under a second old has none yet:
    its log is still in the server's memory)."""
    from hookrunner.runlog import ended_log

    store = await _open_or_say(settings)
    if store is None:
        return EXIT_FAIL
    try:
        run = await store.get_run(run_id)
        if run is None:
            print(f"hookrunner: no run {run_id!r}", file=sys.stderr)
            return EXIT_FAIL
        if attempt is not None and attempt > run.attempt:
            print(f"hookrunner: run {run_id} has {run.attempt} attempt(s)"
                  + (" (it has not started)" if run.attempt == 0 else ""), file=sys.stderr)
            return EXIT_FAIL
        shown = attempt or run.attempt
        text = await ended_log(store, settings.log_path(run_id, shown), run_id, shown) \
            if shown else ""
    finally:
        await store.close()
    if run.attempt == 0:
        print(f"hookrunner: run {run_id} is {run.status}: it never started, so it has no output",
              file=sys.stderr)
    elif run.status == "running" and shown == run.attempt and _unserved(settings):
        print(_stopped_note(run_id, bool(text)), file=sys.stderr)
    elif run.status == "running" and shown == run.attempt:
        print(f"hookrunner: run {run_id} is still running (on node {run.lease_owner}): its "
              "output so far, as far as its log file on this machine holds it; "
              f"GET /api/runs/{run_id}/log follows it", file=sys.stderr)
    elif not text:  # an ended attempt's log holds hookrunner's own lines at least
        print(f"hookrunner: attempt {shown} of run {run_id} left no log, in the store or in "
              "this machine's log files: its server stopped (a crash, a kill) before saving it, "
              "or it never got to start its action (its reason, in `hookrunner runs`, says); "
              f"with several nodes, look in logs/{run_id}/ under the --data of the node that "
              "ran it", file=sys.stderr)
    sys.stdout.write(_for_terminal(text) if sys.stdout.isatty() else text)
    return EXIT_OK


def _unserved(settings: Settings) -> bool:
    """No server holds this SQLite store, as `runs` judges it: its running runs are not
    running any more (on PostgreSQL, another node may hold them: not known here)."""
    if settings.db:
        return False
    from hookrunner.store.sqlite import served

    return not served(Path(settings.store_url))


def _stopped_note(run_id: str, has_output: bool) -> str:
    """`log` of a running run whose server is gone (a crash, a kill): nothing follows it."""
    what = ("its output below is what its log file held then" if has_output else
            "it left no output in its log file (the first second's is in the server's memory "
            "only, and went with it)")
    return (f"hookrunner: run {run_id} is marked running, but its server has stopped (no "
            f"server holds this --data): {what}; the next start of the server ends it failed "
            "(interrupted), or runs it again where its rule retries")


async def show_delivery(settings: Settings, delivery_id: str) -> int:
    """What `GET /api/deliveries/ID` answers, from the store (no server or token needed), as
    indented JSON (which writes control characters escaped: safe on a terminal)."""
    from hookrunner.api import delivery_json

    found = await _stored_delivery(settings, delivery_id)
    if found is None:
        return EXIT_FAIL
    print(json.dumps(delivery_json(found), indent=2))
    return EXIT_OK


async def _stored_delivery(settings: Settings, delivery_id: str) -> Delivery | None:
    """The delivery from the store; None once the reason it is not there was printed."""
    store = await _open_or_say(settings)
    if store is None:
        return None
    try:
        found = await store.get_delivery(delivery_id)
    finally:
        await store.close()
    if found is None:
        print(f"hookrunner: no delivery {delivery_id!r}", file=sys.stderr)
    return found


def _for_terminal(text: str) -> str:
    """An action's output may carry a payload's escape sequences: on a terminal, control
    characters other than newlines and tabs are shown escaped, not obeyed."""
    from hookrunner.logs import terminal_safe

    return "\n".join("\t".join(terminal_safe(part) for part in line.split("\t"))
                     for line in text.split("\n"))


async def cancel(settings: Settings, run_id: str) -> int:
    store = await _open_or_say(settings)
    if store is None:
        return EXIT_FAIL
    try:
        before = await store.get_run(run_id)
        status = await store.request_cancel(run_id, time.time())
    finally:
        await store.close()
    if status is None:
        print(f"hookrunner: no run {run_id!r}", file=sys.stderr)
        return EXIT_FAIL
    outcome = cancel_outcome(before.status if before else None, status,
                             retrying=before is not None and before.attempt > 0)
    if status == "running" and not settings.db:
        from hookrunner.store.sqlite import served

        if not served(Path(settings.store_url)):
            outcome = ("cancel requested (running when its server stopped, and no server runs "
                       "on this --data now: the next start stops what is left of it, and it "
                       "is not run again)")
    elif (status == "running" and before is not None and before.lease_expires is not None
          and before.lease_expires < time.time()):
        outcome = (f"cancel requested (its node {before.lease_owner} has stopped renewing its "
                   "lease: the node that takes the run over ends it, and it is not run again)")
    elif status == "running" and before is not None and before.lease_owner:
        # From here it cannot tell a live node from one that died within its lease.
        outcome = (f"cancel requested (running on node {before.lease_owner}, which stops it "
                   "within a second; if that node is down, the node that takes the run over "
                   "when its lease expires ends it, and it is not run again)")
    print(f"{run_id}: {outcome}")
    return EXIT_OK


def cancel_outcome(before: str | None, after: str, retrying: bool = False) -> str:
    """What a cancel did, from the run's status before and after it (`retrying`: a queued
    run that has had an attempt). Nothing left to cancel is still success (exit 0):
    afterwards the run is not running either way."""
    if after == "running":
        return "cancel requested (running; the server stops it within a second)"
    if after == "canceled" and before != "canceled":
        return "canceled (was waiting for its next attempt)" if retrying else \
            "canceled (was queued)"
    return f"already {after}: nothing to cancel"

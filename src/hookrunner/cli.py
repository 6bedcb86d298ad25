"""Argument parsing only: each command calls functions elsewhere."""

from __future__ import annotations

import signal
import sys

if sys.argv[1:2] == ["serve"]:
    # As early as `serve` can, before the imports (asyncio's alone took ~35 ms, in which a
    # SIGHUP killed it): until the server takes SIGHUP as "reload" (once its loop runs), its
    # default action would kill it (a `systemctl reload` right after a start). The rules
    # load at the start anyway, and the files are watched.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

import argparse
import asyncio
import os
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NoReturn

from hookrunner import __version__

EXIT_OK = 0
EXIT_INVALID = 1  # rules invalid, or the command's subject was not found
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports it (128 + SIGINT)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line starting `hookrunner:`, as every other usage
    error of hookrunner, not the whole usage block:
    `hookrunner: serve: argument --log-format: invalid choice: 'xml' (see ...)`."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.partition(" ")[2]
        where = f"{command}: " if command else ""
        self.exit(EXIT_USAGE, f"hookrunner: {where}{message} (see `{self.prog} --help`)\n")

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: None = None) -> argparse.Namespace:
        """A flag the command does not take is the command's usage error (the top level's
        named `hookrunner --help`, which lists no command's flags)."""
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            command = getattr(parsed, "command", None)
            prog = f"{self.prog} {command}" if command else self.prog
            where = f"{command}: " if command else ""
            self.exit(EXIT_USAGE, f"hookrunner: {where}unrecognized arguments: {' '.join(extra)} "
                                  f"(see `{prog} --help`)\n")
        return parsed


STATUSES = "queued, running, succeeded, failed, timed_out, canceled, skipped"
SERVE_EPILOG = (
    "Every flag also reads from HOOKRUNNER_<FLAG> (HOOKRUNNER_DB, HOOKRUNNER_WORKERS, ...); "
    "flags win. Variables without a flag: HOOKRUNNER_ADMIN_TOKEN (the API's and console's "
    "bearer token; default: generated into <data>/admin-token), HOOKRUNNER_GRACE (30s), "
    "HOOKRUNNER_DEFAULT_TIMEOUT (1h), HOOKRUNNER_LOG_CAP (10MiB: output kept per attempt).")


def _store_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="data directory of the embedded store (default ./.hookrunner)")
    p.add_argument("--db", help="postgresql://... to use the multi-node store")


def _rules_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rules", help="directory of *.yaml rules (default ./rules)")
    # `{file: ...}` secrets and action paths resolve against it, as in `serve`.
    p.add_argument("--root", help="base of relative paths in rules (default .)")


MAX_COUNT = 10**9


def _not_empty(text: str) -> str:
    """A filter given empty (`--rule "$RULE"` with RULE unset) would find nothing."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty (leave the flag out for all)")
    return text


def _an_id(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    if value > MAX_COUNT:  # SQLite integers end at 2**63
        cut = "…" if len(text) > 20 else ""
        raise argparse.ArgumentTypeError(f"must be at most {MAX_COUNT}, got {text[:20]}{cut}")
    return value


def _payload_flags(p: argparse.ArgumentParser, required: bool = True) -> None:
    _rules_flag(p)
    p.add_argument("--hook", type=_an_id, required=required, help="hook id")
    p.add_argument("--payload", type=_an_id, required=required,
                   help="file with the request body (JSON or form)")
    p.add_argument("--header", action="append", default=[], metavar="'Name: value'",
                   help="a request header (repeatable), e.g. 'X-GitHub-Event: push'")
    p.add_argument("--query", action="append", default=[], metavar="'name=value'",
                   help="a query parameter of the hook's URL (repeatable), e.g. 'env=prod'")
    p.add_argument("--client-ip", type=_an_id, metavar="ADDRESS",
                   help="the sender's address, as `client_ip` (default: null)")


class _Version(argparse.Action):
    """`--version`: the release and the newest migration of each store, which the README's
    Upgrades section names (every development version says the same release)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0,
                         help=help or "show the version and the store schemas it migrates to")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        from hookrunner.store import sql

        schemas = ", ".join(f"{backend} {max(v for v, _, _ in sql.migrations(backend))}"
                            for backend in ("sqlite", "postgres"))
        print(f"hookrunner {__version__} (schema: {schemas})")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hookrunner", description="Signed webhooks -> YAML rules -> durable queue -> actions.")
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the gateway", epilog=SERVE_EPILOG)
    _rules_flag(s)
    _store_flags(s)
    s.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    # The whole numbers are read as their variables are (settings._coerce): one message for
    # `--port abc` and HOOKRUNNER_PORT=abc, and `--port ""` refused as an empty flag.
    s.add_argument("--port", help="port to listen on (default 8080; 0: any free port)")
    s.add_argument("--workers", help="actions run at once on this node (default 8)")
    s.add_argument("--http-workers",
                   help="processes accepting requests on the port (default 1; e.g. one per core)")
    s.add_argument("--pass-env", action="append", default=[], metavar="NAME",
                   help="pass this server environment variable to actions (repeatable)")
    s.add_argument("--node", help="this node's name (default the host name)")
    s.add_argument("--max-queued",
                   help="queued runs past which hooks answer 503 (default 10000)")
    s.add_argument("--lease", help="run lease length on the shared store (default 15s)")
    s.add_argument("--keep", help="prune history that ended longer ago than this, e.g. 30d "
                   "(default: keep everything)")
    s.add_argument("--trusted-proxy", action="append", default=[], metavar="CIDR",
                   help="believe X-Forwarded-For from these addresses (repeatable)")
    s.add_argument("--path-prefix", metavar="PATH",
                   help="the public path a reverse proxy serves hookrunner at, e.g. /hookrunner "
                   "(default: the root)")
    s.add_argument("--log-format", choices=["text", "json"], help="default text")
    s.add_argument("--ssl-certfile", help="serve HTTPS with this certificate (with --ssl-keyfile)")
    s.add_argument("--ssl-keyfile", help="the certificate's private key")

    c = sub.add_parser("check", help="validate the rules")
    _rules_flag(c)
    c.add_argument("--without-secrets", action="store_true",
                   help="do not read the hooks' secrets: an unset variable or a missing "
                        "secret file is no error (a CI job that checks the rules without them)")

    t = sub.add_parser("test", help="dry run: which rules match, and the rendered actions")
    _payload_flags(t)
    e = sub.add_parser("explain", help="every rule of a hook, each condition's result and value")
    _payload_flags(e, required=False)  # or --delivery: the request as it was received
    e.add_argument("--delivery", type=_an_id, metavar="DELIVERY_ID",
                   help="a stored delivery instead of --hook/--payload (with --data or --db)")
    _store_flags(e)

    r = sub.add_parser("replay", help="enqueue a stored delivery again against the current rules")
    r.add_argument("delivery_id", type=_an_id)
    r.add_argument("--rule", type=_not_empty, action="append",
                   help="only this rule's run (e.g. the one that failed)")
    _rules_flag(r)
    _store_flags(r)

    ru = sub.add_parser("runs", help="recent runs, a line each")
    ru.add_argument("--status", type=_not_empty, help=f"only runs with this status: {STATUSES}")
    ru.add_argument("--rule", type=_not_empty, help="only runs of this rule")
    ru.add_argument("--delivery", type=_not_empty, metavar="ID", help="only runs of this delivery")
    ru.add_argument("--limit", type=_at_least_one, default=20, help="at most this many (default 20)")
    ru.add_argument("--before", type=_not_empty, metavar="RUN_ID",
                    help="the runs listed after this one (the next page; newest first)")
    _store_flags(ru)

    lg = sub.add_parser("log", help="a run's output (its current attempt, or --attempt N)")
    lg.add_argument("run_id", type=_an_id)
    lg.add_argument("--attempt", type=_at_least_one, help="that attempt's output (from 1)")
    _store_flags(lg)

    de = sub.add_parser("delivery", help="a stored delivery as JSON: headers (secrets "
                        "redacted), query, payload, each rule's evaluation, its runs")
    de.add_argument("delivery_id", type=_an_id)
    _store_flags(de)

    ca = sub.add_parser("cancel", help="cancel a queued or running run")
    ca.add_argument("run_id", type=_an_id)
    _store_flags(ca)
    return parser


# The settings each command reads (from its flags and their HOOKRUNNER_* variables): a
# variable meant for `serve` must not break `check`. `serve` reads them all.
_RULES = ("rules", "root")
_STORE = ("data", "db")
COMMAND_SETTINGS: dict[str, tuple[str, ...]] = {
    "check": _RULES, "test": (*_RULES, "default_timeout"), "explain": _RULES,
    "replay": (*_RULES, *_STORE, "default_timeout"), "runs": _STORE, "cancel": _STORE,
    "log": _STORE, "delivery": _STORE,
}


def _settings_flags(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k not in ("command", "delivery_id", "run_id")}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, not at exit: a reader gone (`| head`) is a BrokenPipeError
        return code
    except BrokenPipeError:
        # The reader of our output left (`hookrunner runs | head -1`): end as a command-line
        # tool killed by SIGPIPE would, without a traceback (nor one at exit, flushing).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from hookrunner.settings import load_settings

    keys = COMMAND_SETTINGS.get(args.command)
    if args.command == "explain":
        problem = _explain_source(args)
        if problem:
            print(f"hookrunner: explain: {problem}", file=sys.stderr)
            return EXIT_USAGE
        if args.delivery:  # reads the store: its flags and HOOKRUNNER_DB count only then
            keys = (*_RULES, *_STORE)
    try:
        settings = load_settings(_settings_flags(args), os.environ, keys)
    except ValueError as exc:
        print(f"hookrunner: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from hookrunner import commands

    if keys is not None and "root" in keys and not settings.root.is_dir():
        # As `serve` says it (preflight): a flag whose value cannot be right, not a rules error.
        what = "not a directory" if settings.root.exists() else "no such directory"
        print(f"hookrunner: {settings.given_as('root')} {settings.root}: {what}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "serve":
        try:
            return commands.serve(settings)
        except KeyboardInterrupt:  # Ctrl-C, once the server has stopped (uvicorn re-raises it)
            return EXIT_INTERRUPTED
    if args.command == "check":
        return commands.check(settings, secrets=not args.without_secrets)
    if args.command == "replay" or (args.command == "explain" and args.delivery):
        settings = commands.served_rules(settings)  # "against the current rules": the server's
    if args.command == "replay":  # and the runs get the timeout the server would give them
        settings = commands.served_timeout(settings)
    if args.command == "explain" and args.delivery:
        return _store_command(lambda: commands.explain_delivery(settings, args.delivery))
    if args.command in ("test", "explain"):
        return commands.dry_run(settings, args.command, args.hook, args.payload, args.header,
                                args.query, args.client_ip)
    if args.command == "replay" and args.rule and len(args.rule) > 1:
        print("hookrunner: replay: --rule is given more than once (one rule per replay)",
              file=sys.stderr)
        return EXIT_USAGE
    store_commands = {
        "replay": lambda: commands.replay(settings, args.delivery_id,
                                          args.rule[0] if args.rule else None),
        "runs": lambda: commands.runs(settings, args.status, args.limit, args.rule,
                                      args.delivery, args.before),
        "log": lambda: commands.show_log(settings, args.run_id, args.attempt),
        "delivery": lambda: commands.show_delivery(settings, args.delivery_id),
        "cancel": lambda: commands.cancel(settings, args.run_id),
    }
    if args.command in store_commands:
        return _store_command(store_commands[args.command])
    return EXIT_USAGE


def _explain_source(args: argparse.Namespace) -> str | None:
    """What is wrong with how `explain` was told its request, if anything."""
    # Given at all, even empty (`--hook "$HOOK"` with HOOK unset): `is not None`.
    if args.delivery is not None:
        given = [f for f, v in (("--hook", args.hook), ("--payload", args.payload),
                                ("--header", args.header or None), ("--query", args.query or None),
                                ("--client-ip", args.client_ip))
                 if v is not None]
        if given:
            return (f"--delivery takes the request as it was received: leave out "
                    f"{', '.join(given)}")
        return None
    if args.data is not None or args.db is not None:
        return "--data and --db only go with --delivery"
    missing = [f for f, v in (("--hook", args.hook), ("--payload", args.payload)) if v is None]
    if missing:
        return f"the following arguments are required: {', '.join(missing)} (or --delivery ID)"
    return None


def _store_command(command: Callable[[], Coroutine[Any, Any, int]]) -> int:
    try:
        return asyncio.run(command())
    except Exception as exc:  # the database said no (a role without the rights, a lock)
        from hookrunner.errors import StoreUnavailable

        if isinstance(exc, StoreUnavailable):  # a full disk, a lock held too long
            print(f"hookrunner: {exc}", file=sys.stderr)
            return 1
        if not _database_error(exc):
            raise
        print(f"hookrunner: the database refused: {type(exc).__name__}: {exc}".rstrip(),
              file=sys.stderr)
        return 1


def _database_error(exc: Exception) -> bool:
    """An error of SQLite or PostgreSQL itself, not a bug of ours: one line, not a traceback."""
    import sqlite3

    try:
        import psycopg
    except ImportError:
        return isinstance(exc, sqlite3.Error)
    return isinstance(exc, sqlite3.Error | psycopg.Error)


if __name__ == "__main__":
    sys.exit(main())

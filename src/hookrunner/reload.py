"""The live rules: loaded at start, reloaded when a rules file or a `{file: ...}` secret
changes (a rotated secret is picked up the same way), or on SIGHUP.

A reload that fails validation keeps the rules that were live; its errors are logged as
`file:line: message` and shown by /readyz and the console.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hookrunner import rulescopy
from hookrunner.errors import ConfigErrors
from hookrunner.logs import Throttled, event
from hookrunner.rules.load import load_rules, reread_secrets, rules_files
from hookrunner.rules.model import Ruleset
from hookrunner.verify.secrets import SecretUnavailable

POLL_INTERVAL = 1.0  # seconds between looks at the rules files' modification times
_watch_failed = Throttled("rules.watch_failed", logging.ERROR, every=60.0)

Stat = rulescopy.Stat


def _stat(path: Path) -> Stat | None:
    try:
        st = path.stat()  # through a link: a ConfigMap or Secret update swaps its target
    except OSError:
        return None
    # The change time too: `cp -p` or `rsync -t` of a file of the same size keeps its
    # modification time (reproducible builds give every file one), not its change time.
    return (str(path), st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


def _nowhere(path: str) -> Stat:
    """The fingerprint's entry for a listed path with no file (a link that leads nowhere)."""
    return (path, -1, -1, -1, -1)


def _fingerprint(rules_dir: Path) -> tuple[Stat, ...]:
    """The rules files as they stand; () where a directory cannot be listed, which differs
    from any look that can: the watcher then reloads, the reload fails and says why (and
    /readyz), and the next look that can list them reloads again."""
    try:
        # A link that leads nowhere counts too (as an entry with no file): one appearing is
        # a change, which the load then warns about. So does a file skipped with a note
        # (`team.YAML`): its warning came only at the next reload for another reason.
        notes: list[str] = []
        files = rules_files(rules_dir, notes)
        return tuple(_stat(p) or _nowhere(str(p)) for p in files) + tuple(
            _nowhere(note) for note in notes)
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            # No descriptor for a look (a connection flood): no news of the files. Raised, so
            # the watcher tries at its next look; a failed reload paged about the rules.
            raise
        return ()


def _recorder(secrets: dict[Path, Stat | None]) -> Callable[[Path], None]:
    """What a load tells of each secret file just before reading it: its state then."""
    def about_to_read(path: Path) -> None:
        secrets.setdefault(path, _stat(path))
    return about_to_read


def until_tick(now: float, interval: float, at_least: float = 0.0) -> float:
    """Seconds from `now` (wall clock) to the first whole multiple of `interval` at least
    `at_least` away: every process of a server (--http-workers) looks at the files at the
    same moments, so they all see a change at the same look and switch rules within
    milliseconds of each other (each on its own phase, a worker started later switched up
    to a poll apart, and its answers alternated between old and new rules meanwhile)."""
    return interval - (now + at_least) % interval + at_least


def _every(hook_id: str) -> bool:
    return True


@dataclass(frozen=True)
class _Loaded:
    """What one load found: the rules (None: they failed), the errors, and what was read."""

    ruleset: Ruleset | None
    errors: list[str]
    fingerprint: tuple[Stat, ...]
    secrets: dict[Path, Stat | None]
    only_secrets: bool = False  # it failed only for secrets it could not read
    # The live rules loaded again with their secret files read anew (failed loads only: see
    # load.reread_secrets), with the files that read.
    refreshed: Ruleset | None = None
    refreshed_secrets: dict[Path, Stat | None] | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)  # a failed load's


class LiveRules:
    def __init__(
        self, rules_dir: Path, root: Path | None = None,
        on_result: Callable[[bool], None] | None = None, quiet: bool = False,
        copy: Path | None = None,
    ) -> None:
        """`quiet`: an HTTP worker's copy (--http-workers). The main process reads the same
        files and logs what it found; a line from every process would say it N+1 times.
        `copy` (--http-workers, see rulescopy): the main process keeps a copy of each load
        that succeeds there; a worker that finds the files broken at its start loads it."""
        self.rules_dir = rules_dir
        self.root = root
        self.current: Ruleset | None = None
        self.errors: list[str] = []  # of the last failed reload; empty when it succeeded
        self.loaded_at: float | None = None
        self.last_attempt_at: float | None = None
        self._fingerprint: tuple[Stat, ...] = ()
        # The secret files the last load read, as they were just before it read them.
        self._secrets: dict[Path, Stat | None] = {}
        # ... and those the live rules were read with (a failed load's may differ).
        self._live_secrets: dict[Path, Stat | None] = {}
        self._on_result = on_result  # told whether each load succeeded (the metrics)
        self._loading = False  # a reload_async is under way
        self._again = False  # and another was asked for meanwhile
        self._pending: asyncio.Future[None] | None = None  # SIGHUP's, kept from the GC
        self._quiet = quiet
        self._copy = copy
        # A worker that could load neither the files nor the main process's copy of them:
        # the others serve the hooks, so this one must not answer 404 (see _load_copy).
        self.degraded = False

    def reload(self) -> bool:
        """Load the rules now, on this thread; on failure keep the live ones. Returns whether
        the load succeeded. (The server's own reloads go through `reload_async`.)"""
        attempt = self._load()
        loaded = self._apply(attempt)
        if not loaded and self.current is None and self._quiet and self._copy is not None:
            # Only a secret it could not read (a hook the main process has unavailable too):
            # the main process has said so; this is no news to log again.
            self._load_copy(self._copy, news=not attempt.only_secrets)
        return loaded

    def _load_copy(self, copy: Path, news: bool = True) -> None:
        """A worker starting while the files do not load: the rules the main process serves,
        with the secret files as they were when it loaded them (a secret rotated since must
        not pass here and fail in the other processes), until its next look reads those
        files again as the other processes do (_reread_secrets). The files are still watched; the
        first load of them that succeeds replaces these. If the copy does not load either,
        `degraded`: hooks are refused with 503, not 404 (the other processes serve them)."""
        kept = copy / rulescopy.ROOT
        read: list[Path] = []
        try:
            ruleset = load_rules(copy, root=kept if kept.is_dir() else self.root,
                                 on_secret_file=read.append,
                                 defer_secrets=_every) if copy.is_dir() else None
        except ConfigErrors as exc:
            event("rules.copy_failed", logging.WARNING, error=str(exc.errors[0]),
                  why="the rules files and the main process's copy of them do not load: "
                      "hooks are answered 503 until the files load")
            self.degraded = True
            return
        if ruleset is not None:
            self.current, self.loaded_at = ruleset, time.time()
            # Its secrets as copied; the files they were copied from are watched, as unknown:
            # the next look loads these rules again with them (_reread_secrets), as the main
            # process and the other workers do after a rotation while the files are broken.
            real = {self._copied_from(p, kept): None for p in read}
            self._live_secrets = dict(real)
            self._secrets.update(real)
            warning, error = (logging.WARNING, logging.ERROR) if news else (logging.DEBUG,) * 2
            event("rules.loaded_copy", warning, hooks=len(ruleset.hooks),
                  rules=len(ruleset.rules), why="the rules files do not load; serving the "
                  "rules the main process loaded last")
            for hook_id, why in ruleset.unavailable.items():  # (a secret file gone since)
                event("rules.hook_unavailable", error, hook=hook_id, error=why,
                      then="this process answers its deliveries 503 until the files load")

    def _copied_from(self, path: Path, kept: Path) -> Path:
        """The secret file under --root that `path`, in a copy's `.root`, was copied from."""
        if self.root is not None and path.is_relative_to(kept):
            return self.root / path.relative_to(kept)
        return path

    async def reload_async(self) -> None:
        """Load on a thread, so hooks go on being answered with the live rules meanwhile (a
        thousand rules take seconds to compile); a reload asked for while one runs (SIGHUPs
        in a row) makes one more, not one each."""
        if self._loading:
            self._again = True
            return
        self._loading = True
        try:
            while True:
                self._again = False
                self._apply(await asyncio.to_thread(self._load))
                if not self._again:
                    return
        finally:
            self._loading = False

    def request_reload(self) -> None:
        """SIGHUP's handler: a reload, in the background."""
        self._pending = asyncio.ensure_future(self.reload_async())

    def _load(self) -> _Loaded:
        try:
            fingerprint = _fingerprint(self.rules_dir)  # (cannot list it now: load_rules says why)
        except OSError:  # no descriptor: nor for the load, which says so
            fingerprint = ()
        secrets: dict[Path, Stat | None] = {}
        about_to_read = _recorder(secrets)
        # A hook whose secret cannot be read (a variable not set in the unit's environment)
        # is loaded unavailable, not an error, where there is nothing to keep instead: at the
        # start, or a hook already unavailable. Elsewhere the reload fails and keeps the live
        # hook with its secret (a secret file caught mid-rotation).
        # (A worker with the main process's copy to fall back on does not: the copy has the
        # secret files as the main process verifies with them.)
        defer: Callable[[str], bool] | None = _every
        if self.current is not None:
            defer = self.current.unavailable.__contains__
        elif self._quiet and self._copy is not None:
            defer = None
        try:
            ruleset = load_rules(self.rules_dir, root=self.root, on_secret_file=about_to_read,
                                 defer_secrets=defer)
        except Exception as exc:  # ConfigErrors, or a bug in loading: keep the live rules
            warnings: list[str] = []
            if isinstance(exc, ConfigErrors):
                errors = [str(e) for e in exc.errors]
                only = all(isinstance(e, SecretUnavailable) for e in exc.errors)
                warnings = exc.warnings  # (a `team.YAML` added beside a broken file: said now)
            else:
                errors = [f"{self.rules_dir}: cannot load the rules: {type(exc).__name__}: {exc}"]
                only = False
            return self._reread_secrets(
                _Loaded(None, errors, fingerprint, secrets, only, warnings=warnings), defer)
        # Every file empty: truncated in place before being written (`: > f` each, a
        # generator), caught in between, as an emptied directory is.
        blank = bool(ruleset.files) and len(ruleset.empty) == len(ruleset.files)
        if (not ruleset.files or blank) and self._keeps_rules(hooks=blank):
            # Live rules, then a directory with no rules files: a deploy that empties it
            # before copying (`rm rules/*; cp new/* rules/`), caught in between. Loaded, every
            # hook would answer 404 meanwhile, and some senders stop sending after those.
            now, until = (("every rules file is empty now", "one holds hooks or rules") if blank
                          else ("no *.yaml or *.yml rules files now", "some are there"))
            return _Loaded(None, [f"{self.rules_dir}: {now}; the live rules are kept until"
                                  f" {until} (to serve no rules, leave a file with"
                                  " `rules: []`)"],
                           fingerprint, secrets)
        if self._copy is not None and not self._quiet:  # here: off the event loop
            # (not the links that lead nowhere: the load skipped them, and a copy cannot read them)
            files = tuple(s for s in fingerprint if s != _nowhere(s[0]))
            rulescopy.save(self.rules_dir, files, self._copy, _stat, secrets, self.root)
        return _Loaded(ruleset, [], fingerprint, secrets)

    def _reread_secrets(self, failed: _Loaded, defer: Callable[[str], bool] | None) -> _Loaded:
        """A failed load, with the live rules loaded again from their own texts where a
        secret file they read has changed since (a rotation while another team's file is
        broken: its senders, switched to the new key, were refused until that was fixed)."""
        live = self.current
        if live is None or not live.sources:
            return failed
        # Watched too (changed()): where the hook's own file is the broken one, the failed
        # load read none of its secrets, and a rotation went unseen until a SIGHUP.
        now = {p: _stat(p) for p in self._live_secrets}
        failed = dataclasses.replace(failed, secrets={**now, **failed.secrets})
        if all(now[p] == seen for p, seen in self._live_secrets.items()):
            return failed
        secrets: dict[Path, Stat | None] = {}
        about_to_read = _recorder(secrets)
        try:
            ruleset = reread_secrets(live, root=self.root, on_secret_file=about_to_read,
                                     defer_secrets=defer)
        except Exception:  # (a rotated file caught missing: said by the next look's reload)
            return dataclasses.replace(failed, secrets={**secrets, **failed.secrets})
        if self._copy is not None and not self._quiet:
            # A worker started from here on loads the copy with these secrets, as the others
            # verify with them now (it had the ones of the last load that succeeded).
            rulescopy.save(self.rules_dir, (), self._copy, _stat, secrets, self.root,
                           texts=live.sources)
        return dataclasses.replace(failed, secrets={**secrets, **failed.secrets},
                                   refreshed=ruleset, refreshed_secrets=secrets)

    def _keeps_rules(self, hooks: bool = False) -> bool:
        """Whether a directory with no rules files is a failed load here: there are live
        rules from files to keep (`hooks`: with hooks; empty files live stay so without a
        failure), or (a worker starting) the main process's copy of them."""
        if self.current is not None:
            return bool(self.current.hooks if hooks else self.current.files)
        return self._quiet and self._copy is not None and self._copy.is_dir()

    def _apply(self, loaded: _Loaded) -> bool:
        self._fingerprint, self._secrets = loaded.fingerprint, loaded.secrets
        self.last_attempt_at = time.time()
        error, warning, info = ((logging.DEBUG,) * 3 if self._quiet
                                else (logging.ERROR, logging.WARNING, logging.INFO))
        if loaded.ruleset is None:
            self.errors = loaded.errors
            for line in self.errors:
                event("rules.error", error, error=line)
            for w in loaded.warnings:
                event("rules.warning", warning, warning=w)
            event("rules.reload_failed", error, errors=len(self.errors),
                  kept="previous rules" if self.current else "no rules")
            if loaded.refreshed is not None and loaded.refreshed_secrets is not None:
                self.current, self._live_secrets = loaded.refreshed, loaded.refreshed_secrets
                event("rules.secrets_reread", warning, hooks=len(loaded.refreshed.hooks),
                      why="a secret file the live rules read has changed: they were loaded "
                          "again from their own text with it, and verify with the new secret "
                          "(the rules files' errors above still stand)")
                for hook_id, why in loaded.refreshed.unavailable.items():
                    event("rules.hook_unavailable", error, hook=hook_id, error=why,
                          then="its deliveries are answered 503 until its secret is read")
            if self._on_result:
                self._on_result(False)
            return False
        ruleset = loaded.ruleset
        if self._on_result:
            self._on_result(True)
        self.current, self.degraded = ruleset, False
        self._live_secrets = loaded.secrets
        self.errors = []
        self.loaded_at = time.time()
        for w in ruleset.warnings:
            event("rules.warning", warning, warning=w)
        for hook_id, why in ruleset.unavailable.items():
            event("rules.hook_unavailable", error, hook=hook_id, error=why,
                  then="its deliveries are answered 503 until the rules load with its secret "
                       "(a variable: restart the server with it set)")
        event("rules.loaded", info, hooks=len(ruleset.hooks), rules=len(ruleset.rules),
              files=len(ruleset.files), unavailable=len(ruleset.unavailable) or None,
              digest=ruleset.digest or None)
        return True

    def _look(self) -> tuple[tuple[Stat, ...], list[Stat | None]]:
        return _fingerprint(self.rules_dir), [_stat(p) for p in self._secrets]

    def changed(self) -> bool:
        return (_fingerprint(self.rules_dir) != self._fingerprint
                or any(_stat(p) != seen for p, seen in self._secrets.items()))

    async def watch(self) -> None:
        """Reload whenever the files change; runs until cancelled."""
        while True:
            await asyncio.sleep(until_tick(time.time(), POLL_INTERVAL))
            # One failed look (a directory deleted mid-scan, no file descriptors left) must
            # not end the watching: the task is only awaited at shutdown, so it died silently.
            try:
                # While a load runs, its files are being read: the next poll after it looks.
                if self._loading or not self.changed():
                    continue
                # Loaded once the files have stood still for a poll: a file caught halfway
                # through being written (a generator, `rsync --inplace`) would be the live
                # rules for a while (a rule missing, or a truncated file's hooks gone).
                seen = self._look()
                # Half a poll at least (a loop held up past the tick would make it none).
                await asyncio.sleep(until_tick(time.time(), POLL_INTERVAL, POLL_INTERVAL / 2))
                if self._look() == seen:
                    await self.reload_async()
            except Exception as exc:
                _watch_failed(error=f"{type(exc).__name__}: {exc}")

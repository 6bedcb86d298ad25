"""The live rules: loaded at start, reloaded when a rules file or a `{file: ...}` secret
changes (a rotated secret is picked up the same way), or on SIGHUP.

A reload that fails validation keeps the rules that were live; its errors are logged as
`file:line: message` and shown by /readyz and the console.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from hookrunner.errors import ConfigErrors
from hookrunner.logs import Throttled, event
from hookrunner.rules.load import load_rules, rules_files
from hookrunner.rules.model import Ruleset

POLL_INTERVAL = 1.0  # seconds between looks at the rules files' modification times
_watch_failed = Throttled("rules.watch_failed", logging.ERROR, every=60.0)

Stat = tuple[str, int, float, int]


def _stat(path: Path) -> Stat | None:
    try:
        st = path.stat()  # through a link: a ConfigMap or Secret update swaps its target
    except OSError:
        return None
    return (str(path), st.st_ino, st.st_mtime, st.st_size)


def _fingerprint(rules_dir: Path) -> tuple[Stat, ...]:
    return tuple(s for s in map(_stat, rules_files(rules_dir)) if s is not None)


class LiveRules:
    def __init__(
        self, rules_dir: Path, root: Path | None = None, on_failure: Callable[[], None] | None = None
    ) -> None:
        self.rules_dir = rules_dir
        self.root = root
        self.current: Ruleset | None = None
        self.errors: list[str] = []  # of the last failed reload; empty when it succeeded
        self.loaded_at: float | None = None
        self.last_attempt_at: float | None = None
        self._fingerprint: tuple[Stat, ...] = ()
        # The secret files the last load read, as they were just before it read them.
        self._secrets: dict[Path, Stat | None] = {}
        self._on_failure = on_failure

    def reload(self) -> bool:
        """Load the rules; on failure keep the live ones. Returns whether the load succeeded."""
        self._fingerprint = _fingerprint(self.rules_dir)
        self.last_attempt_at = time.time()
        secrets: dict[Path, Stat | None] = {}
        self._secrets = secrets

        def about_to_read(path: Path) -> None:
            secrets.setdefault(path, _stat(path))

        try:
            ruleset = load_rules(self.rules_dir, root=self.root, on_secret_file=about_to_read)
        except Exception as exc:  # ConfigErrors, or a bug in loading: keep the live rules
            if isinstance(exc, ConfigErrors):
                self.errors = [str(e) for e in exc.errors]
            else:
                self.errors = [f"{self.rules_dir}: cannot load the rules: {type(exc).__name__}: {exc}"]
            for line in self.errors:
                event("rules.error", logging.ERROR, error=line)
            event("rules.reload_failed", logging.ERROR, errors=len(self.errors),
                  kept="previous rules" if self.current else "no rules")
            if self._on_failure:
                self._on_failure()
            return False
        self.current = ruleset
        self.errors = []
        self.loaded_at = time.time()
        for w in ruleset.warnings:
            event("rules.warning", logging.WARNING, warning=w)
        event("rules.loaded", hooks=len(ruleset.hooks), rules=len(ruleset.rules),
              files=len(ruleset.files))
        return True

    def changed(self) -> bool:
        return (_fingerprint(self.rules_dir) != self._fingerprint
                or any(_stat(p) != seen for p, seen in self._secrets.items()))

    async def watch(self) -> None:
        """Reload whenever the files change; runs until cancelled."""
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            # One failed look (a directory deleted mid-scan, no file descriptors left) must
            # not end the watching: the task is only awaited at shutdown, so it died silently.
            try:
                if self.changed():
                    self.reload()
            except Exception as exc:
                _watch_failed(error=f"{type(exc).__name__}: {exc}")

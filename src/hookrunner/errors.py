"""The exception hierarchy: one root, and a config error that knows where it happened."""

from __future__ import annotations


class HookrunnerError(Exception):
    """Root of every error hookrunner raises on purpose."""


class ConfigError(HookrunnerError):
    """A problem in a rules file, reported as `file:line: message`."""

    def __init__(
        self, message: str, file: str = "", line: int = 0, path: tuple[str | int, ...] = ()
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        # Keys below the node that raised it (e.g. ("argv", 2)); the loader maps them to a line.
        self.path = path
        # The line within a template's text where it is at fault (a multi-line `when: |`).
        self.template_line: int | None = None

    def __str__(self) -> str:
        if self.file:
            return f"{self.file}:{self.line}: {self.message}"
        return self.message


class ConfigErrors(HookrunnerError):
    """Several config errors found in one load; all are reported, not just the first."""

    def __init__(self, errors: list[ConfigError], warnings: list[str] | None = None) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors
        self.warnings = warnings or []  # found beside them (check shows both)


class VerifyError(HookrunnerError):
    """A request failed verification. `reason` is logged; the HTTP answer stays generic."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TemplateError(HookrunnerError):
    """A template or condition failed at render time (undefined name, sandbox refusal, ...)."""

    source: str | None = None  # the failing template's text, where known


class ActionError(HookrunnerError):
    """A rendered action is not allowed to run (path outside --root, bad value, ...)."""


class StoreUnavailable(HookrunnerError):
    """The store cannot be reached; the accept path answers 503 rather than 202."""


class DeliveryGone(HookrunnerError):
    """Runs were added to a delivery that is no longer stored (pruned meanwhile)."""


class StartupRefused(HookrunnerError):
    """`serve` cannot start as configured (port in use, identity taken, store unreachable):
    reported as one `server.refused` line, exit status 3."""

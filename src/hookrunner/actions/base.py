"""The runner protocol shared by every action type (shell, ansible, terraform, http).

Life of an action spec:
1. load time: `Runner.normalize(raw)` checks keys and types of the rule's `run.<kind>`
   mapping and returns a plain dict (e.g. shell `command` is split into `argv` here, *before*
   templating). Every string leaf of that dict is then compiled as a template by the loader.
2. accept time: the templates are rendered against the delivery into a JSON-able dict, which
   is stored with the run (so a replay of the run is exactly what ran).
3. run time: `Runner.run(rendered, ctx)` executes it through `actions.process` (the only code
   that starts processes) and returns a `RunResult`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

Outcome = Literal["succeeded", "failed", "timed_out", "canceled"]
# Characters of a run's reason kept with its record: a reason may quote a payload's value
# (a 300 KB URL or path), and it is in every listing of runs and `?wait` answer.
REASON_MAX = 1024
REASON_TAIL = 256  # of those, the end's: where an error names its detail (`..., got 'x'`)


def capped_reason(reason: str) -> str:
    """`reason` within REASON_MAX characters: its start and its end, and how much was cut."""
    if len(reason) <= REASON_MAX:
        return reason
    head = REASON_MAX - REASON_TAIL - 40  # room for the note
    cut = len(reason) - head - REASON_TAIL
    return f"{reason[:head]}...[{cut} characters cut]...{reason[-REASON_TAIL:]}"

class LogSink(Protocol):
    """The run's output log: capped, streamed to a file as it is written."""

    def write(self, data: bytes) -> None:
        """Append raw process output (the cap is enforced here)."""
        ...

    def note(self, text: str) -> None:
        """Append one line written by hookrunner itself, e.g. `[hookrunner] timed out after 10s`."""
        ...

@dataclass(frozen=True)
class RunContext:
    run_id: str
    delivery_id: str
    hook: str
    rule: str
    attempt: int
    node: str
    root: Path  # --root, resolved (per run if a symlink is in it): paths resolve against it, inside it
    work_dir: Path  # private to this attempt, under --data; a runner that uses it creates it
    env: Mapping[str, str]  # the base environment for child processes (no server secrets)
    timeout: float | None  # seconds; None = no limit
    cancel: asyncio.Event  # set on cancel / replace / shutdown / lost lease
    log: LogSink
    raw_body: bytes = b""  # filled only when the runner's `needs_delivery` says so
    payload: Any = None
    # Called right before the action does what cannot be taken back (starts a process,
    # sends a request), again harmlessly: the dispatcher records the start there, so a crash
    # before it queues the run again (nothing ran) and one after it is an interruption.
    # Raises NotStarted where the start cannot be recorded.
    starting: Callable[[], None] = lambda: None
    # When (time.monotonic()) the action's processes must be gone, once there is such a time:
    # its node could not renew the run's lease, and another node may start the run (or the
    # next of its key) when it expires. A stop's grace ends there. None: no such time.
    stop_by: Callable[[], float | None] = lambda: None

@dataclass
class RunResult:
    outcome: Outcome
    exit_code: int | None = None
    reason: str = ""  # one line for the run record, e.g. "exit 2" or "HTTP 500"
    outputs: dict[str, Any] = field(default_factory=dict)  # terraform outputs, ansible stats, ...
    # Nothing of the action ran: its process could not start for want of a resource (file
    # descriptors, processes, memory), which a later try may have. Queued again.
    not_started: bool = False
    # ...because the disk is full: queued again for as long as that lasts (not a few times).
    waits_for_room: bool = False
    # Refused for what the stored action itself says (a template error, a path outside
    # --root): every later attempt of the same spec would be refused the same, so none is made.
    final: bool = False
    # Why, when it is not such a refusal (an http 4xx): added to the reason if the rule retries.
    final_note: str = ""
    # Seconds the other end asked to be left alone (an http answer's Retry-After): a retry
    # waits at least this long, within the rule's max_backoff.
    retry_after: float | None = None

class Runner(Protocol):
    kind: str

    def normalize(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Check the unrendered spec; raise ConfigError(message, path=(key, ...)) on problems."""
        ...

    def implicit_concurrency_key(self, rendered: Mapping[str, Any]) -> str | None:
        """A key the action always serializes on (terraform: dir + workspace), or None."""
        ...

    def needs_delivery(self, rendered: Mapping[str, Any]) -> bool:
        """Whether `run` reads `ctx.raw_body` / `ctx.payload`; only then are they loaded."""
        ...

    def refusal(self, rendered: Mapping[str, Any], root: Path) -> str | None:
        """Why `run` would refuse this spec before starting anything (a path outside root, a
        bad name, a header with a line break), from the spec and the files under `root`
        alone; None where it would start. `hookrunner test` says it; `run` makes the same
        checks. The server's environment is not consulted (the CLI's is not the server's)."""
        ...

    async def run(self, rendered: Mapping[str, Any], ctx: RunContext) -> RunResult:
        """Execute; raise ActionError for a spec that may not run (path outside root, ...)."""
        ...

RUNNERS: dict[str, Runner] = {}

def register(runner: Runner) -> Runner:
    RUNNERS[runner.kind] = runner
    return runner


class NotStarted(Exception):
    """Raised by `RunContext.starting` where the start cannot be recorded: nothing of the
    action ran; `result` is the attempt's."""

    def __init__(self, result: RunResult) -> None:
        super().__init__(result.reason)
        self.result = result

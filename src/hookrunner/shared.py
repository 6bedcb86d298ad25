"""What the processes of one server share (`--http-workers` > 1), made before they fork.

- `budget`: the --max-queued counters, in shared memory (see QueueBudget).
- the wake pipe: an HTTP worker writes a byte once it journaled runs (or a cancel was asked
  for); the main process's dispatcher reads it and claims at once.
- `upstream`: the main process's Unix socket, where workers forward all but hooks.
- the ready pipe: the main process writes a byte once it serves (its lifespan started), so
  workers only start once the node's identity is taken.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from hookrunner.budget import QueueBudget

# prometheus_client's multiprocess mode: where each process writes its values.
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
# The supervisor's "reload the rules" to every process. Not SIGHUP: a SIGHUP sent to one
# of them (the pid a log line names, not the supervisor's) is passed up to the supervisor, so
# every process reloads, and none twice. SIGURG's default action is to ignore it: a process
# not yet taking it is not killed.
RELOAD_SIGNAL = signal.SIGURG


def ask_supervisor_to_reload() -> None:
    """A SIGHUP in a process of `--http-workers`: to its supervisor, which passes it to all."""
    with contextlib.suppress(OSError):
        os.kill(os.getppid(), signal.SIGHUP)


@dataclass(frozen=True)
class Shared:
    budget: QueueBudget
    wake_r: int
    wake_w: int
    ready_r: int
    ready_w: int
    upstream: str

    @classmethod
    def create(cls, runtime: Path, workers: int) -> Shared:
        """In the supervisor's private directory `runtime`, for the main process (slot 0) and
        `workers` HTTP workers (slots 1..workers)."""
        wake_r, wake_w = os.pipe()
        ready_r, ready_w = os.pipe()
        for fd in (wake_r, wake_w):
            os.set_blocking(fd, False)
        budget = QueueBudget(str(runtime / "budget.lock"), slots=workers + 1)
        return cls(budget, wake_r, wake_w, ready_r, ready_w, str(runtime / "main.sock"))

    def poke(self) -> None:
        """Tell the dispatcher there is work (a full pipe already says so)."""
        with contextlib.suppress(BlockingIOError):
            os.write(self.wake_w, b"\0")

    def announce_ready(self) -> None:
        os.write(self.ready_w, b"1")

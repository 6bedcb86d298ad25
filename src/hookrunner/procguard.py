"""Keep the server's memory and environment from its own actions.

Actions run as the server's user, so without this any script could read the server's
environment (`/proc/<pid>/environ`: the admin token, a database password, hooks' secrets
given as variables) or its memory. Marking the process not dumpable (prctl PR_SET_DUMPABLE
0, as sshd and gpg-agent do) limits those files, and ptrace, to root (CAP_SYS_PTRACE), and
writes no core dump holding secrets. It is kept over fork (`--http-workers`) and reset by
exec, so actions and the tools they start are as usual. Linux only; elsewhere a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3


def _prctl() -> ctypes._NamedFuncPointer | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None
    fn: ctypes._NamedFuncPointer = libc.prctl
    fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    fn.restype = ctypes.c_int
    return fn


def not_dumpable() -> str | None:
    """Mark this process not dumpable; None when done, else why not (for a warning)."""
    prctl = _prctl()
    if prctl is None:
        return "not on Linux"
    if prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        return f"prctl failed (errno {ctypes.get_errno()})"
    return None


def dumpable() -> bool | None:
    """Whether this process is dumpable; None where that cannot be told."""
    prctl = _prctl()
    return None if prctl is None else bool(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))

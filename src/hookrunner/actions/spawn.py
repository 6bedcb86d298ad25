"""Starting a process with glibc's `posix_spawn`, without holding the GIL while it starts.

`subprocess.Popen` holds the GIL through `vfork()` until the child has exec'd (CPython
3.11), so a whole server stalls for each process it starts, ~0.5 ms under load (measured:
a third of the dispatcher's wall time in the end-to-end benchmark), and a thread cannot
overlap it with the event loop. A call through ctypes releases the GIL, so the dispatcher
prepares the call on the loop (`Spawn`), makes it on a thread (`Spawn.call`), and the loop
serves requests meanwhile (measured: ~10 % more actions per second end to end).

The child is what `Popen(..., start_new_session=True, close_fds=True, cwd=...)` starts: a
new session, the given stdin and output (stdout and stderr both), descriptors from 3 up
closed, SIGPIPE and SIGXFSZ back to their default action (Python ignores them), no signal
blocked. It needs glibc 2.34 or later (`addchdir_np`, `addclosefrom_np`); elsewhere
`AVAILABLE` is False and the caller uses Popen.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import signal
import sys
from collections.abc import Mapping, Sequence

# <spawn.h> flags (the same on every glibc architecture).
_SETSIGDEF, _SETSIGMASK, _SETSID = 0x04, 0x08, 0x80
# Room for glibc's opaque structs (posix_spawn_file_actions_t is 80 bytes, posix_spawnattr_t
# 336, sigset_t 128 on x86-64): more than enough, so an ABI difference cannot overflow them.
_STRUCT_BYTES = 1024
_NEEDED = (
    "posix_spawn", "posix_spawn_file_actions_init", "posix_spawn_file_actions_destroy",
    "posix_spawn_file_actions_adddup2", "posix_spawn_file_actions_addchdir_np",
    "posix_spawn_file_actions_addclosefrom_np", "posix_spawnattr_init",
    "posix_spawnattr_destroy", "posix_spawnattr_setflags", "posix_spawnattr_setsigdefault",
    "posix_spawnattr_setsigmask", "sigemptyset", "sigaddset",
)


def _load(kind: type[ctypes.CDLL]) -> ctypes.CDLL | None:
    try:
        libc = kind(None, use_errno=True)
    except OSError:
        return None
    if not all(hasattr(libc, name) for name in _NEEDED):
        return None
    libc.posix_spawnattr_setflags.argtypes = [ctypes.c_void_p, ctypes.c_short]
    return libc


# posix_spawn itself through CDLL, which releases the GIL for the call; the dozen quick calls
# that set it up and tear it down through PyDLL, which keeps it: each release is a chance
# for the event loop to take the GIL and for this thread to wait for it back.
_LIBC = _load(ctypes.CDLL)
_QUICK = _load(ctypes.PyDLL)
AVAILABLE = _LIBC is not None and _QUICK is not None


# os.fsencode's codec, for str.encode: the same bytes without its Python-level checks, four
# calls for each of a start's two dozen strings (a run's start is on the event loop).
FS_CODEC = (sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())


def _strings(items: Sequence[bytes]) -> ctypes.Array[ctypes.c_char_p]:
    return (ctypes.c_char_p * (len(items) + 1))(*items, None)


class Spawn:
    """One `posix_spawn` call, its C arguments built up front (on the event loop)."""

    def __init__(self, argv: Sequence[str], *, cwd: str, env: Mapping[str, str],
                 stdin_fd: int, output_fd: int) -> None:
        assert _LIBC is not None, "spawn.AVAILABLE is False: use subprocess.Popen"
        self.program = argv[0]
        self.cwd = cwd
        codec, errors = FS_CODEC
        self._path = _locate(argv[0], env).encode(codec, errors)
        # C strings end at a NUL: refuse what Popen refuses rather than cut an argument short.
        # (Searched in the text, joined: no other character encodes to a NUL or an "=".)
        if "\0" in "".join(argv) or "\0" in "".join(env) or "\0" in "".join(env.values()):
            raise ValueError("embedded null byte")
        if "=" in "".join(env):
            raise ValueError("illegal environment variable name")
        self._argv = _strings([a.encode(codec, errors) for a in argv])
        self._envp = _strings([f"{k}={v}".encode(codec, errors) for k, v in env.items()])
        self._stdin_fd = stdin_fd
        self._output_fd = output_fd

    def call(self) -> int:
        """Start the process (the GIL is released meanwhile); its pid, or OSError."""
        libc, quick = _LIBC, _QUICK
        assert libc is not None and quick is not None
        actions = ctypes.create_string_buffer(_STRUCT_BYTES)
        attr = ctypes.create_string_buffer(_STRUCT_BYTES)
        _check(quick.posix_spawn_file_actions_init(actions))
        _check(quick.posix_spawnattr_init(attr))
        try:
            _check(quick.posix_spawn_file_actions_adddup2(actions, self._stdin_fd, 0))
            _check(quick.posix_spawn_file_actions_adddup2(actions, self._output_fd, 1))
            _check(quick.posix_spawn_file_actions_adddup2(actions, self._output_fd, 2))
            _check(quick.posix_spawn_file_actions_addchdir_np(actions, self.cwd.encode(*FS_CODEC)))
            _check(quick.posix_spawn_file_actions_addclosefrom_np(actions, 3))
            default = ctypes.create_string_buffer(_STRUCT_BYTES)
            mask = ctypes.create_string_buffer(_STRUCT_BYTES)
            quick.sigemptyset(default)
            quick.sigaddset(default, signal.SIGPIPE)
            quick.sigaddset(default, signal.SIGXFSZ)
            quick.sigemptyset(mask)
            _check(quick.posix_spawnattr_setsigdefault(attr, default))
            _check(quick.posix_spawnattr_setsigmask(attr, mask))
            _check(quick.posix_spawnattr_setflags(attr, _SETSIGDEF | _SETSIGMASK | _SETSID))
            pid = ctypes.c_int(0)
            err = libc.posix_spawn(ctypes.byref(pid), self._path, actions, attr,
                                   self._argv, self._envp)
        finally:
            quick.posix_spawn_file_actions_destroy(actions)
            quick.posix_spawnattr_destroy(attr)
        if err:
            # The child's chdir and its exec report through the same errno: name the culprit.
            usable = os.path.isdir(self.cwd) and os.access(self.cwd, os.X_OK)
            culprit = self.program if usable else self.cwd
            raise OSError(err, os.strerror(err), culprit)
        return pid.value


def _check(err: int) -> None:
    if err:
        raise OSError(err, os.strerror(err))


def _locate(program: str, env: Mapping[str, str]) -> str:
    """`program` as exec will find it: a bare name is looked up on the child's PATH only, as
    Popen does (never in the working directory)."""
    if "/" in program:
        return program
    found = shutil.which(program, path=os.pathsep.join(os.get_exec_path(dict(env))))
    if found is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
    return found

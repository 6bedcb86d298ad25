"""Confinement of paths named in rules to `--root` (or a directory below it)."""

from __future__ import annotations

import contextlib
import os
import posixpath
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from hookrunner.errors import ActionError
from hookrunner.redact import PATHS_WRITTEN


def real(path: Path, shown: str | None = None) -> Path:
    """`path.resolve()`; a symlink loop is an ActionError naming `shown` (default: the path)
    instead of the RuntimeError Python 3.11-3.12 raise, which failed `check` with a
    traceback, every rule at load and a run as an internal error."""
    try:
        return path.resolve()
    except RuntimeError:
        raise ActionError(f"path {(str(path) if shown is None else shown)[:200]!r} goes "
                          "through a symlink loop (too many levels of symbolic links)") from None


def confine(root: Path, value: str, *, base: str = "") -> Path:
    """`value` resolved against `root / base`; ActionError unless it stays inside that directory.

    Symlinks are followed before the check, so a link that points out of the tree is refused
    just like `..` or an absolute path elsewhere. Absolute paths inside the tree are accepted.
    """
    if not isinstance(value, str) or not value.strip():
        raise ActionError(f"path {value!r} is empty")
    if "\0" in value:
        raise ActionError(f"path {value!r} contains a NUL byte")
    top = real(root / base)
    resolved = real(top / value, value)
    if not resolved.is_relative_to(top):
        where = "--root" if not base else f"{base.rstrip('/')}/ under --root"
        raise ActionError(f"path {value!r} is outside {where}")
    return resolved


@contextlib.contextmanager
def pinned_dir(root: Path, path: Path) -> Iterator[str]:
    """`path` (confined already) as a child process should enter it: through a descriptor
    of the directory checked to be under `root` (`/proc/self/fd/<n>`: the child's own copy,
    open until its exec; `/proc/<pid>` of a server that is not dumpable, with file
    capabilities, is closed to its children), so a swap of the path for a symlink out of
    --root between the check and the start takes no effect (a templated `cwd` ran in the
    symlink's target in such a race). Where the directory cannot be opened, `path` itself:
    the start then fails with the reason."""
    try:
        # O_PATH: a directory that may be entered but not listed (mode --x) opens too.
        fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        yield str(path)
        return
    try:
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # no /proc: as before, the path
            yield str(path)
            return
        if not Path(real).is_relative_to(root):
            raise ActionError(f"path {str(path)!r} is outside --root (it was replaced by a "
                              "link out of it as the run started)")
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def written_dir(template: str) -> str:
    """The directory a templated path's text names before its first `{{`
    (`scripts/deploy-{{ x }}.sh` -> `scripts/`), or ""."""
    before = template.split("{{", 1)[0].split("{%", 1)[0].split("{#", 1)[0]
    return before[:before.rfind("/") + 1]


def stays_written(value: str, template: str) -> bool:
    """Whether `value`, rendered from `template`, names something inside the directory the
    template writes before its `{{` (`tf/envs/` of `tf/envs/{{ x }}`; "" is its base dir).
    See `adds_within`."""
    return adds_within(value, written_dir(template))


def adds_within(value: str, written: str) -> bool:
    """Whether `value` is the directory `written` (a rule's text before its `{{`) followed by
    a name inside it, with no `..` and no leading `/` in what the value added: the rule says
    where, not the payload (`x/../group_vars/all` stays under playbooks/, but not where the
    rule said; `deploy-{{ x }}.sh` of `x/../cleanup` would drop the rule's `deploy-`)."""
    if not value.startswith(written):
        return False
    added = value[len(written):]
    return (bool(posixpath.normpath(added).strip("/.")) and not added.startswith("/")
            and ".." not in added.split("/"))


def written_dirs(spec: Mapping[str, Any], keys: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Of each (key, base) whose value in a rule's action is templated: the directory under
    --root its text writes before the `{{` (`tf/envs/` of `tf/envs/{{ x }}`; of a list, each
    item's, None for one not templated). Kept with the run (redact.PATHS_WRITTEN) for its
    start to check through symlinks: `stays_written` reads only the text."""
    marks: dict[str, Any] = {}
    for key, base in keys:
        value = spec.get(key)
        items = value if isinstance(value, list) else [value]
        found = [posixpath.join(base, written_dir(v)) if isinstance(v, str) and "{{" in v
                 else None for v in items]
        if any(f is not None for f in found):
            marks[key] = found if isinstance(value, list) else found[0]
    return marks


def written_of(rendered: Mapping[str, Any], key: str, index: int | None = None) -> str | None:
    """The directory written_dirs kept for `key` (its item `index`), or None: not templated,
    or a run queued before they were kept."""
    mark = (rendered.get(PATHS_WRITTEN) or {}).get(key)
    if index is not None:
        mark = mark[index] if isinstance(mark, list) and index < len(mark) else None
    return mark if isinstance(mark, str) else None


def stays_in(root: Path, resolved: Path, written: str | None, value: str) -> Path:
    """`resolved` (a path `confine`d under --root), once symlinks are followed, still in the
    directory `written` its template writes before the `{{`: `deploy-{{ x }}.sh` of a link
    `deploy-y.sh -> ../cleanup.sh` (left by an earlier action) ran cleanup.sh. ActionError."""
    if written and not resolved.is_relative_to(real(root / written, written)):
        raise ActionError(f"path {value[:200]!r} is outside {written.rstrip('/')}/ once its "
                          "symlinks are followed: a templated path must stay in the directory "
                          "the rule writes before its {{")
    return resolved

"""Confinement of paths named in rules to `--root` (or a directory below it)."""

from __future__ import annotations

from pathlib import Path

from hookrunner.errors import ActionError


def confine(root: Path, value: str, *, base: str = "") -> Path:
    """`value` resolved against `root / base`; ActionError unless it stays inside that directory.

    Symlinks are followed before the check, so a link that points out of the tree is refused
    just like `..` or an absolute path elsewhere. Absolute paths inside the tree are accepted.
    """
    if not isinstance(value, str) or not value.strip():
        raise ActionError(f"path {value!r} is empty")
    if "\0" in value:
        raise ActionError(f"path {value!r} contains a NUL byte")
    top = (root / base).resolve()
    resolved = (top / value).resolve()
    if not resolved.is_relative_to(top):
        where = "--root" if not base else f"{base.rstrip('/')}/ under --root"
        raise ActionError(f"path {value!r} is outside {where}")
    return resolved

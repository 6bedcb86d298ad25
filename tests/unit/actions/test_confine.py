"""confine(): a path named in a rule stays under --root (or a directory below it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hookrunner.actions.paths import confine
from hookrunner.errors import ActionError


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "playbooks" / "sub").mkdir(parents=True)
    (r / "scripts").mkdir()
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", r / "escape")
    os.symlink(r / "scripts", r / "playbooks" / "to-scripts")
    os.symlink("sub", r / "playbooks" / "inner")
    return r


@pytest.mark.parametrize(
    ("value", "base", "expected"),
    [
        ("scripts/x.sh", "", "scripts/x.sh"),
        ("./scripts/../scripts/x.sh", "", "scripts/x.sh"),
        ("new/file", "", "new/file"),  # need not exist yet
        ("site.yml", "playbooks", "playbooks/site.yml"),
        ("sub/../site.yml", "playbooks", "playbooks/site.yml"),
        ("inner/x.yml", "playbooks", "playbooks/sub/x.yml"),  # symlink that stays inside
        (".", "", ""),
    ],
)
def test_inside(root: Path, value: str, base: str, expected: str) -> None:
    assert confine(root, value, base=base) == (root / expected).resolve()


def test_absolute_inside_is_accepted(root: Path) -> None:
    assert confine(root, str(root / "scripts")) == (root / "scripts").resolve()


@pytest.mark.parametrize(
    ("value", "base"),
    [
        ("..", ""),
        ("../outside/x", ""),
        ("scripts/../../outside", ""),
        ("/etc/passwd", ""),
        ("escape/x.sh", ""),  # symlink out of root
        ("escape", ""),
        ("../scripts/x.sh", "playbooks"),  # inside root, outside playbooks/
        ("to-scripts/x.yml", "playbooks"),  # symlink out of playbooks/
        ("", ""),
        ("a\0b", ""),
    ],
)
def test_outside_is_refused(root: Path, value: str, base: str) -> None:
    with pytest.raises(ActionError):
        confine(root, value, base=base)


def test_message_names_root(root: Path) -> None:
    with pytest.raises(ActionError, match=r"path '\.\./x' is outside --root"):
        confine(root, "../x")


def test_a_pinned_dir_is_the_one_checked_whatever_the_path_becomes(root: Path) -> None:
    """A templated `cwd` checked, then swapped for a link out of --root before the start:
    the run ran in the link's target. A process enters the directory checked."""
    import subprocess

    from hookrunner.actions.paths import pinned_dir

    (root / "work").mkdir()
    checked = confine(root.resolve(), "work")
    with pinned_dir(root.resolve(), checked) as cwd:
        (root / "work").rename(root / "work-moved")
        os.symlink(root.parent / "outside", root / "work")  # the swap, after the check
        where = subprocess.run(["pwd", "-P"], cwd=cwd, capture_output=True, text=True,
                               check=True).stdout.strip()
    assert where == str((root / "work-moved").resolve())
    # Swapped before the directory was opened: refused, not entered.
    with pytest.raises(ActionError, match="outside --root"), pinned_dir(root.resolve(), checked):
        pass

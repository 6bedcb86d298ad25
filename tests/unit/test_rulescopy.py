"""The copy of the last good rules that --http-workers' replacement workers start from."""

from __future__ import annotations

import os
from pathlib import Path

from hookrunner import rulescopy
from hookrunner.reload import _stat


def _loaded(rules: Path) -> list[rulescopy.Stat]:
    return [s for s in (_stat(p) for p in sorted(rules.rglob("*.yaml"))) if s is not None]


def test_each_copy_is_a_version_behind_one_link_and_the_one_before_is_kept(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    (rules / "team").mkdir(parents=True)
    (rules / "a.yaml").write_text("a: 1\n")
    (rules / "team" / "b.yaml").write_text("b: 1\n")
    dest = tmp_path / "rules-copy"
    assert rulescopy.save(rules, _loaded(rules), dest, _stat, {}, None)
    assert (dest / "team" / "b.yaml").read_text() == "b: 1\n" and dest.is_symlink()
    first = os.readlink(dest)
    (rules / "a.yaml").write_text("a: 2\n")
    assert rulescopy.save(rules, _loaded(rules), dest, _stat, {}, None)
    assert (dest / "a.yaml").read_text() == "a: 2\n"
    assert (tmp_path / first).is_dir()  # a worker still reading it is not cut short
    assert rulescopy.save(rules, _loaded(rules), dest, _stat, {}, None)
    assert not (tmp_path / first).exists()  # two behind: gone
    assert len(list(tmp_path.glob("rules-copy.*"))) == 2


def test_no_copy_of_nothing_nor_of_files_changed_since_their_load(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "a.yaml").write_text("a: 1\n")
    dest = tmp_path / "rules-copy"
    assert not rulescopy.save(rules, [], dest, _stat, {}, None)  # a listing that failed
    seen = _loaded(rules)
    (rules / "a.yaml").write_text("a: 22\n")  # changed after the load read it
    assert not rulescopy.save(rules, seen, dest, _stat, {}, None)
    assert not dest.exists() and not list(tmp_path.glob("rules-copy.*"))


def test_a_load_with_a_link_that_leads_nowhere_is_still_copied(tmp_path: Path) -> None:
    """The load skips such a link with a warning; the copy must not fail on it (a worker
    replaced while the files were broken then had no copy, and answered 503)."""
    from hookrunner.reload import LiveRules

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "a.yaml").write_text("hooks: {a: {verify: {none: {}}}}\n")
    (rules / "old.yaml").symlink_to(tmp_path / "gone.yaml")
    (rules / "team").symlink_to(tmp_path / "gone")
    copy = tmp_path / "copy"
    live = LiveRules(rules, copy=copy)
    assert live.reload()
    assert (copy / "a.yaml").read_text().startswith("hooks:")


def test_a_secret_that_is_no_regular_file_is_left_out_of_the_copy_unread(tmp_path: Path) -> None:
    """The load makes its hook unavailable without reading it; the copy for --http-workers
    read it all the same: a FIFO hung the server's start, /dev/zero ate its memory."""
    import threading

    from hookrunner.reload import LiveRules

    rules, root = tmp_path / "rules", tmp_path / "root"
    rules.mkdir()
    (root / "secrets").mkdir(parents=True)
    (rules / "gh.yaml").write_text("hooks:\n  gh:\n    verify: {github: {secret: {file: secrets/gh}}}\n"
                                   "  z:\n    verify: {github: {secret: {file: secrets/z}}}\n"
                                   "  ok:\n    verify: {github: {secret: {file: secrets/ok}}}\n")
    os.mkfifo(root / "secrets" / "gh")
    (root / "secrets" / "z").symlink_to("/dev/zero")
    (root / "secrets" / "ok").write_text("s\n")
    live = LiveRules(rules, root=root, copy=tmp_path / "copy")
    done: list[bool] = []
    thread = threading.Thread(target=lambda: done.append(live.reload()), daemon=True)
    thread.start()
    thread.join(timeout=20)
    assert done == [True], "the load (and its copy) blocked"
    assert live.current is not None and sorted(live.current.unavailable) == ["gh", "z"]
    kept = tmp_path / "copy" / rulescopy.ROOT / "secrets"
    assert sorted(p.name for p in kept.iterdir()) == ["ok"]

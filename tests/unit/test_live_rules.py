"""LiveRules noticing changes on a real filesystem, including a ConfigMap's atomic update."""

from __future__ import annotations

from pathlib import Path

from hookrunner.reload import LiveRules

HOOK = "hooks:\n  {name}:\n    verify: {{none: {{}}}}\n"


def _configmap_version(mount: Path, version: str, hook: str) -> None:
    """Kubernetes' atomic writer: files in a new hidden `..<timestamp>` directory, `..data`
    switched to it by a rename, and each key a link `x.yaml -> ..data/x.yaml` made once."""
    (mount / version).mkdir()
    (mount / version / "gh.yaml").write_text(HOOK.format(name=hook))
    (mount / "..data_tmp").symlink_to(version)
    (mount / "..data_tmp").rename(mount / "..data")
    if not (mount / "gh.yaml").is_symlink():
        (mount / "gh.yaml").symlink_to("..data/gh.yaml")


def test_a_configmap_update_is_noticed_and_loaded(tmp_path: Path) -> None:
    """The new version has the same size (and maybe the same mtime): the inode tells."""
    _configmap_version(tmp_path, "..v1", "aa")
    live = LiveRules(tmp_path)
    assert live.reload()
    assert live.current is not None and list(live.current.hooks) == ["aa"]
    assert not live.changed()
    _configmap_version(tmp_path, "..v2", "bb")
    assert live.changed()
    assert live.reload()
    assert list(live.current.hooks) == ["bb"]
    assert not live.changed()


def test_hidden_files_neither_load_nor_count_as_changes(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(HOOK.format(name="aa"))
    live = LiveRules(tmp_path)
    assert live.reload()
    (tmp_path / ".#a.yaml").write_text(HOOK.format(name="aa"))  # an editor's lock/backup
    assert not live.changed()
    (tmp_path / "b.yml").write_text(HOOK.format(name="bb"))
    assert live.changed()
    assert live.reload()
    assert live.current is not None and sorted(live.current.hooks) == ["aa", "bb"]

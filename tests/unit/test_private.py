"""What hookrunner creates under --data is private; what the operator made is left alone."""

from __future__ import annotations

from pathlib import Path

from hookrunner.private import open_to_others, private_dir, private_file


def _mode(p: Path) -> int:
    return p.stat().st_mode & 0o777


def test_private_dir_makes_every_missing_directory_0700_and_leaves_existing_ones(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    private_dir(tmp_path / "a" / "b")
    private_dir(tmp_path / "a" / "b")  # again: nothing to do
    assert (_mode(tmp_path), _mode(tmp_path / "a"), _mode(tmp_path / "a" / "b")) == (0o755, 0o700, 0o700)


def test_private_file_creates_0600_and_never_touches_an_existing_file(tmp_path: Path) -> None:
    private_file(tmp_path / "new")
    old = tmp_path / "old"
    old.write_text("kept")
    old.chmod(0o644)
    private_file(old)
    assert (_mode(tmp_path / "new"), _mode(old), old.read_text()) == (0o600, 0o644, "kept")


def test_open_to_others_names_the_mode_of_a_readable_dir(tmp_path: Path) -> None:
    (tmp_path / "shut").mkdir(mode=0o700)
    (tmp_path / "open").mkdir()
    (tmp_path / "open").chmod(0o750)
    assert open_to_others(tmp_path / "shut") is None
    assert open_to_others(tmp_path / "open") == 0o750
    assert open_to_others(tmp_path / "missing") is None

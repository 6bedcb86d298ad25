"""The admin bearer token: the scheme is case-insensitive (RFC 7235), the token is not."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from hookrunner.auth import admin_token, bearer_ok, forget_stale_token

TOKEN = "s3cret-Token"


@pytest.mark.parametrize(("header", "ok"), [
    (f"Bearer {TOKEN}", True),
    (f"bearer {TOKEN}", True),
    (f"BEARER {TOKEN}", True),
    (f"bEaReR \t{TOKEN}\t", True),
    (f"Bearer {TOKEN.lower()}", False),
    (f"Basic {TOKEN}", False),
    (f"Bearer{TOKEN}", False),
    (TOKEN, False),
    ("Bearer ", False),
    ("", False),
    (None, False),
])
def test_bearer_scheme_any_case_token_exact(header: str | None, ok: bool) -> None:
    assert bearer_ok(header, TOKEN) is ok


def test_no_configured_token_accepts_nothing() -> None:
    assert bearer_ok("Bearer ", "") is False


@pytest.mark.parametrize("configured", ["tok\n", " tok ", "tok\r\n", "\ttok"])
def test_a_configured_token_loses_the_whitespace_no_header_can_carry(
    configured: str, tmp_path: Path
) -> None:
    token, file = admin_token(configured, tmp_path)
    assert (token, file) == ("tok", None)
    assert bearer_ok("Bearer tok", token)


def test_a_blank_configured_token_is_no_token(tmp_path: Path) -> None:
    token, file = admin_token("  \n", tmp_path)
    assert file == tmp_path / "admin-token" and len(token) >= 32


def test_a_configured_token_removes_a_generated_one_that_is_no_longer_in_use(
    tmp_path: Path,
) -> None:
    """`TOKEN=$(cat .hookrunner/admin-token)` (the README's line) must not hand out a token
    the server no longer takes (the server holding the data dir removes it)."""
    generated, _ = admin_token("", tmp_path)
    assert admin_token("configured", tmp_path) == ("configured", None)
    assert (tmp_path / "admin-token").exists()  # not by merely reading the setting
    forget_stale_token("configured", tmp_path)
    assert not (tmp_path / "admin-token").exists()
    (tmp_path / "admin-token").write_text("same\n")  # the same token: kept
    forget_stale_token("same", tmp_path)
    assert (tmp_path / "admin-token").read_text() == "same\n"
    assert generated != "configured"


def test_two_servers_generating_at_once_both_use_the_first_token_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The file was created empty, then written: a server starting at the same moment read
    it empty, removed it and wrote its own, and the first ran with a token not in the file."""
    real_link = os.link

    def other_server_first(src: str, dst: str) -> None:
        Path(dst).write_text("the-other-one\n")  # it linked its whole file in just now
        real_link(src, dst)

    monkeypatch.setattr(os, "link", other_server_first)
    assert admin_token("", tmp_path) == ("the-other-one", tmp_path / "admin-token")
    assert [p.name for p in tmp_path.iterdir()] == ["admin-token"]  # no file left aside


def test_where_the_file_system_has_no_hard_links_the_token_is_written_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_links(src: str, dst: str) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")  # as vfat answers

    monkeypatch.setattr(os, "link", no_links)
    token, path = admin_token("", tmp_path)
    assert path == tmp_path / "admin-token" and path.read_text() == token + "\n"
    assert path.stat().st_mode & 0o777 == 0o600 and len(list(tmp_path.iterdir())) == 1


def test_a_token_left_aside_by_a_crash_is_removed_by_the_server_holding_the_data_dir(
    tmp_path: Path,
) -> None:
    (tmp_path / ".admin-token.abc123").write_text("half\n")
    (tmp_path / ".admin-token.now456").write_text("being written\n")
    os.utime(tmp_path / ".admin-token.abc123", (1, 1))  # long ago
    forget_stale_token("", tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [".admin-token.now456"]

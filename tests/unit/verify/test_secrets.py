"""`resolve_secret`: env, file, literal and rotation lists; errors never show values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hookrunner.errors import ConfigError
from hookrunner.rules.yamlsrc import WrittenInt
from hookrunner.verify.secrets import SecretUnavailable, is_literal, resolve_secret


def test_env_secret_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOKRUNNER_TEST_SECRET", "s3cret")
    assert resolve_secret({"env": "HOOKRUNNER_TEST_SECRET"}) == [b"s3cret"]


@pytest.mark.parametrize("value", [None, ""])
def test_missing_or_empty_env_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is not None:
        monkeypatch.setenv("HOOKRUNNER_TEST_SECRET", value)
    with pytest.raises(ConfigError, match="HOOKRUNNER_TEST_SECRET"):
        resolve_secret({"env": "HOOKRUNNER_TEST_SECRET"})


@pytest.mark.parametrize("pasted", ["ghp_S3cr3tV4lue/xyz+abc", "two words", "9abc", "A" * 65,
                                    "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
                                    "e3b0c44298fc1c149afbf4c8996fb924", "xoxb-123-456-abcDEF",
                                    "DEADBEEF0123456789ABCDEF", "JBSWY3DPEHPK3PXP"])
def test_a_secret_pasted_where_the_variable_name_goes_is_not_repeated(pasted: str) -> None:
    """`{env: "ghp_..."}`: the message that the variable is unset showed the value, in `check`
    and in the server's log. A name written as variables' are is still named."""
    with pytest.raises(SecretUnavailable) as info:
        resolve_secret({"env": pasted})
    assert pasted not in info.value.message and "may be the secret" in info.value.message
    with pytest.raises(SecretUnavailable, match="environment variable HR_UNSET_1 is not set"):
        resolve_secret({"env": "HR_UNSET_1"})


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"abc\n", b"abc"),
        (b"abc\r\n", b"abc"),
        (b"abc\n\n", b"abc\n"),  # only one newline is stripped
        (b" abc ", b" abc "),
    ],
)
def test_file_secret_strips_one_trailing_newline(
    tmp_path: Path, content: bytes, expected: bytes
) -> None:
    path = tmp_path / "secret"
    path.write_bytes(content)
    assert resolve_secret({"file": str(path)}) == [expected]


@pytest.mark.parametrize(("value", "expected"), [("tok\n", b"tok"), ("tok\r\n", b"tok"),
                                                ("tok\n\n", b"tok\n"), (" tok ", b" tok ")])
def test_env_secret_strips_one_trailing_newline_as_a_file_does(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bytes
) -> None:
    """`echo tok | base64` into a Kubernetes Secret, injected as a variable, ends in a newline
    that no sender signs with (and that no header can carry)."""
    monkeypatch.setenv("HOOKRUNNER_TEST_SECRET", value)
    assert resolve_secret({"env": "HOOKRUNNER_TEST_SECRET"}) == [expected]


def test_an_env_secret_of_only_a_newline_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOKRUNNER_TEST_SECRET", "\n")
    with pytest.raises(ConfigError, match="not set or empty"):
        resolve_secret({"env": "HOOKRUNNER_TEST_SECRET"})


def test_relative_file_resolves_against_root(tmp_path: Path) -> None:
    (tmp_path / "gh").write_bytes(b"x\n")
    assert resolve_secret({"file": "gh"}, root=tmp_path) == [b"x"]


def test_missing_file_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope"):
        resolve_secret({"file": str(tmp_path / "nope")})


def test_empty_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "e").write_bytes(b"\n")
    with pytest.raises(ConfigError, match="empty"):
        resolve_secret({"file": str(tmp_path / "e")})


def test_literal_and_list_rotation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOKRUNNER_TEST_SECRET", "new")
    assert resolve_secret(["old", {"env": "HOOKRUNNER_TEST_SECRET"}, "0123", 12345678]) == [
        b"old",
        b"new",
        b"0123",
        b"12345678",  # all digits, written as they are read: kept (older configs have these)
    ]


@pytest.mark.parametrize("number", [WrittenInt(83, "0123"), WrittenInt(31, "0x1F"),
                                    WrittenInt(12345, "12_345"), 1.5])
def test_a_number_yaml_read_differently_is_refused_not_silently_changed(number: float) -> None:
    with pytest.raises(ConfigError, match="quote a literal secret") as info:
        resolve_secret(["ok", number])
    assert info.value.path == ("secret", 1) and str(number) not in info.value.message.split(": ", 1)[1]


def test_error_in_a_list_names_its_index() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_secret(["ok", {"env": "HOOKRUNNER_TEST_SECRET"}], key="password")
    assert info.value.message.startswith("password[1]:")
    assert info.value.path == ("password", 1)


def test_every_member_of_a_list_written_wrongly_is_named_at_once() -> None:
    """Only the first was: fixing it showed the next, one `check` at a time."""
    with pytest.raises(ConfigError) as info:
        resolve_secret(["ok", {"envv": "X"}, {"file": ""}, [1]], skipped=[])
    assert info.value.message == (
        "secret: 3 of its secrets are written wrongly: secret[1]: expected exactly one of "
        "'env' or 'file', got 'envv'; secret[2]: file must be a path; secret[3]: a secret "
        "list cannot be nested")
    assert info.value.path == ("secret", 1)


def test_a_rotation_lists_unreadable_member_is_set_aside_while_another_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """"Any of them": the old secret's file removed at the end of a rotation leaves the new one
    verifying (said as a warning by the loader); none readable is an error naming each."""
    (tmp_path / "new").write_text("new\n")
    monkeypatch.delenv("HOOKRUNNER_TEST_GONE", raising=False)
    skipped: list[SecretUnavailable] = []
    value = [{"file": "old"}, {"env": "HOOKRUNNER_TEST_GONE"}, {"file": "new"}]
    assert resolve_secret(value, root=tmp_path, skipped=skipped) == [b"new"]
    assert [(e.message, e.path) for e in skipped] == [
        ("secret[0]: secret file old does not exist", ("secret", 0)),
        ("secret[1]: environment variable HOOKRUNNER_TEST_GONE is not set or empty", ("secret", 1))]
    with pytest.raises(SecretUnavailable) as none:
        resolve_secret(value[:2], root=tmp_path, skipped=[])
    assert (none.value.message, none.value.path) == (
        "secret: none of its 2 secrets can be had: secret[0]: secret file old does not exist; "
        "secret[1]: environment variable HOOKRUNNER_TEST_GONE is not set or empty", ("secret",))
    with pytest.raises(SecretUnavailable, match=r"^secret\[0\]: environment variable"):
        resolve_secret(value[1:2], root=tmp_path, skipped=[])  # one: its own error, as before
    with pytest.raises(SecretUnavailable):  # without `skipped` (no warnings to give): as before
        resolve_secret(value, root=tmp_path)
    with pytest.raises(ConfigError, match="nested"):  # a mistake in the form is still an error
        resolve_secret([{"file": "new"}, [{"file": "new"}]], root=tmp_path, skipped=[])


def test_error_never_contains_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_secret({"env": "HOOKRUNNER_TEST_SECRET", "file": "topsecretvalue"})
    assert "topsecretvalue" not in str(info.value)


@pytest.mark.parametrize(
    "value",
    [[], {}, {"envv": "X"}, None, True, [["a"]], {"env": ""}, {"file": 3}, "", 3.5j],
)
def test_bad_shapes_are_config_errors(value: Any) -> None:
    with pytest.raises(ConfigError):
        resolve_secret(value)


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("abc", True),
        (123, True),
        ({"env": "X"}, False),
        ({"file": "p"}, False),
        ([{"env": "X"}, "abc"], True),
        ([{"env": "X"}, {"file": "p"}], False),
    ],
)
def test_is_literal(value: Any, literal: bool) -> None:
    assert is_literal(value) is literal


@pytest.mark.parametrize("value", ["${GITHUB_WEBHOOK_SECRET}", "$GITHUB_WEBHOOK_SECRET", " $PW "])
def test_a_shell_variable_written_as_the_secret_is_refused_without_repeating_it(value: str) -> None:
    """`secret: "${GITHUB_WEBHOOK_SECRET}"` was the secret as written: anyone could sign."""
    with pytest.raises(ConfigError) as info:
        resolve_secret(value)
    assert info.value.message == ("secret: a shell variable (`$NAME`, `${NAME}`) is not read "
                                  "from the environment here, but would be the secret as "
                                  "written: write {env: NAME}")
    assert resolve_secret("a$B") == [b"a$B"] and resolve_secret("$lower_case1") == [b"$lower_case1"]


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ({"s3cr3tvalue": None}, "got 1 other key (not shown"),  # YAML `secret: {s3cr3tvalue}`
        ({"envv": "X"}, "got 'envv'"),  # a typo is named
        ({"env": "X", "file": "p", "Tok3n": None}, "got 'env', 'file', 1 other key"),
        ({}, "got an empty mapping"),
    ],
)
def test_a_mapping_that_is_no_source_names_only_keys_that_are_not_a_secret(
        value: dict[str, Any], said: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_secret(value)
    assert said in str(info.value)
    assert "s3cr3tvalue" not in str(info.value) and "Tok3n" not in str(info.value)


def test_a_secret_file_that_is_not_a_small_regular_file_is_refused_without_reading_it(
        tmp_path: Path) -> None:
    """A FIFO blocked `serve`, `check` and every later reload until someone wrote to it, and
    `/dev/zero` was read until the machine ran out of memory."""
    import os
    import threading

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "big").write_bytes(b"k" * (64 * 1024 + 1))
    (tmp_path / "fits").write_bytes(b"k" * (64 * 1024))
    outcomes: dict[str, str] = {}

    def resolve(path: str) -> None:
        try:
            resolve_secret({"file": path})
            outcomes[path] = "read"
        except SecretUnavailable as exc:
            outcomes[path] = exc.message

    paths = [str(fifo), "/dev/zero", str(tmp_path), str(tmp_path / "big"), str(tmp_path / "fits")]
    for path in paths:
        thread = threading.Thread(target=resolve, args=(path,), daemon=True)
        thread.start()
        thread.join(timeout=10)
        assert not thread.is_alive(), f"reading {path} blocked"
    assert "is not a regular file" in outcomes[str(fifo)]
    assert "is not a regular file" in outcomes["/dev/zero"]
    assert "is not a regular file" in outcomes[str(tmp_path)]
    assert "larger than 64 KiB" in outcomes[str(tmp_path / "big")]
    assert outcomes[str(tmp_path / "fits")] == "read"

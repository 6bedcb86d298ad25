"""Dry runs and CLI replays load rules whose secret variables may be unset on that shell."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from hookrunner.errors import ConfigError
from hookrunner.verify import VERIFIERS, resolve_secret
from hookrunner.verify.secrets import UNRESOLVED

MISSING = {"env": "HOOKRUNNER_TEST_SURELY_UNSET_SECRET"}


def _options(name: str) -> dict[str, object]:
    if name == "none":
        return {}
    if name == "basic":
        return {"username": "u", "password": MISSING}
    if name == "hmac":
        return {"secret": MISSING, "header": "X-Sig"}
    return {"secret": MISSING}


@pytest.mark.parametrize("name", sorted(VERIFIERS))
def test_every_verifier_loads_with_an_unresolved_secret_when_not_required(name: str) -> None:
    lenient = functools.partial(resolve_secret, required=False)
    VERIFIERS[name](_options(name), lenient)


def test_unset_secrets_stand_in_only_when_not_required() -> None:
    assert resolve_secret(MISSING, required=False) == [UNRESOLVED]
    assert resolve_secret({"file": "/surely/missing"}, required=False) == [UNRESOLVED]
    with pytest.raises(ConfigError, match="is not set"):
        resolve_secret(MISSING)
    with pytest.raises(ConfigError, match="expected exactly one of"):
        resolve_secret({"env": "A", "file": "B"}, required=False)  # the form is still checked


def test_a_secret_file_that_cannot_be_read_or_is_empty_stands_in_too(tmp_path: Path) -> None:
    """An operator's dry run, where the server's secret files are root's (0600) or not filled
    in yet: the form is right, only the value cannot be had here."""
    (tmp_path / "empty").write_bytes(b"\n")
    (tmp_path / "a-directory").mkdir()  # unreadable as a file, even for root
    for name in ("empty", "a-directory"):
        with pytest.raises(ConfigError):
            resolve_secret({"file": name}, root=tmp_path)
        assert resolve_secret({"file": name}, root=tmp_path, required=False) == [UNRESOLVED]
    assert resolve_secret(["s", {"file": "empty"}], root=tmp_path, required=False) == [UNRESOLVED]

"""`http.url: {env: NAME}`: the URL (often a token-bearing one) stays out of the rules files."""

from __future__ import annotations

from typing import Any

import pytest

from hookrunner.actions.http import normalize_http, resolve_url
from hookrunner.errors import ActionError, ConfigError


def test_env_url_is_kept_as_a_reference_at_load() -> None:
    assert normalize_http({"url": {"env": "NOTIFY_URL"}})["url"] == {"env": "NOTIFY_URL"}


@pytest.mark.parametrize(
    "url",
    [{"env": "bad name"}, {"env": 3}, {"file": "/x"}, {"env": "A", "default": "b"}, {}],
)
def test_other_url_mappings_are_config_errors(url: Any) -> None:
    with pytest.raises(ConfigError, match=r"string or \{env: NAME\}"):
        normalize_http({"url": url})


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("https://x/y", {}, "https://x/y"),
        ({"env": "NOTIFY_URL"}, {"NOTIFY_URL": "http://127.0.0.1:1/n"}, "http://127.0.0.1:1/n"),
    ],
)
def test_url_resolves_from_the_action_environment(value: Any, env: dict[str, str], expected: str) -> None:
    assert resolve_url(value, env) == expected


@pytest.mark.parametrize("env", [{}, {"NOTIFY_URL": ""}])
def test_unset_env_url_names_the_variable_and_the_flag(env: dict[str, str]) -> None:
    with pytest.raises(ActionError, match=r"NOTIFY_URL is not set .*--pass-env NOTIFY_URL"):
        resolve_url({"env": "NOTIFY_URL"}, env)

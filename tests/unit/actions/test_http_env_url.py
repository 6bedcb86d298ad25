"""`http.url: {env: NAME}` and `headers: {X: {env: NAME}}`: values (often tokens) kept out of
the rules files, read from the action's environment when the run starts."""

from __future__ import annotations

from typing import Any

import pytest

from hookrunner.actions.http import HEADERS_ENV, URL_ENV, normalize_http, resolve_url
from hookrunner.errors import ActionError, ConfigError


def test_env_references_are_kept_apart_from_the_templates_at_load() -> None:
    spec = normalize_http({"url": {"env": "NOTIFY_URL"},
                           "headers": {"Authorization": {"env": "TOKEN"}, "X-Id": "{{ hook }}"}})
    assert spec[URL_ENV] == "NOTIFY_URL" and "url" not in spec
    assert spec["headers"] == {"X-Id": "{{ hook }}"}
    assert spec[HEADERS_ENV] == {"Authorization": "TOKEN"}


@pytest.mark.parametrize(
    "value",
    [{"env": "bad name"}, {"env": 3}, {"file": "/x"}, {"env": "A", "default": "b"}, {}],
)
def test_other_mappings_are_config_errors(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"string or \{env: NAME\}"):
        normalize_http({"url": value})
    with pytest.raises(ConfigError, match=r"string or \{env: NAME\}") as info:
        normalize_http({"url": "https://x", "headers": {"X-Token": value}})
    assert info.value.path == ("headers", "X-Token")


@pytest.mark.parametrize(
    ("rendered", "env", "expected"),
    [
        ({"url": "https://x/y"}, {}, "https://x/y"),
        ({URL_ENV: "NOTIFY_URL"}, {"NOTIFY_URL": "http://127.0.0.1:1/n"}, "http://127.0.0.1:1/n"),
    ],
)
def test_url_resolves_from_the_action_environment(rendered: dict[str, Any], env: dict[str, str],
                                                  expected: str) -> None:
    assert resolve_url(rendered, env) == expected


def test_a_url_template_that_renders_an_object_is_not_an_env_reference() -> None:
    """`url: "{{ payload.u }}"` with `u = {"env": "SECRET_URL"}` must not read the variable."""
    with pytest.raises(ActionError, match="url must be a string, got dict"):
        resolve_url({"url": {"env": "SECRET_URL"}}, {"SECRET_URL": "https://secret"})


@pytest.mark.parametrize("env", [{}, {"NOTIFY_URL": ""}])
def test_unset_env_url_names_the_variable_and_the_flag(env: dict[str, str]) -> None:
    with pytest.raises(ActionError, match=r"NOTIFY_URL is not set .*--pass-env NOTIFY_URL"):
        resolve_url({URL_ENV: "NOTIFY_URL"}, env)


def test_ca_is_a_path_not_a_template() -> None:
    assert normalize_http({"url": "https://x", "ca": "certs/internal.pem"})["ca"] == "certs/internal.pem"
    with pytest.raises(ConfigError, match="not a template") as info:
        normalize_http({"url": "https://x", "ca": "{{ payload.ca }}"})
    assert info.value.path == ("ca",)

"""The base environment of actions: a short allow-list, never the server's secrets."""

from __future__ import annotations

import os

from hookrunner.actions.environment import VENV_BIN, base_env, with_path_entry

SERVER = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/home/hr",
    "LANG": "C.UTF-8",
    "LC_TIME": "en_GB.UTF-8",
    "TZ": "UTC",
    "GITHUB_WEBHOOK_SECRET": "s3cret",
    "HOOKRUNNER_ADMIN_TOKEN": "admin",
    "AWS_SECRET_ACCESS_KEY": "aws",
    "AWS_PROFILE": "prod",
    "PYTHONPATH": "/x",
}
IDS = {
    "run_id": "r1",
    "delivery_id": "d1",
    "hook": "gh",
    "rule": "deploy",
    "attempt": 2,
    "node": "n1",
}


def test_keeps_only_the_allow_list_and_pass_env() -> None:
    env = base_env(SERVER, ["AWS_PROFILE", "NOT_SET"], IDS)
    assert env == {
        "PATH": f"/usr/bin:/bin{os.pathsep}{VENV_BIN}",
        "HOME": "/home/hr",
        "LANG": "C.UTF-8",
        "LC_TIME": "en_GB.UTF-8",
        "TZ": "UTC",
        "AWS_PROFILE": "prod",
        "HOOKRUNNER_RUN_ID": "r1",
        "HOOKRUNNER_DELIVERY_ID": "d1",
        "HOOKRUNNER_HOOK": "gh",
        "HOOKRUNNER_RULE": "deploy",
        "HOOKRUNNER_ATTEMPT": "2",
        "HOOKRUNNER_NODE": "n1",
    }


def test_secrets_never_pass() -> None:
    env = base_env(SERVER, [], IDS)
    assert not {"GITHUB_WEBHOOK_SECRET", "HOOKRUNNER_ADMIN_TOKEN", "AWS_SECRET_ACCESS_KEY"} & set(env)
    assert "s3cret" not in env.values()


def test_venv_bin_is_on_path_once() -> None:
    env = base_env({"PATH": f"{VENV_BIN}:/bin"}, [], {})
    assert env["PATH"] == f"/bin:{VENV_BIN}"  # last, where an activated venv had it first
    assert base_env({}, [], {})["PATH"].endswith(VENV_BIN)


def test_with_path_entry_first_moves_it_to_the_front() -> None:
    assert with_path_entry("/a:/v:/b", "/v", first=True) == "/v:/a:/b"
    assert with_path_entry("/a::/b", "/v") == "/a:/b:/v"


def test_ids_may_be_given_by_full_variable_name() -> None:
    env = base_env({}, [], {"HOOKRUNNER_RUN_ID": "r1", "rule": "deploy", "node": None})
    assert env["HOOKRUNNER_RUN_ID"] == "r1"
    assert env["HOOKRUNNER_RULE"] == "deploy"
    assert "HOOKRUNNER_NODE" not in env


def test_with_path_entry_moves_it_to_the_end_where_it_was_first() -> None:
    """probe: a server started from an activated venv (its bin first on PATH) gave actions
    the venv's `pip` and `python3`, where the README says its bin stays last."""
    assert with_path_entry("/v:/a:/b", "/v") == "/a:/b:/v"
    assert with_path_entry("/a:/v:/b:/v", "/v") == "/a:/b:/v"

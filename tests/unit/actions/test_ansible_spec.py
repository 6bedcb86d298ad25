"""Ansible specs: normalization, the run environment, and the never-templated extra vars."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from hookrunner.actions import RUNNERS
from hookrunner.actions.ansible import (
    build_envvars,
    extravars_yaml,
    host_pattern,
    normalize_ansible,
    private_env,
    tag_list,
    with_origin,
)
from hookrunner.actions.environment import VENV_BIN
from hookrunner.errors import ActionError, ConfigError


def test_normalize_accepts_a_full_spec() -> None:
    raw = {
        "playbook": "scale_up.yml",
        "inventory": "inventories/prod.ini",
        "limit": "web",
        "tags": "deploy",
        "check": True,
        "extravars": {"replicas": "{{ payload.replicas }}", "nested": {"a": [1]}},
    }
    assert normalize_ansible(raw) == {**raw, "tags": ["deploy"]}


@pytest.mark.parametrize(
    ("raw", "message", "path"),
    [
        ({}, "'playbook' is required", ("playbook",)),
        ({"playbook": "a.yml", "vars": {}}, "unknown key 'vars'", ("vars",)),
        ({"playbook": "a.yml", "check": "yes"}, "check must be true or false", ("check",)),
        ({"playbook": "a.yml", "extravars": [1]}, "mapping with string keys", ("extravars",)),
        ({"playbook": "a.yml", "extravars": {"webhook": 1}}, "reserved", ("extravars", "webhook")),
        ({"playbook": "a.yml", "tags": [["x"]]}, "tags[0] must be a string", ("tags", 0)),
        ({"playbook": "a.yml", "limit": []}, "limit must name a host", ("limit",)),
        # A list of no host pattern was refused only when a delivery came.
        ({"playbook": "a.yml", "limit": [":"]}, "limit must name a host", ("limit",)),
        ({"playbook": "a.yml", "limit": ["", " , "]}, "limit must name a host", ("limit",)),
        ({"playbook": "a.yml", "limit": ["!"]}, "limit must name a host", ("limit",)),
        ({"playbook": "a.yml", "limit": [{"a": 1}]}, "limit[0] must be a string", ("limit", 0)),
    ],
)
def test_normalize_rejects(raw: dict[str, Any], message: str, path: tuple[Any, ...]) -> None:
    with pytest.raises(ConfigError) as err:
        normalize_ansible(raw)
    assert message in err.value.message
    assert err.value.path == path


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor(
    "!unsafe", lambda loader, node: ("unsafe", loader.construct_mapping(node, deep=True)))


def test_the_whole_extra_vars_mapping_is_unsafe_and_strings_stay_quoted() -> None:
    payload = {"service": "{{ lookup('pipe', 'id') }}", "n": 3, "ok": True, "l": ["yes", None]}
    text = extravars_yaml({"replicas": "3", "hex": "0x10"}, payload)
    assert text.startswith("!unsafe\n")  # one tag, on the document (see extravars_yaml)
    assert yaml.load(text, Loader=_Loader) == ("unsafe", {
        "replicas": "3",
        "hex": "0x10",
        "webhook": {"service": "{{ lookup('pipe', 'id') }}", "n": 3, "ok": True,
                    "l": ["yes", None]},
    })


@pytest.mark.parametrize("value", ["x\x85y", "x\u2028y", "x\u2029y", "\x85", "é\x85\n  z",
                                   {"k\x85": ["a\u2028"]}])
def test_yamls_other_line_breaks_are_written_as_escapes_not_folded(value: Any) -> None:
    text = extravars_yaml({"v": value}, {})
    assert not any(b in text for b in ("\x85", "\u2028", "\u2029")), text
    assert yaml.load(text, Loader=_Loader) == ("unsafe", {"v": value, "webhook": {}})


def test_envvars_put_the_venv_last_force_utf8_and_keep_temp_in_the_run_dir(tmp_path: Path) -> None:
    env = build_envvars({"PATH": f"{VENV_BIN}:/usr/bin", "LC_ALL": "C"}, tmp_path, inventory=False)
    # Last, also where the operator's PATH had it first (an activated venv): a task's `pip`
    # and `python3` are the machine's, as the README says (probe: they were the venv's).
    assert env["PATH"] == f"/usr/bin:{VENV_BIN}"
    env = build_envvars({"PATH": "/usr/bin", "LC_ALL": "C"}, tmp_path, inventory=False)
    assert env["PATH"] == f"/usr/bin:{VENV_BIN}"
    assert env["LC_ALL"] == env["LANG"] == "C.UTF-8"
    for name in ("ANSIBLE_HOME", "ANSIBLE_LOCAL_TEMP", "TMPDIR"):
        assert Path(env[name]).is_relative_to(tmp_path)
    assert env["ANSIBLE_LOCALHOST_WARNING"] == "False"
    # Made on every managed host: a path of this machine's data dir failed each SSH task
    # (without an inventory too: `add_host`, `delegate_to`).
    assert "ANSIBLE_REMOTE_TEMP" not in env


def test_ansible_variables_passed_by_the_operator_win(tmp_path: Path) -> None:
    passed = {"ANSIBLE_HOME": "/srv/ansible", "ANSIBLE_LOCAL_TEMP": "/srv/tmp",
              "ANSIBLE_REMOTE_TEMP": "~/.ansible/tmp"}
    env = build_envvars(passed, tmp_path, inventory=True)
    assert {k: env[k] for k in passed} == passed


def test_a_passed_tmpdir_is_kept(tmp_path: Path) -> None:
    assert build_envvars({"TMPDIR": "/big"}, tmp_path, inventory=True)["TMPDIR"] == "/big"


def test_a_utf8_locale_is_kept(tmp_path: Path) -> None:
    env = build_envvars({"LANG": "en_US.UTF-8"}, tmp_path, inventory=True)
    assert env["LANG"] == "en_US.UTF-8"
    assert "LC_ALL" not in env
    assert "ANSIBLE_LOCALHOST_WARNING" not in env


def test_private_env_drops_what_came_from_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_SECRET", "s")
    monkeypatch.setenv("HOME", "/root")
    monkeypatch.delenv("ANSIBLE_STDOUT_CALLBACK", raising=False)
    prepared = {**os.environ, "ANSIBLE_STDOUT_CALLBACK": "awx_display"}
    wanted = {"HOME": "/root"}
    assert private_env(prepared, wanted) == {
        "HOME": "/root",
        "ANSIBLE_STDOUT_CALLBACK": "awx_display",
    }


@pytest.mark.parametrize(("limit", "pattern"), [
    (None, None), ("", None), ("web-eu", "web-eu"), (["web1", "web2"], "web1,web2"),
    ("web-x,all", "web-x,all"),  # a host pattern: the README says to check payload values
])
def test_limit_is_a_host_pattern(limit: Any, pattern: str | None) -> None:
    assert host_pattern(limit) == pattern


FILE_LIMITS = ["@/etc/passwd", "web-x,@/etc/passwd", "web:@f", "x, !@f", ["a", "&@f"],
               # Without a comma Ansible splits at any whitespace too.
               "web1 @/etc/passwd", "web1\t@f", "web1\n@f", "web1\u2003@f", ["web1 @f"]]


@pytest.mark.parametrize("limit", FILE_LIMITS)
def test_a_limit_that_names_a_file_is_refused(limit: Any) -> None:
    with pytest.raises(ActionError, match="names a file"):
        host_pattern(limit)


@pytest.mark.parametrize("limit", FILE_LIMITS)
def test_every_limit_ansible_would_read_a_file_for_is_refused(limit: Any) -> None:
    """Against Ansible's own splitting (what its inventory's subset reads as `@file`)."""
    from ansible.inventory.manager import split_host_pattern

    pattern = ",".join(limit) if isinstance(limit, list) else limit
    reads_file = any(p.startswith("@") for p in split_host_pattern(pattern))
    if reads_file:
        with pytest.raises(ActionError):
            host_pattern(limit)


@pytest.mark.parametrize(("limit", "tags"), [("--extra-vars=x=1", None), ("-e x=1", None),
                                             (None, "--skip-tags=t1"), (None, ["-e x", "b"])])
def test_a_limit_or_tags_that_would_be_read_as_an_option_is_refused(limit: Any, tags: Any) -> None:
    with pytest.raises(ActionError, match="would read as an option"):
        host_pattern(limit) if limit else tag_list(tags)


@pytest.mark.parametrize(("tags", "said"), [([None], "null"), (["a", [None]], "null"),
                                            ([{"x": 1}], "a mapping"), ({"x": 1}, "a mapping")])
def test_a_tag_rendered_null_or_a_mapping_is_refused_not_sent_as_text(tags: Any, said: str) -> None:
    """probe: `tags: "{{ payload.tags }}"` of `null` ran the play with `--tags null` (only
    its `always` tasks), where a `limit` of `null` is refused."""
    with pytest.raises(ActionError, match=f"a tag rendered {said}, which names no tag"):
        tag_list(tags)


def test_tags_rendered_as_a_list_are_each_a_tag() -> None:
    assert tag_list(["scale", ["b", "c"], ""]) == ["scale", "b", "c"]
    assert tag_list("one") == ["one"] and tag_list(None) == []
    assert tag_list(" a , b,") == ["a", "b"]  # as ansible-playbook reads `--tags`


@pytest.mark.parametrize("tags", ["", " ", ",", [], [""], ["", []], [" , "]])
def test_tags_that_render_to_no_tag_are_refused_not_every_task_run(tags: Any) -> None:
    """A sender's `""` was no --tags at all: every task of the play ran (and `" "` none)."""
    with pytest.raises(ActionError, match="tags rendered empty, which would run every task"):
        tag_list(tags)


@pytest.mark.parametrize("tags", ["", [], [" ", ","]])
def test_tags_written_empty_are_a_check_error(tags: Any) -> None:
    with pytest.raises(ConfigError, match="tags must name a tag"):
        normalize_ansible({"playbook": "a.yml", "tags": tags})
    assert normalize_ansible({"playbook": "a.yml", "tags": "{{ payload.t }}"})["tags"] == [
        "{{ payload.t }}"]


def test_ansibles_error_line_is_led_by_the_place_its_next_line_names() -> None:
    error = "[ERROR]: YAML parsing failed: did not find expected node content."
    assert with_origin(error, ["Origin: /srv/ops/playbooks/a.yml:3:1", ""], "/srv/ops") == \
        "playbooks/a.yml:3:1: YAML parsing failed: did not find expected node content."
    assert with_origin(error, ["", "not an origin"], "/srv/ops") == error
    deep = "/x/" + "d" * 200 + "/a.yml:3:1"
    assert with_origin(error, [f"Origin: {deep}"]).startswith("..." + deep[-117:] + ": YAML")


@pytest.mark.parametrize("playbook", ["group_vars/all.yml", "env/host_vars/web1.yml",
                                      "x/../group_vars/all.yml"])
def test_a_vars_file_beside_the_playbooks_is_no_playbook(tmp_path: Path, playbook: str) -> None:
    """Ansible prints a vars file named as a playbook back line by line (its secrets too)."""
    for d in ("group_vars", "env/host_vars"):
        (tmp_path / "playbooks" / d).mkdir(parents=True)
    refusal = RUNNERS["ansible"].refusal({"playbook": playbook}, tmp_path)
    assert refusal is not None and "group_vars or host_vars" in refusal
    assert RUNNERS["ansible"].refusal({"playbook": "vars_ok/site.yml"}, tmp_path) is None


def test_a_limit_written_as_a_list_means_any_of_its_patterns() -> None:
    """`limit: [web1, web2]` was refused (`must be a string, got a list`)."""
    normalized = normalize_ansible({"playbook": "a.yml", "limit": ["web1", "web-{{ x }}"]})
    assert normalized["limit"] == ["web1", "web-{{ x }}"]
    assert host_pattern(["web1", "web2"]) == "web1,web2"


def test_a_file_whose_yaml_is_no_list_of_plays_is_not_run(tmp_path: Path) -> None:
    """`app/{{ payload.env }}.yml` of `vars/prod` named playbooks/app/vars/prod.yml, which
    ansible printed back with its secrets; a role's vars or defaults likewise."""
    books = tmp_path / "playbooks"
    (books / "app" / "vars").mkdir(parents=True)
    (books / "app" / "vars" / "prod.yml").write_text("db_password: hunter2\n")
    (books / "app" / "site.yml").write_text("- hosts: all\n  tasks: []\n")
    (books / "app" / "tagged.yml").write_text("- hosts: all\n  vars:\n    p: !vault |\n      x\n")
    (books / "app" / "vault.yml").write_text("$ANSIBLE_VAULT;1.1;AES256\n6162\n")
    # Not YAML: ansible-core 2.19 prints the lines before the error.
    (books / "app" / "app.env").write_text("# db\nDB_PASS: hunter2\n  API_KEY: abc123\n")
    refusal = RUNNERS["ansible"].refusal({"playbook": "app/vars/prod.yml"}, tmp_path)
    assert refusal is not None and "is no playbook" in refusal and "hunter2" not in refusal
    refusal = RUNNERS["ansible"].refusal({"playbook": "app/app.env"}, tmp_path)
    assert refusal == ("ansible: playbooks/app/app.env:3:10: YAML parsing failed: mapping "
                       "values are not allowed in this context: not run, since ansible would "
                       "print it back (a vars file's secrets too)")
    for fine in ("site", "tagged", "vault"):  # (ansible says what is wrong in a vault)
        assert RUNNERS["ansible"].refusal({"playbook": f"app/{fine}.yml"}, tmp_path) is None


@pytest.mark.parametrize(("text", "plays"), [
    ("- name: set db pass\n  set_fact: {db_password: TopSecretTask7}\n", False),  # tasks
    ("- TopSecretList3\n", False),
    ("- hosts: all\n  tasks: []\n- set_fact: {x: TopSecret9}\n", False),  # one task among plays
    ("- {name: no hosts, tasks: []}\n", False),
    ("- [hosts]\n", False),
    ("[]\n", True),
    ("- import_playbook: site.yml\n- ansible.builtin.import_playbook: other.yml\n", True),
    ("- name: web\n  hosts: web\n  roles: [x]\n", True),
    # review: hosts merged in from an anchor, as ansible-playbook reads them
    ("- &web {hosts: web, gather_facts: false}\n- <<: *web\n  tasks: []\n", True),
    ("- &web {hosts: web}\n- <<: [{gather_facts: false}, *web]\n  tasks: []\n", True),
    ("- &t {set_fact: {x: TopSecret1}}\n- <<: *t\n", False),
], ids=["tasks", "strings", "a-task-among-plays", "no-hosts", "a-list", "empty", "imports",
        "play", "merged", "merged-list", "merged-task"])
def test_only_a_list_of_plays_is_a_playbook(tmp_path: Path, text: str, plays: bool) -> None:
    """A role's tasks file is a list too: ansible refused it as no play, printing the task's
    lines back to the sender's `?wait` (a secret set by `set_fact` included)."""
    (tmp_path / "playbooks" / "roles").mkdir(parents=True)
    (tmp_path / "playbooks" / "roles" / "tasks.yml").write_text(text)
    refusal = RUNNERS["ansible"].refusal({"playbook": "roles/tasks.yml"}, tmp_path)
    if plays:
        assert refusal is None
    else:
        assert refusal is not None and "is no playbook" in refusal and "TopSecret" not in refusal


@pytest.mark.parametrize("limit", ["", [], ["", ""], " , ", ":", [":"], ": ,", "&", "!:&!"])
def test_a_limit_that_renders_empty_runs_on_no_host(tmp_path: Path, limit: Any) -> None:
    """`limit: "{{ payload.hosts }}"` of `[]` or `""` passed no --limit: every host; so did
    `":"` (Ansible splits at colons too)."""
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "site.yml").write_text("- hosts: all\n  tasks: []\n")
    refusal = RUNNERS["ansible"].refusal({"playbook": "site.yml", "limit": limit}, tmp_path)
    assert refusal is not None and "limit rendered empty" in refusal
    assert RUNNERS["ansible"].refusal({"playbook": "site.yml"}, tmp_path) is None
    for blank in (" ", ":"):
        with pytest.raises(ConfigError, match="must not be empty"):
            normalize_ansible({"playbook": "a.yml", "limit": blank})


@pytest.mark.parametrize("limit", ["web1,&", "web1:!", ["web1", "&!"], "web1, & web2"])
def test_a_limit_with_an_operator_before_no_pattern_is_refused(limit: Any) -> None:
    """`web1,&{{ payload.also }}` of "" made ansible-playbook fail ("string index out of
    range", exit 250)."""
    with pytest.raises(ActionError, match="with no host pattern after it"):
        host_pattern(limit)
    assert host_pattern("web:!web2,&db") == "web:!web2,&db"
    assert host_pattern("fe80::1") == "fe80::1"


def test_a_playbook_value_that_is_no_string_is_named_as_json(tmp_path: Path) -> None:
    """`{{ payload.pb }}` of an object was named `playbooks/{'a': True}`: Python's notation,
    where every other value a run quotes is JSON."""
    from hookrunner.actions.ansible import _placed

    (tmp_path / "playbooks").mkdir()
    assert _placed({"playbook": {"a": True}}, tmp_path).missing == \
        'playbook not found: playbooks/{"a": true}'

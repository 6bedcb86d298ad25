"""actions.prompts: what in a playbook asks for input, which no one answers (probe: such a
play waited until its timeout, 1 h by default), and `check`'s warning of it."""

from __future__ import annotations

from pathlib import Path

from hookrunner.actions.prompts import prompts
from hookrunner.rules.load import load_rules

PLAY = """
- hosts: localhost
  vars_prompt:
    - name: pw
      prompt: Password?
    - name: region
      prompt: Region?
  tasks:
    - ansible.builtin.pause: {prompt: Press enter}
    - pause: {seconds: 1}
    - pause: minutes=1
    - block:
        - pause:
      rescue:
        - ansible.builtin.debug: {msg: "!unsafe {{ x }}"}
    - name: timed through args
      pause:
      args: {seconds: 2}
"""


def test_prompts_and_untimed_pauses_are_found_with_their_lines(tmp_path: Path) -> None:
    book = tmp_path / "p.yml"
    book.write_text(PLAY)
    assert prompts(book, given={"region"}) == [
        "vars_prompt 'pw' (line 4)",
        "a pause without seconds or minutes (line 9)",
        "a pause without seconds or minutes (line 13)",
    ]


def test_a_playbook_that_cannot_be_read_or_parsed_has_none(tmp_path: Path) -> None:
    assert prompts(tmp_path / "missing.yml", given=()) == []
    (tmp_path / "bad.yml").write_text("- hosts: [\n")
    assert prompts(tmp_path / "bad.yml", given=()) == []
    (tmp_path / "vault.yml").write_text("- hosts: all\n  vars: {x: !vault abc}\n  tasks: []\n")
    assert prompts(tmp_path / "vault.yml", given=()) == []


def test_check_warns_of_a_rules_playbook_that_asks(tmp_path: Path) -> None:
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "ask.yml").write_text(PLAY)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(
        "hooks: {h: {verify: {none: {}}}}\nrules:\n"
        "  - name: a\n    hook: h\n    run:\n      ansible:\n        playbook: ask.yml\n"
        "        extravars: {pw: \"{{ payload.pw }}\"}\n")
    loaded = load_rules(tmp_path / "rules", root=tmp_path)
    asked = [w for w in loaded.warnings if "asks for input" in w]
    assert asked == [
        f"{tmp_path}/rules/r.yaml:7: rule 'a': run.ansible.playbook 'ask.yml' asks for input (vars_prompt "
        "'region' (line 6); a pause without seconds or minutes (line 9); a pause without "
        "seconds or minutes (line 13)): the play runs on a terminal no one answers, so its "
        "runs wait until their timeout; give a prompted variable in extravars, and pause for "
        "seconds"], loaded.warnings

"""confine(): a path named in a rule stays under --root (or a directory below it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hookrunner.actions.paths import confine
from hookrunner.errors import ActionError


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "playbooks" / "sub").mkdir(parents=True)
    (r / "scripts").mkdir()
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", r / "escape")
    os.symlink(r / "scripts", r / "playbooks" / "to-scripts")
    os.symlink("sub", r / "playbooks" / "inner")
    return r


@pytest.mark.parametrize(
    ("value", "base", "expected"),
    [
        ("scripts/x.sh", "", "scripts/x.sh"),
        ("./scripts/../scripts/x.sh", "", "scripts/x.sh"),
        ("new/file", "", "new/file"),  # need not exist yet
        ("site.yml", "playbooks", "playbooks/site.yml"),
        ("sub/../site.yml", "playbooks", "playbooks/site.yml"),
        ("inner/x.yml", "playbooks", "playbooks/sub/x.yml"),  # symlink that stays inside
        (".", "", ""),
    ],
)
def test_inside(root: Path, value: str, base: str, expected: str) -> None:
    assert confine(root, value, base=base) == (root / expected).resolve()


def test_absolute_inside_is_accepted(root: Path) -> None:
    assert confine(root, str(root / "scripts")) == (root / "scripts").resolve()


@pytest.mark.parametrize(
    ("value", "base"),
    [
        ("..", ""),
        ("../outside/x", ""),
        ("scripts/../../outside", ""),
        ("/etc/passwd", ""),
        ("escape/x.sh", ""),  # symlink out of root
        ("escape", ""),
        ("../scripts/x.sh", "playbooks"),  # inside root, outside playbooks/
        ("to-scripts/x.yml", "playbooks"),  # symlink out of playbooks/
        ("", ""),
        ("a\0b", ""),
    ],
)
def test_outside_is_refused(root: Path, value: str, base: str) -> None:
    with pytest.raises(ActionError):
        confine(root, value, base=base)


def test_message_names_root(root: Path) -> None:
    with pytest.raises(ActionError, match=r"path '\.\./x' is outside --root"):
        confine(root, "../x")


def test_a_pinned_dir_is_the_one_checked_whatever_the_path_becomes(root: Path) -> None:
    """A templated `cwd` checked, then swapped for a link out of --root before the start:
    the run ran in the link's target. A process enters the directory checked."""
    import subprocess

    from hookrunner.actions.paths import pinned_dir

    (root / "work").mkdir()
    checked = confine(root.resolve(), "work")
    with pinned_dir(root.resolve(), checked) as cwd:
        (root / "work").rename(root / "work-moved")
        os.symlink(root.parent / "outside", root / "work")  # the swap, after the check
        where = subprocess.run(["pwd", "-P"], cwd=cwd, capture_output=True, text=True,
                               check=True).stdout.strip()
    assert where == str((root / "work-moved").resolve())
    # Swapped before the directory was opened: refused, not entered.
    with pytest.raises(ActionError, match="outside --root"), pinned_dir(root.resolve(), checked):
        pass


def _links(root: Path) -> None:
    """What an earlier action (an unpacked archive, a clone) may leave: links inside the
    directories a rule writes before its `{{`, that lead elsewhere under --root."""
    for d in ("scripts/sub", "terraform/envs/dev", "terraform/basic", "inventories",
              "playbooks/app", "vars/prod"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for f in ("scripts/sub/deploy-x.sh", "scripts/mklink.sh", "scripts/show.sh",
              "playbooks/app/site.yml", "playbooks/other.yml", "vars/prod/a.tfvars",
              "vars/b.tfvars"):
        (root / f).write_text("#!/bin/sh\n")
        (root / f).chmod(0o755)
    os.symlink("../mklink.sh", root / "scripts/sub/deploy-y.sh")
    os.symlink("../basic", root / "terraform/envs/prod")
    os.symlink("../scripts/show.sh", root / "inventories/rel")
    os.symlink("../other.yml", root / "playbooks/app/evil.yml")
    os.symlink("../b.tfvars", root / "vars/prod/evil.tfvars")


def test_a_templated_path_may_not_leave_its_written_directory_through_a_symlink(
        root: Path) -> None:
    """probe: `scripts/sub/deploy-{{ p }}.sh` ran scripts/mklink.sh through a link
    `deploy-y.sh -> ../mklink.sh`; `terraform/envs/{{ env }}` applied terraform/basic; an
    inventory under inventories/ that links to a script made Ansible run it. Each stays in
    the directory the rule writes before its `{{` once links are followed, as a playbook
    stays in playbooks/. A path the rule writes whole may still be a link (the author's)."""
    from hookrunner.actions.ansible import _placed, normalize_ansible
    from hookrunner.actions.shell import build_invocation, normalize_shell
    from hookrunner.actions.terraform import _target, normalize_terraform

    _links(root)
    shell = normalize_shell({"argv": ["scripts/sub/deploy-{{ payload.p }}.sh"]})
    with pytest.raises(ActionError, match=r"outside scripts/sub/ once its symlinks"):
        build_invocation({**shell, "argv": ["scripts/sub/deploy-y.sh"]}, root=root,
                         base_env={"PATH": "/bin"})
    assert build_invocation({**shell, "argv": ["scripts/sub/deploy-x.sh"]}, root=root,
                            base_env={"PATH": "/bin"}).argv[0] == \
        str((root / "scripts/sub/deploy-x.sh").resolve())
    # Written absolute (under --root): the same, and a --root written through a link is no
    # escape (a probe of the first fix: it was refused, and the escape ran). (The server
    # hands actions --root resolved.)
    for top in (root, root.parent / "rootlink"):
        if not top.exists():
            os.symlink(root, top)
        absolute = normalize_shell({"argv": [f"{top}/scripts/sub/deploy-{{{{ payload.p }}}}.sh"]})
        with pytest.raises(ActionError, match=r"outside .*scripts/sub/ once its symlinks"):
            build_invocation({**absolute, "argv": [f"{top}/scripts/sub/deploy-y.sh"]},
                             root=root.resolve(), base_env={"PATH": "/bin"})
        assert build_invocation({**absolute, "argv": [f"{top}/scripts/sub/deploy-x.sh"]},
                                root=root.resolve(), base_env={"PATH": "/bin"}).argv[0] == \
            f"{top}/scripts/sub/deploy-x.sh"
    fixed = normalize_shell({"argv": ["scripts/sub/deploy-y.sh", "{{ payload.p }}"]})
    # The rule's own link (to scripts/mklink.sh), started by the name the rule writes.
    assert build_invocation(fixed, root=root, base_env={"PATH": "/bin"}).argv[0] == \
        f"{root}/scripts/sub/deploy-y.sh"

    tf = normalize_terraform({"dir": "terraform/envs/{{ payload.env }}", "command": "apply",
                              "var_files": ["vars/prod/{{ payload.v }}", "vars/b.tfvars"]})
    with pytest.raises(ActionError, match=r"outside terraform/envs/ once"):
        _target({**tf, "dir": "terraform/envs/prod", "var_files": ["vars/prod/a.tfvars",
                                                                    "vars/b.tfvars"]}, root)
    with pytest.raises(ActionError, match=r"outside vars/prod/ once"):
        _target({**tf, "dir": "terraform/envs/dev", "var_files": ["vars/prod/evil.tfvars",
                                                                   "vars/b.tfvars"]}, root)
    assert _target({**tf, "dir": "terraform/envs/dev", "var_files": [
        "vars/prod/a.tfvars", "vars/b.tfvars"]}, root)[1] == (root / "terraform/envs/dev").resolve()
    assert _target(normalize_terraform({"dir": "terraform/envs/prod", "command": "apply"}),
                   root)[1] == (root / "terraform/basic").resolve()

    play = normalize_ansible({"playbook": "app/{{ payload.pb }}.yml",
                              "inventory": "inventories/{{ payload.inv }}"})
    with pytest.raises(ActionError, match=r"outside inventories/ once"):
        _placed({**play, "playbook": "app/site.yml", "inventory": "inventories/rel"}, root)
    with pytest.raises(ActionError, match=r"outside playbooks/app/ once"):
        _placed({**play, "playbook": "app/evil.yml", "inventory": None}, root)
    bare = normalize_ansible({"playbook": "site.yml", "inventory": "{{ payload.inv }}"})
    with pytest.raises(ActionError, match=r"outside inventories/ once"):
        _placed({**bare, "inventory": "inventories/rel"}, root)


def test_a_symlink_loop_is_an_action_error_naming_the_path(root: Path) -> None:
    """Python 3.11-3.12's `resolve()` raises RuntimeError for one: `check` printed a
    traceback, the server dropped every rule, and a run ended as an internal error."""
    os.symlink("loop2", root / "scripts" / "loop1")
    os.symlink("loop1", root / "scripts" / "loop2")
    with pytest.raises(ActionError, match=r"path 'scripts/loop1/x' goes through a symlink loop"):
        confine(root, "scripts/loop1/x")

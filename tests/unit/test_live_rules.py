"""LiveRules noticing changes on a real filesystem, including a ConfigMap's atomic update
and a rotated secret file."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import threading
import time
from pathlib import Path

import pytest

from hookrunner import reload
from hookrunner.errors import VerifyError
from hookrunner.reload import LiveRules
from hookrunner.rules.load import rules_files
from hookrunner.verify.base import Headers, SignedRequest
from tests.unit.test_hotpath import captured_log, events_in

HOOK = "hooks:\n  {name}:\n    verify: {{none: {{}}}}\n"


def _configmap_version(mount: Path, version: str, hook: str) -> None:
    """Kubernetes' atomic writer: files in a new hidden `..<timestamp>` directory, `..data`
    switched to it by a rename, and each key a link `x.yaml -> ..data/x.yaml` made once."""
    (mount / version).mkdir()
    (mount / version / "gh.yaml").write_text(HOOK.format(name=hook))
    (mount / "..data_tmp").symlink_to(version)
    (mount / "..data_tmp").rename(mount / "..data")
    if not (mount / "gh.yaml").is_symlink():
        (mount / "gh.yaml").symlink_to("..data/gh.yaml")


def test_a_configmap_update_is_noticed_and_loaded(tmp_path: Path) -> None:
    """The new version has the same size (and maybe the same mtime): the inode tells."""
    _configmap_version(tmp_path, "..v1", "aa")
    live = LiveRules(tmp_path)
    assert live.reload()
    assert live.current is not None and list(live.current.hooks) == ["aa"]
    assert not live.changed()
    _configmap_version(tmp_path, "..v2", "bb")
    assert live.changed()
    assert live.reload()
    assert list(live.current.hooks) == ["bb"]
    assert not live.changed()


def test_a_file_with_an_upper_case_suffix_is_a_change_whose_load_warns(tmp_path: Path) -> None:
    """`team.YAML` added while the server ran was said only at the next reload for another
    reason: the watcher saw no change."""
    (tmp_path / "a.yaml").write_text(HOOK.format(name="aa"))
    live = LiveRules(tmp_path)
    assert live.reload() and not live.changed()
    (tmp_path / "team.YAML").write_text(HOOK.format(name="bb"))
    assert live.changed() and live.reload()
    assert live.current is not None and list(live.current.hooks) == ["aa"]
    assert any("team.YAML: not loaded" in w for w in live.current.warnings)
    assert not live.changed()


def test_a_failed_reload_says_its_warnings_too(tmp_path: Path) -> None:
    """`team.YAML` added beside a broken file: the failed reload logged only the error, and
    the warning came once the other file was fixed."""
    (tmp_path / "a.yaml").write_text(HOOK.format(name="aa"))
    live = LiveRules(tmp_path)
    assert live.reload()
    (tmp_path / "b.yaml").write_text("rules: {oops: 1}\n")
    (tmp_path / "team.YAML").write_text(HOOK.format(name="bb"))
    with captured_log() as out:
        assert not live.reload()
    said = events_in(out)
    assert said[0]["event"] == "rules.error"
    assert said[-1]["event"] == "rules.reload_failed"
    assert any("team.YAML: not loaded" in e.get("warning", "") for e in said)


def test_hidden_files_neither_load_nor_count_as_changes(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(HOOK.format(name="aa"))
    live = LiveRules(tmp_path)
    assert live.reload()
    (tmp_path / ".#a.yaml").write_text(HOOK.format(name="aa"))  # an editor's lock/backup
    assert not live.changed()
    (tmp_path / "b.yml").write_text(HOOK.format(name="bb"))
    assert live.changed()
    assert live.reload()
    assert live.current is not None and sorted(live.current.hooks) == ["aa", "bb"]


GH_FILE_SECRET = "hooks:\n  gh:\n    verify: {github: {secret: [{env: GH_OLD}, {file: secrets/gh}]}}\n"


def _signed_by(live: LiveRules, secret: bytes) -> bool:
    assert live.current is not None
    sig = "sha256=" + hmac.new(secret, b"{}", hashlib.sha256).hexdigest()
    try:
        live.current.hooks["gh"].verifier.verify(
            SignedRequest(Headers([("X-Hub-Signature-256", sig)]), b"{}"))
    except VerifyError:
        return False
    return True


def test_a_rotated_secret_file_is_noticed_and_loaded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A secret file changes like a rules file does: rewritten, swapped by a Kubernetes
    Secret's link, or created after a load that failed for want of it."""
    monkeypatch.setenv("GH_OLD", "env-secret")
    rules, root = tmp_path / "rules", tmp_path / "root"
    rules.mkdir()
    (root / "secrets").mkdir(parents=True)
    (rules / "gh.yaml").write_text(GH_FILE_SECRET)
    live = LiveRules(rules, root=root)
    # secrets/gh does not exist yet: at the start, the hook verifies with the list's other
    # secret ("any of them"), with a warning
    assert live.reload() and live.current is not None and live.current.unavailable == {}
    assert _signed_by(live, b"env-secret") and any(
        "secret file secrets/gh does not exist (the list's other secrets are used)" in w
        for w in live.current.warnings)
    (root / "secrets" / "gh").write_text("first\n")
    assert live.changed() and live.reload()
    assert live.current is not None and live.current.unavailable == {}
    assert _signed_by(live, b"first") and _signed_by(live, b"env-secret")
    assert not live.changed()
    (root / "secrets" / "gh").write_text("second\n")
    assert live.changed() and live.reload()
    assert _signed_by(live, b"second") and not _signed_by(live, b"first")
    # A mounted Secret: the file is a link whose target directory is swapped.
    (root / "secrets" / "gh").unlink()
    for version, value in (("..v1", "third"), ("..v2", "fourth")):
        (root / "secrets" / version).mkdir()
        (root / "secrets" / version / "gh").write_text(value)
        (root / "secrets" / "..data_tmp").symlink_to(version)
        (root / "secrets" / "..data_tmp").rename(root / "secrets" / "..data")
        if not (root / "secrets" / "gh").is_symlink():
            (root / "secrets" / "gh").symlink_to("..data/gh")
        assert live.changed() and live.reload()
        assert _signed_by(live, value.encode())
        assert not live.changed()


BROKEN_OTHER = "rules:\n  - {name: x, hook: gh, when: 'payload.x ==', run: {shell: {argv: [x]}}}\n"


def _rotation_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Rules whose hook verifies with GH_OLD or the file secrets/gh (holding `first`)."""
    monkeypatch.setenv("GH_OLD", "env-secret")
    rules, root = tmp_path / "rules", tmp_path / "root"
    rules.mkdir()
    (root / "secrets").mkdir(parents=True)
    (root / "secrets" / "gh").write_text("first\n")
    (rules / "gh.yaml").write_text(GH_FILE_SECRET)
    return rules, root


def test_a_secret_rotated_while_another_rules_file_is_broken_is_applied(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another team's broken file failed every reload, so a rotated secret file was not
    applied (senders switched to the new key got 401s) and nothing said so. The live rules
    are loaded again from their own text with the new secret; the errors still stand."""
    rules, root = _rotation_project(tmp_path, monkeypatch)
    live = LiveRules(rules, root=root)
    assert live.reload() and _signed_by(live, b"first")
    (rules / "other.yaml").write_text(BROKEN_OTHER)
    assert live.changed() and not live.reload()
    assert _signed_by(live, b"first") and not live.changed()  # nothing rotated: as it was
    (root / "secrets" / "gh").write_text("second\n")
    assert live.changed() and not live.reload()  # the files still fail...
    assert live.errors and "other.yaml" in live.errors[0]
    assert _signed_by(live, b"second") and not _signed_by(live, b"first")  # ...the secret is new
    assert not live.changed()
    # The rotation ends (the file removed): as a load that succeeds, the list's other secret.
    (root / "secrets" / "gh").unlink()
    assert live.changed() and not live.reload()
    assert _signed_by(live, b"env-secret") and not _signed_by(live, b"second")


def test_a_rotation_while_the_hooks_own_file_is_broken_is_seen(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The failed load read none of the hook's secrets (its own file does not parse), and
    only the secrets a load read were watched: the rotation waited for a SIGHUP."""
    rules, root = _rotation_project(tmp_path, monkeypatch)
    live = LiveRules(rules, root=root)
    assert live.reload()
    (rules / "gh.yaml").write_text(GH_FILE_SECRET + "rules: [\n")
    assert live.changed() and not live.reload() and not live.changed()
    (root / "secrets" / "gh").write_text("second\n")
    assert live.changed() and not live.reload()
    assert _signed_by(live, b"second") and not live.changed()


def test_workers_serving_the_copy_take_a_rotation_as_the_main_process_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--http-workers: a worker started while the files are broken serves the main process's
    copy, whose secrets it never read again: after a rotation the main process verified with
    the new secret and such workers with the old one (401s by turns)."""
    rules, root = _rotation_project(tmp_path, monkeypatch)
    copy = tmp_path / "copy"
    main = LiveRules(rules, root=root, copy=copy)
    assert main.reload()
    (rules / "other.yaml").write_text(BROKEN_OTHER)
    assert not main.reload()
    worker = LiveRules(rules, root=root, quiet=True, copy=copy)  # one replacing a dead one
    assert not worker.reload() and _signed_by(worker, b"first")
    (root / "secrets" / "gh").write_text("second\n")
    for live in (main, worker):
        assert live.changed() and not live.reload()
        assert _signed_by(live, b"second") and not _signed_by(live, b"first")
    # One started after the rotation serves the copy, then reads the files at its next look.
    late = LiveRules(rules, root=root, quiet=True, copy=copy)
    assert not late.reload()
    assert late.changed() and not late.reload()
    assert _signed_by(late, b"second") and not _signed_by(late, b"first")
    assert not late.changed()


ENV_HOOKS = """
hooks:
  gh:
    verify: {github: {secret: {env: HR_TEST_UNSET}}}
  open:
    verify: {none: {}}
rules:
  - {name: r, hook: [gh, open], run: {shell: {argv: ["true"]}}}
"""


def test_a_secret_unset_at_the_start_leaves_only_its_hook_unavailable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hook added with its variable missing from the unit's environment: at a restart, no
    rules loaded at all and every hook answered 503. Now that hook alone is unavailable."""
    monkeypatch.delenv("HR_TEST_UNSET", raising=False)
    (tmp_path / "a.yaml").write_text(ENV_HOOKS)
    live = LiveRules(tmp_path)
    assert live.reload() and live.current is not None and live.errors == []
    assert sorted(live.current.hooks) == ["gh", "open"]
    assert live.current.unavailable == {"gh": f"{tmp_path / 'a.yaml'}:4: hook 'gh': verify.github: "
                                              "secret: environment variable HR_TEST_UNSET is "
                                              "not set or empty"}
    assert live.current.hooks["open"].unavailable is None
    with pytest.raises(VerifyError):  # were a delivery ever to reach it, nothing verifies
        live.current.hooks["gh"].verifier.verify(SignedRequest(Headers([]), b"{}"))
    # A reload with it still unset changes nothing for it: the rest reloads.
    (tmp_path / "a.yaml").write_text(ENV_HOOKS + "  - {name: r2, hook: open, run: {shell: "
                                                 "{argv: [\"true\"]}}}\n")
    assert live.reload() and [r.name for r in live.current.rules] == ["r", "r2"]
    assert list(live.current.unavailable) == ["gh"]
    # A hook added by a reload with its secret unset fails the reload, as any error: the
    # live rules stay (the contract's "a reload that fails validation keeps the live rules").
    (tmp_path / "b.yaml").write_text("hooks:\n  new:\n    verify: {token: {secret: {env: "
                                     "HR_TEST_UNSET}}}\n")
    assert not live.reload() and "new" not in live.current.hooks
    assert any("HR_TEST_UNSET is not set" in e for e in live.errors), live.errors
    (tmp_path / "b.yaml").unlink()
    monkeypatch.setenv("HR_TEST_UNSET", "now-set")  # (a restart, for a variable)
    assert live.reload() and live.current.unavailable == {}
    assert _signed_by(live, b"now-set")


def test_a_hook_with_an_unset_secret_and_another_error_fails_the_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a hook whose one fault is a secret not yet there is loaded unavailable: with it,
    an error that no variable can mend was hidden until the variable was set."""
    monkeypatch.delenv("HR_TEST_UNSET", raising=False)
    (tmp_path / "a.yaml").write_text(ENV_HOOKS.replace(
        "{github: {secret: {env: HR_TEST_UNSET}}}",
        "{hmac: {secret: {env: HR_TEST_UNSET}, header: X-Sig, algorithm: md5}}"))
    live = LiveRules(tmp_path)
    assert not live.reload() and live.current is None
    assert [e.split(": ", 1)[1] for e in live.errors] == [
        "hook 'gh': verify.hmac: secret: environment variable HR_TEST_UNSET is not set or empty",
        "hook 'gh': verify.hmac: algorithm: expected one of sha1, sha256, sha512, got 'md5'",
    ], live.errors


def test_a_live_hook_whose_secret_file_goes_keeps_its_secret(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a hook with nothing better to keep is loaded unavailable: a live one whose only
    secret file is caught mid-rotation keeps verifying with the secret it has. In a list
    with another secret, the file's going is the end of a rotation: the other verifies."""
    monkeypatch.setenv("GH_OLD", "env-secret")
    rules, root = tmp_path / "rules", tmp_path / "root"
    rules.mkdir()
    (root / "secrets").mkdir(parents=True)
    (root / "secrets" / "gh").write_text("first\n")
    (rules / "gh.yaml").write_text(
        "hooks:\n  gh:\n    verify: {github: {secret: {file: secrets/gh}}}\n")
    live = LiveRules(rules, root=root)
    assert live.reload() and _signed_by(live, b"first")
    (root / "secrets" / "gh").unlink()
    assert not live.reload() and _signed_by(live, b"first")
    assert live.current is not None and live.current.unavailable == {}

    (root / "secrets" / "gh").write_text("first\n")
    (rules / "gh.yaml").write_text(GH_FILE_SECRET)
    assert live.reload() and _signed_by(live, b"first") and _signed_by(live, b"env-secret")
    (root / "secrets" / "gh").unlink()
    assert live.reload() and _signed_by(live, b"env-secret") and not _signed_by(live, b"first")


async def test_the_watcher_outlives_a_failed_look_at_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory deleted while it is scanned (a ConfigMap update), or no file descriptor
    left: the look fails, is logged, and the next one still notices changes (the task died
    silently, and no edit or secret rotation was loaded again)."""
    (tmp_path / "a.yaml").write_text(HOOK.format(name="first"))
    live = LiveRules(tmp_path)
    live.reload()
    real = reload.rules_files
    failures = iter([OSError(24, "Too many open files"), FileNotFoundError(2, "gone")])

    def flaky(rules_dir: Path, notes: list[str] | None = None) -> list[Path]:
        error = next(failures, None)
        if error is not None:
            raise error
        return real(rules_dir, notes)

    monkeypatch.setattr(reload, "rules_files", flaky)
    monkeypatch.setattr(reload, "POLL_INTERVAL", 0.02)
    watcher = asyncio.create_task(live.watch())
    try:
        await asyncio.sleep(0.2)
        (tmp_path / "a.yaml").write_text(HOOK.format(name="second"))
        for _ in range(100):
            if live.current is not None and "second" in live.current.hooks:
                break
            await asyncio.sleep(0.02)
        assert live.current is not None and "second" in live.current.hooks
        assert not watcher.done()
    finally:
        watcher.cancel()


def test_hidden_directories_are_never_entered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ConfigMap's `..<timestamp>/` directories come and go while it updates."""
    (tmp_path / "a.yaml").write_text(HOOK.format(name="a"))
    (tmp_path / "..2024_01_01").mkdir()
    (tmp_path / "..2024_01_01" / "b.yaml").write_text(HOOK.format(name="b"))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.yml").write_text(HOOK.format(name="c"))
    entered: list[str] = []
    real_scandir = os.scandir

    def scandir(path: object) -> object:
        entered.append(str(path))
        return real_scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", scandir)
    assert rules_files(tmp_path) == [tmp_path / "a.yaml", tmp_path / "sub" / "c.yml"]
    assert not any("..2024" in p for p in entered), entered


def test_a_linked_rules_directory_is_loaded_once_and_a_loop_is_no_loop(tmp_path: Path) -> None:
    rules, team = tmp_path / "rules", tmp_path / "team"
    rules.mkdir()
    team.mkdir()
    (rules / "a.yaml").write_text(HOOK.format(name="a"))
    (team / "b.yaml").write_text(HOOK.format(name="b"))
    (rules / "team").symlink_to(team)
    (team / "back").symlink_to(rules)  # a loop
    assert rules_files(rules) == [rules / "a.yaml", rules / "team" / "b.yaml"]


@pytest.mark.parametrize(("name", "error", "searchable", "fails"), [
    ("team", PermissionError(13, "Permission denied"), False, True),  # its hooks went silently
    ("secrets", PermissionError(13, "Permission denied"), True, False),  # --x: closed on purpose
    ("lost+found", PermissionError(13, "Permission denied"), False, False),  # a volume's, root's
    ("team", FileNotFoundError(2, "No such file or directory"), True, False),  # renamed mid-walk
])
def test_a_sub_directory_that_cannot_be_listed_fails_the_listing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, error: OSError,
        searchable: bool, fails: bool) -> None:
    """(The real permission case, without capabilities: tests/integration/test_rules_unlistable.)"""
    (tmp_path / "a.yaml").write_text(HOOK.format(name="a"))
    (tmp_path / name).mkdir()
    real_scandir, real_access = os.scandir, os.access
    monkeypatch.setattr(os, "access", lambda path, mode: searchable if str(path) == str(
        tmp_path / name) else real_access(path, mode))

    def scandir(path: object) -> object:
        if str(path) == str(tmp_path / name):
            error.filename = str(path)
            raise error
        return real_scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", scandir)
    if fails:
        with pytest.raises(PermissionError):
            rules_files(tmp_path)
    else:
        assert rules_files(tmp_path) == [tmp_path / "a.yaml"]


def test_a_link_that_leads_nowhere_is_listed_if_it_may_have_held_rules(tmp_path: Path) -> None:
    """Named as a rules file, or with no suffix (a team's directory linked in): listed, so
    the load says it cannot read it; other names (`notes.txt`) are no rules of ours."""
    for name in ("gone.yaml", "team", "notes.txt", ".hidden"):
        (tmp_path / name).symlink_to(tmp_path / "nowhere")
    assert rules_files(tmp_path) == [tmp_path / "gone.yaml", tmp_path / "team"]


async def test_reloads_run_off_the_event_loop_and_pile_ups_make_one_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload compiles every template (seconds for a thousand rules): on a thread, so hooks
    are answered meanwhile; five SIGHUPs in a row are two loads, not five."""
    (tmp_path / "a.yaml").write_text(HOOK.format(name="a"))
    live = LiveRules(tmp_path)
    loads: list[int] = []
    real = live._load

    def counted() -> object:
        loads.append(threading.get_ident())
        return real()

    monkeypatch.setattr(live, "_load", counted)
    await asyncio.gather(*(live.reload_async() for _ in range(5)))
    assert len(loads) == 2 and threading.get_ident() not in loads
    assert live.current is not None and "a" in live.current.hooks


async def test_a_file_still_being_written_is_loaded_once_it_stands_still(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written in two steps (a generator, `rsync --inplace`): never live half-written."""
    monkeypatch.setattr(reload, "POLL_INTERVAL", 0.3)
    path = tmp_path / "a.yaml"
    path.write_text(HOOK.format(name="first"))
    live = LiveRules(tmp_path)
    live.reload()
    noticed = asyncio.Event()
    real_look = live._look

    def look() -> tuple[tuple[reload.Stat, ...], list[reload.Stat | None]]:
        noticed.set()  # the watcher saw a change and waits for the files to stand still
        return real_look()

    monkeypatch.setattr(live, "_look", look)
    watcher = asyncio.create_task(live.watch())
    try:
        path.write_text(HOOK.format(name="a"))  # the first half of the new file
        await asyncio.wait_for(noticed.wait(), 10)
        assert live.current is not None and set(live.current.hooks) == {"first"}
        path.write_text(HOOK.format(name="a") + HOOK.format(name="b").replace("hooks:\n", ""))
        for _ in range(500):
            assert live.current is not None and set(live.current.hooks) != {"a"}
            if "b" in live.current.hooks:
                break
            await asyncio.sleep(0.01)
    finally:
        watcher.cancel()
    assert live.current is not None and set(live.current.hooks) == {"a", "b"}


async def test_the_watcher_does_not_pile_loads_onto_a_slow_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a load runs, the watcher (which compares with the files before it) waits."""
    monkeypatch.setattr(reload, "POLL_INTERVAL", 0.05)
    (tmp_path / "a.yaml").write_text(HOOK.format(name="a"))
    live = LiveRules(tmp_path)
    live.reload()
    loads: list[float] = []
    real = live._load

    def slow() -> object:
        loads.append(time.monotonic())
        time.sleep(0.6)
        return real()

    monkeypatch.setattr(live, "_load", slow)
    watcher = asyncio.create_task(live.watch())
    try:
        (tmp_path / "a.yaml").write_text(HOOK.format(name="b"))
        live.request_reload()
        for _ in range(300):
            await asyncio.sleep(0.01)
            if live.current is not None and "b" in live.current.hooks and not live._loading:
                break
        await asyncio.sleep(0.3)  # polls after the load: the files are as it read them
    finally:
        watcher.cancel()
    assert live.current is not None and "b" in live.current.hooks
    assert len(loads) <= 2, loads


def test_out_of_file_descriptors_is_a_failed_reload_not_an_empty_ruleset(tmp_path: Path) -> None:
    """Listing the directory failing (EMFILE under a connection flood) looked like a directory
    with no rules files: the live rules were replaced by none, and hooks answered 404."""
    import resource

    (tmp_path / "sub").mkdir()  # os.walk needs a descriptor for each directory it lists
    (tmp_path / "sub" / "gh.yaml").write_text(HOOK.format(name="gh"))
    live = LiveRules(tmp_path)
    assert live.reload() and live.current is not None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held: list[int] = []
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        with pytest.raises(OSError):
            while True:
                held.append(os.open(os.devnull, os.O_RDONLY))
        # The watcher's own look is no news of the files: it says so, and reloads nothing
        # (a connection flood counted as a failed reload, which alerts page about).
        with pytest.raises(OSError):
            live.changed()
        assert not live.reload()  # a reload asked for (SIGHUP) fails...
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert live.current is not None and "gh" in live.current.hooks  # ...keeps the live rules
    assert live.errors and "cannot list the rules directory" in live.errors[0], live.errors
    assert live.reload() and "gh" in live.current.hooks  # and the next one loads them again


def test_an_edit_that_keeps_the_size_and_the_modification_time_is_noticed(tmp_path: Path) -> None:
    """`cp -p` (or `rsync -t`) of a file from a reproducible build: same size, same mtime, same
    inode (written in place). Only its change time tells."""
    path = tmp_path / "gh.yaml"
    path.write_text(HOOK.format(name="aa"))
    os.utime(path, ns=(315532800 * 10**9, 315532800 * 10**9))
    live = LiveRules(tmp_path)
    assert live.reload() and live.current is not None and list(live.current.hooks) == ["aa"]
    time.sleep(0.01)  # a change time of its own, on a clock that ticks coarsely
    with open(path, "r+") as f:  # in place, as cp -p over an existing file does
        f.write(HOOK.format(name="bb"))
    os.utime(path, ns=(315532800 * 10**9, 315532800 * 10**9))
    assert live.changed() and live.reload()
    assert list(live.current.hooks) == ["bb"]


def test_a_directory_emptied_under_live_rules_keeps_them(tmp_path: Path) -> None:
    """`rm rules/*; cp new/* rules/`: in between, hooks answered 404. At the start there is
    nothing to keep, and an empty directory loads as no rules (with a warning)."""
    path = tmp_path / "gh.yaml"
    path.write_text(HOOK.format(name="aa"))
    live = LiveRules(tmp_path)
    assert live.reload() and live.current is not None
    path.unlink()
    assert live.changed() and not live.reload()
    assert list(live.current.hooks) == ["aa"]
    assert "no *.yaml or *.yml rules files now; the live rules are kept" in live.errors[0]
    (tmp_path / "other.yaml").write_text(HOOK.format(name="bb"))
    assert live.changed() and live.reload() and list(live.current.hooks) == ["bb"]
    assert live.errors == []
    empty = tmp_path / "empty"
    empty.mkdir()
    fresh = LiveRules(empty)
    assert fresh.reload() and fresh.current is not None and fresh.current.hooks == {}
    assert fresh.reload() and fresh.errors == []  # a SIGHUP while it stays empty: no failure


def test_rules_files_all_emptied_under_live_hooks_keep_them(tmp_path: Path) -> None:
    """probe: every file truncated in place (`for f in rules/*.yaml; do : > $f; done`) loaded
    as 0 hooks and 0 rules: every hook answered 404 and /readyz said ok. Files that held no
    hooks before, or `rules: []` beside the empty ones, load as they are."""
    (tmp_path / "gh.yaml").write_text(HOOK.format(name="aa"))
    (tmp_path / "notes.yaml").write_text("# the team's notes\n")
    live = LiveRules(tmp_path)
    assert live.reload() and live.current is not None
    (tmp_path / "gh.yaml").write_text("")
    assert live.changed() and not live.reload()
    assert list(live.current.hooks) == ["aa"]
    assert live.errors == [f"{tmp_path}: every rules file is empty now; the live rules are kept "
                           "until one holds hooks or rules (to serve no rules, leave a file "
                           "with `rules: []`)"]
    assert not live.reload() and list(live.current.hooks) == ["aa"]  # a SIGHUP meanwhile
    (tmp_path / "none.yaml").write_text("rules: []\n")
    assert live.reload() and live.current.hooks == {} and live.errors == []
    (tmp_path / "none.yaml").unlink()
    assert live.reload() and live.errors == []  # no hooks were live: nothing to keep


@pytest.mark.parametrize(("now", "expected"), [
    (1000.0, 1.0), (1000.25, 0.75), (1000.999, 0.001),
])
def test_every_process_looks_at_the_files_on_the_same_ticks(now: float, expected: float) -> None:
    """Whole seconds of the wall clock, whenever a process (a replaced HTTP worker) started."""
    assert reload.until_tick(now, 1.0) == pytest.approx(expected)
    assert (now + reload.until_tick(now, 1.0)) % 1.0 == pytest.approx(0.0, abs=1e-6)
    # The look that checks the files stood still: on a tick too, half a poll away at least.
    later = reload.until_tick(now, 1.0, 0.5)
    assert 0.5 <= later <= 1.5 and (now + later) % 1.0 == pytest.approx(0.0, abs=1e-6)


def test_a_rules_file_gone_between_its_listing_and_its_reading_is_skipped_with_a_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ConfigMap's update removes a key's link between the two: the load goes on (check,
    which sees one moment of a deploy, still calls it an error)."""
    from hookrunner.errors import ConfigErrors
    from hookrunner.rules import load

    (tmp_path / "a.yaml").write_text(HOOK.format(name="a"))
    real = load.rules_files
    monkeypatch.setattr(load, "rules_files", lambda d, closed=None: [*real(d), d / "removed.yaml"])
    ruleset = load.load_rules(tmp_path)
    assert "a" in ruleset.hooks
    assert any("removed.yaml:1: cannot read" in w for w in ruleset.warnings), ruleset.warnings
    with pytest.raises(ConfigErrors, match=r"removed\.yaml"):
        load.load_rules(tmp_path, strict=True)

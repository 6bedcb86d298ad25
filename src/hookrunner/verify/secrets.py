"""Turn a `secret` option into the bytes a verifier compares against.

`{env: NAME}`, `{file: PATH}`, a literal string, or a list of those (key rotation: any may
match). Errors name the variable or the file, never a value.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hookrunner.errors import ConfigError

__all__ = ["is_literal", "read_secret_file", "resolve_secret", "secret_files"]


def is_literal(value: Any) -> bool:
    """True if the secret (or any item of a rotation list) is written inline in the rules."""
    if isinstance(value, list):
        return any(is_literal(item) for item in value)
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def secret_files(value: Any, root: Path | None = None) -> list[Path]:
    """The files a `secret` option reads (`{file: PATH}`, in a rotation list too), so a
    server can watch them: a rotated secret file is picked up like a changed rules file."""
    items = value if isinstance(value, list) else [value]
    return [_secret_path(item["file"], root) for item in items
            if isinstance(item, Mapping) and set(item) == {"file"}
            and isinstance(item["file"], str) and item["file"]]


def _secret_path(path: str, root: Path | None) -> Path:
    full = Path(path)
    return root / full if root is not None and not full.is_absolute() else full


UNRESOLVED = b"\x00unresolved secret"  # stands in where a secret is not needed (dry runs)


class SecretUnavailable(ConfigError):
    """The secret is written correctly, but its value cannot be had here: a variable not set,
    a file missing, unreadable or empty (a dry run in an operator's shell)."""


def resolve_secret(
    value: Any, key: str = "secret", *, root: Path | None = None, required: bool = True,
    skipped: list[SecretUnavailable] | None = None,
) -> list[bytes]:
    """Resolve `value` to one or more secrets; raise ConfigError (no file:line) if it cannot.

    `root` anchors relative `{file: ...}` paths (the server's `--root`); without it they are
    relative to the working directory. `required=False` (dry runs and CLI replays, which check
    no signature) still checks the form, but a value that cannot be had (SecretUnavailable)
    stands in as UNRESOLVED instead of being an error. In a rotation list, a member that
    cannot be had while another can (the old secret's file removed at the end of a rotation)
    goes to `skipped`, if given, for a warning: any of them is enough to verify.
    """
    if not required:
        try:
            return resolve_secret(value, key, root=root, skipped=skipped)
        except SecretUnavailable:
            return [UNRESOLVED]
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"{key}: the list of secrets is empty", path=(key,))
        out: list[bytes] = []
        missing: list[SecretUnavailable] = []
        wrong: list[ConfigError] = []  # written wrongly: each said at once, as `missing` is
        for i, item in enumerate(value):
            if isinstance(item, list):
                wrong.append(ConfigError(f"{key}[{i}]: a secret list cannot be nested",
                                         path=(key, i)))
                continue
            try:
                out.extend(_resolve_one(item, key, root))
            except ConfigError as exc:
                failure = type(exc)(f"{key}[{i}]: {_strip_key(exc.message, key)}", path=(key, i))
                if not isinstance(failure, SecretUnavailable):
                    wrong.append(failure)
                elif skipped is None:
                    raise failure from None
                else:
                    missing.append(failure)
        if len(wrong) > 1:
            raise ConfigError(f"{key}: {len(wrong)} of its secrets are written wrongly: "
                              + "; ".join(w.message for w in wrong), path=wrong[0].path)
        if wrong:
            raise wrong[0]
        if not out:  # each is said at once: fixing the first showed the next
            if len(missing) == 1:
                raise missing[0]
            raise SecretUnavailable(
                f"{key}: none of its {len(missing)} secrets can be had: " + "; ".join(
                    m.message for m in missing), path=(key,))
        if skipped is not None:
            skipped.extend(missing)
        return out
    return _resolve_one(value, key, root)


def _strip_key(message: str, key: str) -> str:
    prefix = f"{key}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def _resolve_one(value: Any, key: str, root: Path | None) -> list[bytes]:
    if isinstance(value, bool) or value is None:
        raise ConfigError(f"{key}: expected {{env: NAME}}, {{file: PATH}} or a string",
                          path=(key,))
    if isinstance(value, float) or getattr(value, "written", None) is not None:
        # YAML reads 0123 as 83, 0x1F as 31 and 12_345 as 12345: a secret silently different
        # from what was written would refuse every request.
        raise ConfigError(f"{key}: YAML reads this as a number, not as the text written; "
                          "quote a literal secret", path=(key,))
    if isinstance(value, int):
        return [str(value).encode()]  # all digits, as written (`secret: 12345678`)
    if isinstance(value, str):
        if not value:
            raise ConfigError(f"{key}: the secret is empty", path=(key,))
        if _SHELL_VARIABLE.fullmatch(value.strip()):
            # `"${GITHUB_WEBHOOK_SECRET}"` was the secret's own text: anyone who read the
            # rules (or guessed the habit) could sign deliveries. (The value is not repeated:
            # it may be a secret after all.)
            raise ConfigError(f"{key}: a shell variable (`$NAME`, `${{NAME}}`) is not read from "
                              "the environment here, but would be the secret as written: write "
                              "{env: NAME}", path=(key,))
        return [value.encode()]
    if isinstance(value, Mapping):
        if set(value) == {"env"}:
            return [_from_env(value["env"], key)]
        if set(value) == {"file"}:
            return [_from_file(value["file"], key, root)]
        # Only the keys a secret source has are named: `secret: {s3cr3t}` is YAML for a
        # mapping whose key is the secret, and this message reaches the server's log.
        # (A key close to one, `envv`, is a typo worth naming.)
        named = [repr(k) for k in value if isinstance(k, str) and difflib.get_close_matches(
            k.lower(), ("env", "file"), n=1, cutoff=0.6)]
        others = len(value) - len(named)
        got = ", ".join(named + ([f"{others} other key{'s' * (others > 1)} (not shown: "
                                  "`{value}` is YAML for a mapping, and a key may be the "
                                  "secret; quote a literal secret)"] if others else []))
        raise ConfigError(f"{key}: expected exactly one of 'env' or 'file', got "
                          f"{got or 'an empty mapping'}", path=(key,))
    raise ConfigError(f"{key}: expected {{env: NAME}}, {{file: PATH}} or a string", path=(key,))


_SHELL_VARIABLE = re.compile(r"\$\{[A-Z_][A-Z0-9_]*\}|\$[A-Z_][A-Z0-9_]*")  # as variables are named


def _from_env(name: Any, key: str) -> bytes:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{key}: env must name an environment variable", path=(key,))
    if name.startswith("$"):  # a shell's way to read it, not its name
        bare = name[1:].removeprefix("{").removesuffix("}")
        raise ConfigError(f"{key}: env names the variable without a `$`"
                          + (f": {{env: {bare}}}" if bare else ""), path=(key,))
    # Read once at load (a reload reads it again, from the environment the server started with).
    secret = _without_newline(os.environ.get(name, "").encode())
    if not secret and not _named(name):
        # `{env: "ghp_16C7e42F..."}`: the secret pasted where its variable's name goes. This
        # message reaches the server's log (rules.hook_unavailable), so only a name written
        # as variables are is repeated; the line says which.
        raise SecretUnavailable(f"{key}: the environment variable named here is not set or "
                                "empty (its name is not repeated: it is not written as "
                                "variables' names are, in capitals, and may be the secret "
                                "itself)", path=(key,))
    if not secret:
        raise SecretUnavailable(f"{key}: environment variable {name} is not set or empty",
                                path=(key,))
    return secret


def _named(name: str) -> bool:
    """Whether `name` may be repeated in a message: written as variables are by convention
    (capitals, digits, `_`; a token, `ghp_...`, `xoxb-...`, hex, has lower-case letters or a
    `-`), and not one word of capitals and digits as long as a key (`DEADBEEF0123...`, a
    base32 TOTP secret)."""
    return bool(_VARIABLE_NAME.fullmatch(name)) and (
        "_" in name or len(name) < _KEY_LIKE or not any(c.isdigit() for c in name))


_VARIABLE_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")
_KEY_LIKE = 12  # characters of a one-word name with digits past which it may be a key


def _from_file(path: Any, key: str, root: Path | None) -> bytes:
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{key}: file must be a path", path=(key,))
    full = _secret_path(path, root)
    try:
        data = read_secret_file(full, key, path)
    except FileNotFoundError:
        raise SecretUnavailable(f"{key}: secret file {path} does not exist", path=(key,)) from None
    except OSError as exc:
        raise SecretUnavailable(f"{key}: cannot read secret file {path}: {exc.strerror}",
                                path=(key,)) from None
    data = _without_newline(data)
    if not data:
        raise SecretUnavailable(f"{key}: secret file {path} is empty", path=(key,))
    return data


MAX_SECRET_FILE = 64 * 1024  # bytes: a key or a token, not a file read whole into memory


def read_secret_file(full: Path, key: str, path: str) -> bytes:
    """The file's bytes, if it is a regular file of at most MAX_SECRET_FILE: a FIFO blocked
    `serve`, `check` and every later reload (the open itself waits for a writer, hence
    O_NONBLOCK), and `/dev/zero` was read until the machine ran out of memory."""
    fd = os.open(full, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SecretUnavailable(f"{key}: secret file {path} is not a regular file (a FIFO, "
                                    "a device, a directory): not read", path=(key,))
        chunks, size = [], 0
        while chunk := os.read(fd, MAX_SECRET_FILE + 1 - size):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_SECRET_FILE:
                raise SecretUnavailable(f"{key}: secret file {path} is larger than "
                                        f"{MAX_SECRET_FILE // 1024} KiB: not a secret (not "
                                        "read)", path=(key,))
        return b"".join(chunks)
    finally:
        os.close(fd)


def _without_newline(data: bytes) -> bytes:
    """Editors and `echo` add one trailing newline, to a file and to a variable made from one
    (`$(cat f)` drops it, `echo tok | base64` into a Kubernetes secret keeps it); a header
    cannot carry one, and the sender signs without it. Anything else is part of the secret."""
    if data.endswith(b"\r\n"):
        return data[:-2]
    if data.endswith(b"\n"):
        return data[:-1]
    return data

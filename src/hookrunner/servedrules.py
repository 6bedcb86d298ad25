"""Which rules the server on a --data serves, for the commands that take one of its stored
deliveries from a shell (`replay`, `explain --delivery`).

The contract's `hookrunner replay DELIVERY_ID` enqueues it "against the current rules": the
server's. With no `--rules`, a shell elsewhere than the server's working directory read its
own `./rules`: missing (exit 1, nothing queued) or another set. So the server writes its
`--rules` and `--root` (absolute) to `<data>/serving.json` once it holds the data dir, and
those commands, left to the default `--rules`, read them from there. A flag or
`HOOKRUNNER_RULES` still wins; so does `./rules` where no server ever ran on the data dir.

The record holds the server's HOOKRUNNER_DEFAULT_TIMEOUT too: a replayed run gets its
timeout when it is queued, and the shell's default (1h) outlived the server's own (a 2 s
default replayed through the API timed out at 2 s, from a shell ran for an hour)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from hookrunner.private import PRIVATE_FILE

FILE = "serving.json"
MAX_SIZE = 64 * 1024  # a path is at most 4 KiB: anything bigger is no record of ours


def record(data: Path, rules: Path, root: Path, default_timeout: float) -> None:
    """Write the record, replacing any earlier server's at once (OSError if it cannot)."""
    text = json.dumps({"rules": str(rules.absolute()), "root": str(root.absolute()),
                       "default_timeout": default_timeout})
    tmp = data / f".{FILE}.{os.getpid()}"
    tmp.unlink(missing_ok=True)  # a killed start's; never followed, if it is a link
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 PRIVATE_FILE)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, data / FILE)  # a command never reads half of it
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read(data: Path) -> dict[str, object]:
    """The record as written; empty where there is none that can be read."""
    try:
        with open(data / FILE, encoding="utf-8") as f:
            doc = json.loads(f.read(MAX_SIZE))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def recorded_timeout(data: Path) -> float | None:
    """The default timeout (seconds) of the last server on `data`; None where the record has
    none (written by a version before it) or there is no record."""
    value = _read(data).get("default_timeout")
    if isinstance(value, int | float) and not isinstance(value, bool) \
            and math.isfinite(value) and value > 0:
        return float(value)
    return None


def recorded(data: Path) -> tuple[Path, Path] | None:
    """The rules and root directories the last server on `data` served, where both still
    are directories; None where there is no readable record of them."""
    doc = _read(data)
    rules, root = doc.get("rules"), doc.get("root")
    if not (isinstance(rules, str) and isinstance(root, str) and rules and root):
        return None
    if not (os.path.isdir(rules) and os.path.isdir(root)):  # moved or removed since
        return None
    return Path(rules), Path(root)

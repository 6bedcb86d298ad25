"""Which rules the server on a --data serves, for the commands that take one of its stored
deliveries from a shell (`replay`, `explain --delivery`).

The contract's `hookrunner replay DELIVERY_ID` enqueues it "against the current rules": the
server's. With no `--rules`, a shell elsewhere than the server's working directory read its
own `./rules`: missing (exit 1, nothing queued) or another set. So the server writes its
`--rules` and `--root` (absolute) to `<data>/serving.json` once it holds the data dir, and
those commands, left to the default `--rules`, read them from there. A flag or
`HOOKRUNNER_RULES` still wins; so does `./rules` where no server ever ran on the data dir."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hookrunner.private import PRIVATE_FILE

FILE = "serving.json"
MAX_SIZE = 64 * 1024  # a path is at most 4 KiB: anything bigger is no record of ours


def record(data: Path, rules: Path, root: Path) -> None:
    """Write the record, replacing any earlier server's at once (OSError if it cannot)."""
    text = json.dumps({"rules": str(rules.absolute()), "root": str(root.absolute())})
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


def recorded(data: Path) -> tuple[Path, Path] | None:
    """The rules and root directories the last server on `data` served, where both still
    are directories; None where there is no readable record of them."""
    try:
        with open(data / FILE, encoding="utf-8") as f:
            doc = json.loads(f.read(MAX_SIZE))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    rules, root = doc.get("rules"), doc.get("root")
    if not (isinstance(rules, str) and isinstance(root, str) and rules and root):
        return None
    if not (os.path.isdir(rules) and os.path.isdir(root)):  # moved or removed since
        return None
    return Path(rules), Path(root)

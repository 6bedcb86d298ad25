"""The README's systemd unit is valid as pasted: systemd has no end-of-line comments (a `#`
after a value becomes part of it: `ExecReload=/bin/kill -HUP $MAINPID # ...` would pass `#`
to kill), and it keeps the settings the README's shutdown promises rely on."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
INI = re.compile(r"^```ini\n(.*?)^```", re.MULTILINE | re.DOTALL)


def unit() -> dict[str, str]:
    (block,) = [b for b in INI.findall(README.read_text()) if "[Service]" in b]
    settings: dict[str, str] = {}
    lines = block.replace("\\\n", " ").splitlines()  # a trailing backslash continues a line
    for line in lines:
        if not line.strip() or line.lstrip().startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        assert " #" not in value and "\t#" not in value, f"an end-of-line comment: {line!r}"
        settings[key.strip()] = value.strip()
    return settings


def test_the_unit_has_no_end_of_line_comments_and_keeps_its_promises() -> None:
    settings = unit()
    assert settings["KillMode"] == "mixed"
    assert settings["StateDirectoryMode"] == "0700"  # else every start warns: data dir not private
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert settings["WorkingDirectory"] == "/srv/hookrunner"
    assert "hookrunner serve" in settings["ExecStart"]
    assert settings["SuccessExitStatus"] == "143"  # --http-workers' exit on SIGTERM
    assert settings["RestartSec"] == "5s" and settings["StartLimitIntervalSec"] == "0"

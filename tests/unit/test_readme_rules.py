"""Every YAML example in the README loads as pasted: the rules file as a whole, each `run:`
fragment inside a rule."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from hookrunner.rules.load import load_rules_text

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"^```ya?ml\n(.*?)^```", README.read_text(), re.MULTILINE | re.DOTALL)
WRAP = "hooks:\n  gh:\n    verify: {none: {}}\nrules:\n  - name: r\n    hook: gh\n"


def test_there_are_examples() -> None:
    assert any(b.startswith("hooks:") for b in BLOCKS)
    assert sum(b.startswith("run:") for b in BLOCKS) >= 4


@pytest.mark.parametrize("block", BLOCKS, ids=[b.splitlines()[1].strip()[:30] for b in BLOCKS])
def test_each_example_loads(block: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in set(re.findall(r"\{env: (\w+)\}", block)):
        monkeypatch.setenv(name, "a secret long enough for any verifier")
    text = block if block.startswith("hooks:") else WRAP + textwrap.indent(block, "    ")
    assert load_rules_text({"readme.yaml": text}).rules

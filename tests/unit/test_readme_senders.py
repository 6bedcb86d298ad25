"""The README's table of senders: every verifier has a row, and every snippet loads as is."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hookrunner.rules.load import load_rules_text
from hookrunner.verify import VERIFIERS

README = Path(__file__).resolve().parents[2] / "README.md"
ROW = re.compile(r"^\| `(\w+)` \| [^|]+ \| `(verify: .+?)` \|", re.MULTILINE)


def _section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end]


SNIPPETS = dict(ROW.findall(_section(README.read_text(), "Senders")))


def test_every_verifier_has_a_row_with_a_snippet() -> None:
    assert set(SNIPPETS) == set(VERIFIERS)


@pytest.mark.parametrize("name", sorted(SNIPPETS))
def test_each_snippet_pastes_under_a_hook_and_loads(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    snippet = SNIPPETS[name]
    for var in re.findall(r"env: (\w+)", snippet):
        monkeypatch.setenv(var, "whsec_c2VjcmV0LXZhbHVl")  # valid for every scheme
    ruleset = load_rules_text({"senders.yaml": f"hooks:\n  h:\n    {snippet}\n"})
    assert ruleset.hooks["h"].verify_kind == name

"""A replay that races retention's prune: a clear "pruned meanwhile", never an internal error."""

from __future__ import annotations

from pathlib import Path

import pytest

from hookrunner.replay import ReplayError, replay_delivery
from hookrunner.rules.load import load_rules
from hookrunner.store import open_store
from hookrunner.store.base import NewDelivery

RULES = """
hooks: {h: {verify: {none: {}}}}
rules:
  - name: r
    hook: h
    run: {shell: {argv: ["true"]}}
"""


async def test_a_delivery_pruned_between_its_read_and_its_runs_is_not_found(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(RULES)
    ruleset = load_rules(tmp_path / "rules", root=tmp_path)
    store = open_store(str(tmp_path / "data" / "hookrunner.db"))
    await store.open()
    try:
        d = NewDelivery(id="dlv_x", hook="h", received_at=1000.0, headers=[], body=b"{}",
                        dedup_key=None, event=None, client_ip="127.0.0.1", matches=[], query=[])
        await store.accept(d, [])
        read = store.get_delivery

        async def read_then_prune(delivery_id: str):  # type: ignore[no-untyped-def]
            found = await read(delivery_id)
            await store.prune(2000.0)  # retention's prune, right after the replay's read
            return found

        store.get_delivery = read_then_prune  # type: ignore[method-assign]
        with pytest.raises(ReplayError, match="pruned meanwhile") as info:
            await replay_delivery(store, ruleset, "dlv_x", 60.0)
        assert info.value.not_found
    finally:
        await store.close()

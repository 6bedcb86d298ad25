"""The console's templates are read once, with the code: an upgrade in place that changed
them under a running server served old code with new templates (500s on the Rules page)."""

from __future__ import annotations

from typing import Any

import pytest

from hookrunner.console import render


def test_every_page_template_comes_without_reading_the_disk_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def unreadable(*_: Any) -> Any:
        raise AssertionError("a template was read from disk after the start")

    names = render.env.list_templates()
    assert "rules.html" in names and "base.html" in names
    monkeypatch.setattr(render.env.loader, "get_source", unreadable)
    for name in names:
        assert render.env.get_template(name).name == name

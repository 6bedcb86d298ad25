"""Rendered values to the strings a process sees (argv items, environment values)."""

from __future__ import annotations

import json
from typing import Any


def stringify(value: Any) -> str:
    """Strings as they are; everything else as JSON (`3`, `true`, `null`, `{"a": 1}`)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)

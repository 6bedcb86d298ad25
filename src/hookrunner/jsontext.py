"""JSON text made with one C encoder per configuration, built once.

`json.dumps` and `JSONEncoder.encode` build a new C encoder on every call, with a closure and
a dict for cycle checks: ~2 µs, five times per accepted delivery (its headers, explanation
and query, its answer, its log line). For data that cannot hold a cycle (what JSON parsing,
the rules' renders and hookrunner's own records make), the encoder is made once here; a
cycle would still end, as a RecursionError rather than a ValueError.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json import encoder as _json_encoder
from typing import Any


def encoder(**options: Any) -> Callable[[Any], str]:
    """`json.dumps(value, **options)` as one function (no `indent`, no `check_circular`)."""
    settings = json.JSONEncoder(check_circular=False, **options)
    c_make_encoder = getattr(_json_encoder, "c_make_encoder", None)  # (typeshed omits it)
    if c_make_encoder is None or settings.indent is not None:  # no C speedups: as json does
        return settings.encode
    strings: Callable[[str], str] = (_json_encoder.encode_basestring_ascii if settings.ensure_ascii
                                     else _json_encoder.encode_basestring)
    made = c_make_encoder(None, settings.default, strings, None, settings.key_separator,
                          settings.item_separator, settings.sort_keys, settings.skipkeys,
                          settings.allow_nan)

    def encode(value: Any) -> str:
        if isinstance(value, str):
            return strings(value)
        return "".join(made(value, 0))

    return encode

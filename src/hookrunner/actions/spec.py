"""Load-time checks shared by the runners' `normalize` (keys, types), raising ConfigError."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

from hookrunner.errors import ConfigError
from hookrunner.rules.fields import not_a_string, quote_as_written, type_name

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")  # (not `$`: it lets a final newline through)
SCALARS = (str, int, float)  # YAML numbers are accepted where a string is expected


def check_mapping(raw: Any, kind: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{kind}: expected a mapping, got {type_name(raw)}")
    return raw


def check_keys(raw: Mapping[str, Any], kind: str, allowed: Collection[str]) -> None:
    for key in raw:
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            raise ConfigError(f"{kind}: unknown key {key!r} (known: {known})", path=(key,))


def scalar_str(value: Any, path: tuple[str | int, ...], what: str) -> str:
    """A string, or a number as it was written (`0755`, `3.10`, `12:30` stay so: YAML would
    make them 493, 3.1 and 750); anything else is a ConfigError at `path`."""
    if isinstance(value, bool) or not isinstance(value, SCALARS):
        raise ConfigError(not_a_string(what, value), path=path)
    if isinstance(value, str):
        return value
    written = getattr(value, "written", None)  # rules.yamlsrc.WrittenInt / WrittenFloat
    return written if isinstance(written, str) else str(value)


def optional_str(raw: Mapping[str, Any], key: str, kind: str) -> str | None:
    if key not in raw:
        return None
    value = scalar_str(raw[key], (key,), f"{kind}.{key}")
    if not value.strip():
        raise ConfigError(f"{kind}.{key} must not be empty", path=(key,))
    return value


def required_str(raw: Mapping[str, Any], key: str, kind: str) -> str:
    value = optional_str(raw, key, kind)
    if value is None:
        raise ConfigError(f"{kind}: {key!r} is required", path=(key,))
    return value


def str_map(
    raw: Mapping[str, Any], key: str, kind: str, *, names: re.Pattern[str] | None = None
) -> dict[str, str] | None:
    """A mapping of names to strings (numbers accepted), e.g. `env` or terraform `vars`."""
    if key not in raw:
        return None
    value = raw[key]
    if not isinstance(value, Mapping):
        raise ConfigError(f"{kind}.{key} must be a mapping", path=(key,))
    out: dict[str, str] = {}
    invalid = [name for name in value if isinstance(name, str) and names is not None
               and not names.match(name)]
    if len(invalid) > 1:  # each said at once: fixing one showed the next, a `check` each
        raise ConfigError(f"{kind}.{key}: invalid names {', '.join(map(repr, invalid))}",
                          path=(key, invalid[0]))
    for name, item in value.items():
        if not isinstance(name, str):  # `NULL: x`, `0x1F: y`: YAML made it no text
            raise ConfigError(f"{kind}.{key}: the name {name!r} is not text to YAML: "
                              f"{quote_as_written(name)}", path=(key, str(name)))
        if names is not None and not names.match(name):
            raise ConfigError(f"{kind}.{key}: invalid name {name!r}", path=(key, str(name)))
        out[name] = scalar_str(item, (key, name), f"{kind}.{key}.{name}")
    return out


def any_map(raw: Mapping[str, Any], key: str, kind: str) -> dict[str, Any] | None:
    """A mapping with string keys and any values (ansible extravars, http json bodies)."""
    if key not in raw:
        return None
    value = raw[key]
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"{kind}.{key} must be a mapping with string keys", path=(key,))
    return dict(value)


def str_list(raw: Mapping[str, Any], key: str, kind: str) -> list[str] | None:
    """A list of strings, or one string taken as a list of one."""
    if key not in raw:
        return None
    value = raw[key]
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise ConfigError(f"{kind}.{key} must be a list of strings", path=(key,))
    return [scalar_str(item, (key, i), f"{kind}.{key}[{i}]") for i, item in enumerate(value)]


def optional_bool(raw: Mapping[str, Any], key: str, kind: str) -> bool | None:
    if key not in raw:
        return None
    if not isinstance(raw[key], bool):
        raise ConfigError(f"{kind}.{key} must be true or false", path=(key,))
    return bool(raw[key])

"""Pure display helpers for the console's templates: times, durations, conditions, payloads."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hookrunner.payload import SHOWN_DEPTH, as_received, deeper_than
from hookrunner.rules.model import RateLimit, Source, When
from hookrunner.store.base import TERMINAL, Attempt, Run
from hookrunner.units import format_duration, utc_iso

STATUS_CLASSES = {
    "queued": "st-queued", "running": "st-running", "succeeded": "st-ok", "failed": "st-bad",
    "timed_out": "st-bad", "canceled": "st-warn", "skipped": "st-muted",
}
JSON_INDENT = 2
PRETTY_MAX = 64 * 1024  # bytes of body pretty-printed at most (see payload_view)
VIEW_MAX = 512 * 1024  # characters of a payload shown on a page
# Terminal escapes in run output (colours, titles): dropped, as a CI log viewer without colour
# support does. console.js does the same to streamed output.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")
# Other control characters (tab, newline and carriage return aside) become their visible
# "control pictures" (U+2400..): the output shows where they were instead of hiding them.
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


# Bidirectional controls (overrides, isolates, marks) reorder what follows them: a value
# `evil\u202etxt.exe` reads `evilexe.txt`. Written out as their code point instead.
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _picture(m: re.Match[str]) -> str:
    return chr(0x2421 if m[0] == "\x7f" else 0x2400 + ord(m[0]))


def visible_log(text: str) -> str:
    """Run output as a page shows it: terminal escapes dropped, other controls made visible."""
    return _CONTROLS.sub(_picture, _ESCAPES.sub("", text))


def shown(value: Any) -> Any:
    """Every value a page writes (the templates' `finalize`): a payload's, a header's or a
    reason's control characters as their pictures (ESC as ␛: a value is shown as it is,
    not as a terminal would), bidirectional controls as `<U+202E>`. Tab, newline and
    carriage return stay."""
    if isinstance(value, str):
        value = _BIDI.sub(lambda m: f"<U+{ord(m[0]):04X}>", _CONTROLS.sub(_picture, value))
    return value


def fmt_time(ts: float | None) -> str:
    """UTC, second precision: what an operator compares with server logs."""
    if ts is None:
        return "—"
    return utc_iso(ts, "%Y-%m-%d %H:%M:%S")


def iso_time(ts: float | None) -> str:
    if ts is None:
        return ""
    return utc_iso(ts)


def fmt_seconds(seconds: float | None) -> str:
    return "—" if seconds is None else format_duration(seconds)


def fmt_size(n: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} B"


def ago(ts: float | None, now: float) -> str:
    if ts is None:
        return ""
    delta = max(0.0, now - ts)
    if delta < 60:
        return f"{delta:.0f}s ago"
    if delta < 3600:
        return f"{delta / 60:.0f}m ago"
    if delta < 86400:
        return f"{delta / 3600:.0f}h ago"
    return f"{delta / 86400:.0f}d ago"


def run_duration(run: Run, now: float, attempts: Sequence[Attempt] = ()) -> float | None:
    """How long the current attempt ran (or has been running). An ended run's is its last
    attempt's own: one canceled while it waited for its retry ended later than that ran."""
    last = attempts[-1] if attempts else None
    if run.status in TERMINAL and last is not None and last.finished_at is not None:
        return max(0.0, last.finished_at - last.started_at)
    if run.started_at is None:
        return None
    end = run.finished_at if run.finished_at is not None else (None if run.status in TERMINAL else now)
    return None if end is None else max(0.0, end - run.started_at)


def status_class(status: str) -> str:
    return STATUS_CLASSES.get(status, "st-muted")


def condition_class(result: bool | None, error: str | None) -> str:
    if error:
        return "cond-error"
    if result is None:  # not evaluated: an earlier clause of its and/or decided
        return "cond-skipped"
    return "cond-true" if result else "cond-false"


def rate_text(limit: RateLimit) -> str:
    """`10/m, burst 10, per client` (as written in rules), not `0.16666666666666666/s`."""
    for unit, seconds in (("s", 1), ("m", 60), ("h", 3600)):
        per = limit.rate * seconds
        if per >= 1 and abs(per - round(per)) < 1e-9:
            rate = f"{round(per)}/{unit}"
            break
    else:
        rate = f"{limit.rate:.3g}/s"
    return f"{rate}, burst {limit.burst}, " + ("per client" if limit.per_client else "whole hook")


def when_text(when: When | None) -> str:
    """The condition tree as one line: `all(a, any(b, c))`; `(always)` without a `when`."""
    if when is None:
        return "(always)"
    if when.kind == "expr":
        return when.expr.source if when.expr is not None else ""
    inner = ", ".join(when_text(c) for c in when.children)
    return f"{when.kind}({inner})"


def source_text(source: Source, base: Path) -> str:
    """`file:line`, the file relative to the rules directory where it lies under it."""
    try:
        name = str(Path(source.file).resolve().relative_to(base.resolve()))
    except ValueError:
        name = source.file
    return f"{name}:{source.line}"


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=JSON_INDENT, ensure_ascii=False, sort_keys=False, default=str)


def payload_view(body: bytes, content_type: str | None = None,
                 whole_at: str = "/api/deliveries/<id>") -> tuple[str, str]:
    """(kind, text) of a stored body: `json` pretty-printed, a form's fields as the rules see
    them (`curl -d '{...}'` sends a form), `text`, or `binary` as base64. `whole_at`: where
    the API gives the whole body (named when it is cut).

    Bounded, so a page stays a page: indentation grows with depth times width (a 1 MB body
    nested 250 deep printed as 260 MB), so only a body up to PRETTY_MAX is pretty-printed,
    and what is shown stops at VIEW_MAX with a note of what was left out."""
    kind, value = as_received(body, content_type)
    if kind == "empty":
        return "empty", ""
    if kind == "binary":
        return "binary", _capped(base64.b64encode(body).decode(), whole_at)
    if kind == "text":
        return "text", _capped(value, whole_at)
    label = "form fields, as the rules see them" if kind == "form" else "json"
    if len(body) <= PRETTY_MAX and not deeper_than(value, SHOWN_DEPTH):
        return label, _capped(pretty_json(value), whole_at)
    return f"{label}, as sent (too large to indent)", _capped(body.decode("utf-8", "replace"), whole_at)




def _capped(text: str, whole_at: str) -> str:
    if len(text) <= VIEW_MAX:
        return text
    return (text[:VIEW_MAX] + f"\n… {len(text) - VIEW_MAX:,} more characters not shown "
            f"(the whole body: GET {whole_at})")

"""Structured logs: one event name and fields per line, readable text or JSON.

Callers use `event("delivery.accepted", hook=..., delivery_id=...)`. Never pass secrets:
fields are printed as given.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from hookrunner import jsontext

LOGGER = logging.getLogger("hookrunner")

LineFormat = Callable[[float, str, str, dict[str, Any]], str]


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    direct = _direct
    if (direct is not None and LOGGER.isEnabledFor(level) and len(LOGGER.handlers) == 1
            and LOGGER.handlers[0] is direct.handler and direct.takes(level)
            and direct.write(name, level, fields)):
        return
    LOGGER.log(level, name, extra={"fields": fields})


_THROTTLED: list[Throttled] = []  # every one made (module-level: a handful)


def settle_throttled() -> None:
    """Say every held-back count now: an outage's refusals before `store.available`, not
    after it (where they read as a new outage)."""
    for throttled in _THROTTLED:
        throttled.settle()


class Throttled:
    """An event that may fire thousands of times a second (a refusal under overload): the
    first is logged at once, the rest at most once per `every` seconds, with how many there
    were (`count`) since the last line. With `per`, each value of that field (a hook id), or
    of that function of the fields, has its own clock and count, so a flood on one hook
    cannot hide another's; only use it for values that are bounded (configured names, a
    fixed set of reasons; not client input)."""

    def __init__(self, name: str, level: int, every: float = 1.0,
                 per: str | Callable[[dict[str, Any]], Any] | None = None) -> None:
        self.name, self.level, self.every, self.per = name, level, every, per
        _THROTTLED.append(self)
        self._last: dict[Any, float] = {}
        self._count: dict[Any, int] = {}
        self._fields: dict[Any, dict[str, Any]] = {}  # of the last one held back
        # The flush due per key, on the loop that scheduled it (tests run several loops).
        self._flushes: dict[Any, tuple[asyncio.AbstractEventLoop, asyncio.TimerHandle]] = {}

    def __call__(self, **fields: Any) -> None:
        per = self.per
        key = None if per is None else per(fields) if callable(per) else fields.get(per)
        count = self._count.get(key, 0) + 1
        now = time.monotonic()
        last = self._last.get(key, float("-inf"))
        if now - last >= self.every:
            event(self.name, self.level, count=count, **fields)
            self._last[key], count = now, 0
        else:
            # Held back: said once its second is over, even if no other one comes (a burst
            # of 40 refusals logged 1, and the 39 were never told).
            self._fields[key] = fields
            self._schedule(key, last + self.every - now)
        self._count[key] = count

    def _schedule(self, key: Any, delay: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (the CLI): the next call says it, as before
            return
        if self._flushes.get(key, (None,))[0] is loop:
            return  # one is due already (a flush pops itself)
        self._flushes[key] = (loop, loop.call_later(max(0.0, delay), self._flush, key))

    def settle(self) -> None:
        """Say what is held back now (before a line that ends what they were about)."""
        for key in list(self._fields):
            pending = self._flushes.pop(key, None)
            if pending is not None:
                pending[1].cancel()
            self._flush(key)

    def _flush(self, key: Any) -> None:
        self._flushes.pop(key, None)
        count, fields = self._count.get(key, 0), self._fields.pop(key, None)
        if count and fields is not None:
            event(self.name, self.level, count=count, **fields)
            self._last[key], self._count[key] = time.monotonic(), 0


class _Direct:
    """The handler `setup_logging` installed, written to without a LogRecord: an event per
    delivery went through ~30 us of logging machinery, a tenth of the accept path. The
    line is the formatter's own; any other handler added later gets the usual path."""

    def __init__(self, handler: logging.StreamHandler[Any], line: LineFormat) -> None:
        self.handler = handler
        self.line = line
        assert handler.lock is not None  # (made by Handler.__init__)
        self._lock = handler.lock

    def takes(self, level: int) -> bool:
        """Only what the handler itself would pass: its level, and no filters."""
        return level >= self.handler.level and not self.handler.filters

    def write(self, name: str, level: int, fields: dict[str, Any]) -> bool:
        """False if a field cannot be formatted: then logging's own path reports it."""
        try:
            level_name = _LEVEL_NAMES.get(level) or logging.getLevelName(level).lower()
            text = self.line(time.time(), level_name, name, fields)
        except Exception:
            return False
        text += "\n"
        handler = self.handler
        with self._lock:  # handler.acquire() and release(), without their Python calls
            try:
                handler.stream.write(text)
                handler.stream.flush()
            except Exception:  # a log that cannot be written must not fail the request
                handler.handleError(logging.makeLogRecord({"msg": name}))
        return True


_LEVEL_NAMES = {level: logging.getLevelName(level).lower() for level in (
    logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)}


_direct: _Direct | None = None
_stamp: tuple[int, str] = (-1, "")  # (second, its text): one strftime per second


def _timestamp(created: float) -> str:
    global _stamp
    second = int(created)
    if _stamp[0] != second:
        _stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) + "Z")
    return _stamp[1]


# Characters of one field's value in a line. A client's text reaches some fields (a reason
# quoting a path a template made, a header): a 900 KB line was split by journald (LineMax
# 48K) and, with --http-workers on one pipe, interleaved with other processes' lines (a
# write over PIPE_BUF is not atomic). The API and the console have the whole of it.
FIELD_MAX = 1024
# Fields made of the rules' own names and hookrunner's ids, whole: `delivery.accepted
# runs=` is how a delivery is followed to its runs (40 rules of a hook are ~2,000 characters).
WHOLE_FIELDS = frozenset({"runs"})


def _bounded(fields: dict[str, Any]) -> dict[str, Any]:
    for k, v in fields.items():  # (a loop, not all(): a line per delivery comes here)
        if isinstance(v, str) and len(v) > FIELD_MAX and k not in WHOLE_FIELDS:
            break
    else:
        return fields
    return {k: f"{v[:FIELD_MAX]}...[{len(v) - FIELD_MAX} more characters]"
            if isinstance(v, str) and len(v) > FIELD_MAX and k not in WHOLE_FIELDS else v
            for k, v in fields.items()}


def _text_line(created: float, level: str, name: str, fields: dict[str, Any]) -> str:
    line = _text_fields(created, level, name, fields)
    # A line within FIELD_MAX has no field past it (a field is written whole, or longer
    # quoted): most lines are written in one pass, without a look at each field first.
    return line if len(line) <= FIELD_MAX else _text_fields(created, level, name,
                                                            _bounded(fields))


def _text_fields(created: float, level: str, name: str, fields: dict[str, Any]) -> str:
    parts = [_timestamp(created), level, name]
    # A field without a value is left out (`event_type=None` is Python, not a log value;
    # `reason=""` of a run that succeeded says nothing).
    parts += [f"{k}={_text(v)}" for k, v in fields.items() if v is not None and v != ""]
    return " ".join(parts)


def _json_line(created: float, level: str, name: str, fields: dict[str, Any]) -> str:
    doc: dict[str, Any] = {"ts": round(created, 3), "level": level, "event": name}
    doc.update(fields)
    line = _LINE(doc)
    if len(line) <= FIELD_MAX:  # (as _text_line)
        return line
    doc.update(_bounded(fields))
    return _LINE(doc)


_LINE = jsontext.encoder(default=str)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = _text_line(record.created, record.levelname.lower(), record.getMessage(),
                          getattr(record, "fields", {}))
        if record.exc_info:  # one line per event, as everywhere: a field, its newlines escaped
            line += f" exception={_text(self.formatException(record.exc_info))}"
        return line


_NEEDS_QUOTES = frozenset(' "=\n')


def terminal_safe(text: str) -> str:
    """`text` with every character that is not printable (ESC, BEL, a newline...) written as
    its escape: a payload's value in a reason must not drive the operator's terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)


def _text(value: Any) -> str:
    s = str(value)
    # Quoted (JSON-escaped) where a space or `=` would split it, and wherever a character is
    # not printable: a sender's id with `\r` or ESC would forge lines or drive terminals.
    return json.dumps(s) if (not s or not _NEEDS_QUOTES.isdisjoint(s) or not s.isprintable()) else s


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        doc.update(_bounded(getattr(record, "fields", {})))
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


# uvicorn's own warnings that hookrunner.httpproto logs itself, as throttled events.
_UVICORN_LOGGED = frozenset({"Invalid HTTP request received.", "Unsupported upgrade request."})


class _FromUvicorn(logging.Handler):
    """uvicorn's `uvicorn.error` lines as hookrunner's own (`http.server_message`): without it
    they went to Python's last-resort handler, bare text in a JSON log, one per request a
    client could provoke. Throttled per message (uvicorn's are a fixed few); a traceback is
    kept."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._throttled: dict[str, Throttled] = {}

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message in _UVICORN_LOGGED or message.startswith("No supported WebSocket library"):
            return
        if record.exc_info:
            LOGGER.log(record.levelno, "http.server_error", exc_info=record.exc_info,
                       extra={"fields": {"message": message}})
            return
        if message not in self._throttled and len(self._throttled) < 100:
            self._throttled[message] = Throttled("http.server_message", record.levelno)
        throttled = self._throttled.get(message)
        if throttled is not None:
            throttled(message=message)


class _FromDriver(logging.Handler):
    """psycopg's pool lines (`store.driver_message`): in an outage it says several a second,
    multi-line, in its own format (bare text in a JSON log). One line a second at most, with
    a count and the last message; hookrunner's own `*.store_unavailable` lines say the rest."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._throttled = Throttled("store.driver_message", logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        self._throttled(logger=record.name, message=record.getMessage())


def setup_logging(fmt: str = "text", level: int = logging.INFO) -> None:
    global _direct
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    LOGGER.handlers[:] = [handler]
    LOGGER.setLevel(level)
    LOGGER.propagate = False
    _direct = _Direct(handler, _json_line if fmt == "json" else _text_line)
    server = logging.getLogger("uvicorn.error")
    server.handlers[:] = [_FromUvicorn()]
    server.propagate = False
    driver = logging.getLogger("psycopg")
    driver.handlers[:] = [_FromDriver()]
    driver.propagate = False

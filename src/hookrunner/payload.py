"""Turn a raw body into the `payload` name of templates: JSON, or form fields.

GitHub's form-encoded deliveries carry the JSON in a `payload=` field; it is unwrapped.
"""

from __future__ import annotations

import codecs
import json
import math
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from hookrunner.errors import HookrunnerError

if TYPE_CHECKING:  # (verify's modules import this one)
    from hookrunner.verify.base import Headers

FORM = "application/x-www-form-urlencoded"
# The parser gives up where Python's recursion limit trips (~950 levels of arrays and
# objects). No bound below that is checked here: a walk of every body cost a 10 KB push
# ~50 us; what cannot take a deep value says so instead (deeper_than: the ansible action,
# the API's display; templates fail with a template error).
TOO_DEEP = "body is nested too deeply"
SHOWN_DEPTH = 400  # levels of a stored payload shown as JSON (the API, the console); then text
MAX_TOKEN = 40  # characters of a bad number quoted back (a 900,000-digit one was, whole)


class PayloadError(HookrunnerError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _quoted(token: str) -> str:
    return token if len(token) <= MAX_TOKEN else f"{token[:MAX_TOKEN]}... ({len(token)} characters)"


def _not_json(token: str) -> Any:
    raise ValueError(f"{token} is not a JSON number")


def _finite(token: str) -> float:
    value = float(token)
    if math.isinf(value):
        raise ValueError(f"{_quoted(token)} is out of range")
    return value


def deeper_than(doc: Any, limit: int) -> bool:
    """Whether `doc` has more than `limit` levels of lists and dicts (without recursion)."""
    todo: list[tuple[Any, int]] = [(doc, 1)] if isinstance(doc, dict | list) else []
    while todo:
        item, depth = todo.pop()
        if depth > limit:
            return True
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, dict | list):
                todo.append((child, depth + 1))
    return False


# One decoder for every body: json.loads with hooks builds a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite)


def _json(text: str) -> Any:
    # NaN and Infinity are not JSON (Python's parser takes them, and 1e999 as infinity): no
    # store, API or sender could carry them on, so they are refused like any other invalid
    # JSON. `_finite` costs a call per number with a fraction or exponent only (integers
    # stay in C); a scan of the text for big exponents cost every body ~3 us instead.
    try:
        if text.startswith("\ufeff"):  # as json.loads says it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        doc = _DECODER.decode(text)
    except RecursionError:
        raise PayloadError(400, TOO_DEEP) from None
    except ValueError as exc:
        message = str(exc)
        if "integer string conversion" in message:  # Python's advice, not a sender's
            message = "a number has more than 4300 digits"
        raise PayloadError(400, f"body is not valid JSON: {message}") from None
    # Only a `\u` escape can smuggle in a lone surrogate or NUL; most bodies skip the walk.
    if "\\u" in text:
        _check_storable(doc)
    return doc


def parse_json(text: str) -> Any:
    """JSON text carried inside a payload (a template's `| from_json`), held to the body's
    rules: no NaN, nothing no store could hold. PayloadError says why not."""
    return _json(text)


# A lone surrogate is not text (SQLite cannot bind it, UTF-8 cannot encode it) and PostgreSQL
# text cannot hold NUL: a value with either could never be journaled or shown, so refuse it.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _check_storable(value: Any) -> None:
    if unstorable(value):
        raise PayloadError(400, "body holds a NUL character or a lone surrogate "
                                "(\\u0000, \\ud800-\\udfff), which cannot be stored")


def as_storable(text: str) -> str:
    """`text` with any NUL or lone surrogate made U+FFFD (a sender's event name, say)."""
    return UNSTORABLE.sub("\ufffd", text)


def unstorable(value: Any) -> bool:
    """Whether a text in `value` (a key too) holds a NUL or a lone surrogate."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            if UNSTORABLE.search(item):
                return True
        elif isinstance(item, dict):
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, list | tuple):
            todo.extend(item)
    return False


# Single-byte charsets an old client may really send. Any byte decodes in them: the five
# windows-1252 leaves undefined (0x81, 0x8D, 0x8F, 0x90, 0x9D) as the C1 controls of the
# same number, as browsers decode them (WHATWG Encoding), through AS_LATIN1 (Python's
# cp1252 refused them: a 500).
LEGACY_CHARSETS = {"iso-8859-1": "latin-1", "latin1": "latin-1", "latin-1": "latin-1",
                   "windows-1252": "cp1252", "cp1252": "cp1252", "iso-8859-15": "iso8859-15"}
AS_LATIN1 = "hookrunner.as_latin1"


def _as_latin1(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return exc.object[exc.start:exc.end].decode("latin-1"), exc.end


codecs.register_error(AS_LATIN1, _as_latin1)


def _charset(content_type: str | None) -> str | None:
    for param in (content_type or "").split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None


def body_text(body: bytes, content_type: str | None) -> str | None:
    """The body as text without its byte order mark, or None for bytes that are not text.

    JSON is UTF-8 whatever a charset says (RFC 8259 8.1, 11): senders label UTF-8 as
    ISO-8859-1 often enough that a label is only believed for bytes that are not UTF-8."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        charset = _charset(content_type)
        if charset not in LEGACY_CHARSETS:
            return None
        text = body.decode(LEGACY_CHARSETS[charset], AS_LATIN1)
    return text.removeprefix("\ufeff")


def form_charset(content_type: str | None) -> str:
    """The charset a form's percent-escaped bytes are in: the labelled legacy one (an HTML
    form's accept-charset), else UTF-8."""
    return LEGACY_CHARSETS.get(_charset(content_type) or "", "utf-8")


def body_labels(headers: Headers) -> tuple[str | None, str | None]:
    """The body's Content-Type and Content-Encoding as parse_body takes them. A
    Content-Encoding sent on several lines is one list (RFC 9110 5.3: `identity` then `gzip`
    is gzip); a Content-Type is one value, so two different ones are a PayloadError(400),
    where the first was believed and the second left unread."""
    content_type, encoding = headers.get("content-type"), headers.get("content-encoding")
    if headers.repeats():  # (any name sent twice: rare, and only then are the lists read)
        if len({v.strip().lower() for v in headers.get_all("content-type")}) > 1:
            raise PayloadError(400, "Content-Type is given more than once, with different "
                                    "values: send one")
        encodings = headers.get_all("content-encoding")
        if len(encodings) > 1:
            encoding = ", ".join(encodings)
    return content_type, encoding


def unsupported_coding(content_encoding: str | None) -> str | None:
    """The first content coding of a Content-Encoding list that is not `identity`."""
    for coding in (content_encoding or "").lower().split(","):
        if coding.strip() not in ("", "identity"):
            return coding.strip()
    return None


def parse_body(body: bytes, content_type: str | None, content_encoding: str | None = None) -> Any:
    """Raise PayloadError(415) for a media type or content encoding no hook can parse, (400)
    for a malformed body. A UTF-8 byte order mark is ignored (RFC 8259 8.1)."""
    coding = unsupported_coding(content_encoding) if content_encoding else None
    if coding is not None:
        raise PayloadError(415, f"content encoding {coding[:40]!r} is not supported; send the "
                                "body uncompressed")
    text = body_text(body, content_type)
    if text is None:
        if not _readable(_media_type(content_type)):  # UTF-16 XML: its type is the fault
            raise PayloadError(415, _unsupported(_media_type(content_type)))
        raise PayloadError(400, "body is not valid UTF-8")
    if not text.strip(" \t\r\n"):  # JSON's whitespace, or only a byte order mark
        return {}
    return _parse(text, content_type)[1]


def _readable(media: str) -> bool:
    """Whether bodies of this media type are parsed: form fields, or JSON."""
    return media in (FORM, "", "application/json", "text/json", "text/plain") or \
        media.endswith("+json")


def _unsupported(media: str) -> str:
    return f"unsupported content type {media!r}; send JSON or form fields"


def as_received(body: bytes, content_type: str | None) -> tuple[str, Any]:
    """A stored body for display, as the rules saw it: ("json", the payload) (a form's
    `payload=` field unwrapped too), ("form", its fields), ("text", the text) where it does
    not parse as its type, ("binary", None) where it is not text, ("empty", {})."""
    text = body_text(body, content_type)
    if text is None:
        return "binary", None
    if not text.strip(" \t\r\n"):
        return "empty", {}
    try:
        return _parse(text, content_type)
    except PayloadError:
        return "text", text


def form_payload(body: bytes, content_type: str | None) -> bytes | None:
    """A form body's one field, `payload`, as the bytes it holds (UTF-8), or None where the
    body is no such form: Gitea signs the JSON it then sends as that field."""
    if _media_type(content_type) != FORM or not body.startswith(b"payload="):
        return None
    try:
        fields = parse_qsl(body.decode("ascii"), keep_blank_values=True, encoding="utf-8",
                           errors="strict")
    except UnicodeDecodeError:
        return None
    return fields[0][1].encode() if len(fields) == 1 and fields[0][0] == "payload" else None


def _parse(text: str, content_type: str | None) -> tuple[str, Any]:
    media = _media_type(content_type)
    if media == FORM:
        # Percent-escaped bytes are in the labelled legacy charset (an HTML form's
        # accept-charset), else UTF-8: bytes that are neither are refused, not made `�`.
        charset = form_charset(content_type)
        try:
            fields = dict(parse_qsl(text, keep_blank_values=True, encoding=charset,
                                    errors="strict" if charset == "utf-8" else AS_LATIN1))
        except UnicodeDecodeError:
            raise PayloadError(400, "a form field's percent-escaped bytes are not valid UTF-8 "
                                    "(label a legacy charset: `; charset=iso-8859-1`)") from None
        if set(fields) == {"payload"}:
            try:
                return "json", _json(fields["payload"])
            except PayloadError as exc:  # the body itself was a good form: say which part
                raise PayloadError(exc.status, "the form's one field, `payload` (read as "
                                   "GitHub's JSON), " + exc.message.removeprefix("body ")) \
                    from None
        _check_storable(fields)
        return "form", fields
    if _readable(media):
        return "json", _json(text)
    raise PayloadError(415, _unsupported(media))


FORM_JSON_HINT = ("the body was read as form fields (Content-Type: " + FORM + ", what `curl -d` "
                  "sends), but it is JSON: send it with -H 'Content-Type: application/json'")


def form_json_hint(body: bytes, content_type: str | None) -> str | None:
    """A hint for the commonest first-try mistake: JSON posted as a form (`curl -d '{...}'`
    without a Content-Type), whose payload is then `{"{...}": ""}` (or split at its `&`s and
    `=`s) and matches no rule. No form a sender makes starts with `{` or `[`."""
    if _media_type(content_type) != FORM or body.lstrip()[:1] not in (b"{", b"["):
        return None
    return FORM_JSON_HINT

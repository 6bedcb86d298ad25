"""`parse_body`: the raw body -> the `payload` of templates, or a clear 400/415."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hookrunner.payload import FORM, FORM_JSON_HINT, PayloadError, deeper_than, form_json_hint, parse_body


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b'{"a": 1}', "application/json", {"a": 1}),
        (b'{"a": 1}', "application/json; charset=utf-8", {"a": 1}),
        (b'{"a": 1}', "APPLICATION/JSON", {"a": 1}),
        (b'{"a": 1}', None, {"a": 1}),  # no content type: JSON is tried
        (b'{"a": 1}', "application/vnd.github+json", {"a": 1}),
        (b'{"a": 1}', "text/plain", {"a": 1}),  # some senders label JSON as text
        (b"[1, 2]", "application/json", [1, 2]),
        (b"", "application/json", {}),  # an empty body is an empty payload
        (b"  \r\n", "application/xml", {}),
        (b"a=1&b=&a=2", "application/x-www-form-urlencoded", {"a": "2", "b": ""}),
        # GitHub's form-encoded deliveries: the JSON in `payload=` is unwrapped.
        (b"payload=%7B%22ref%22%3A%22main%22%7D", "application/x-www-form-urlencoded",
         {"ref": "main"}),
        (b'{"s": "{{ 7*7 }}"}', "application/json", {"s": "{{ 7*7 }}"}),  # data, not template
        ('{"é": "ü"}'.encode(), "application/json", {"é": "ü"}),
        (b'{"a": 1e300, "b": -1.5e-400, "c": "1e999 NaN"}', "application/json",
         {"a": 1e300, "b": -0.0, "c": "1e999 NaN"}),  # large but finite; in strings: text
    ],
)
def test_bodies_that_parse(body: bytes, content_type: str | None, expected: Any) -> None:
    assert parse_body(body, content_type) == expected


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        (b'{"a": ', "application/json", 400, "not valid JSON"),
        (b"{'a': 1}", "application/json", 400, "not valid JSON"),
        (b"1" * 5000, "application/json", 400, "not valid JSON"),  # int digit limit
        (b'{"a": "\xff"}', "application/json", 400, "not valid UTF-8"),
        (b"a=\xff", "application/x-www-form-urlencoded", 400, "not valid UTF-8"),
        (b"[" * 100_000, "application/json", 400, "nested too deeply"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "nested too deeply"),
        (b'{"a":' * 100_000, None, 400, "nested too deeply"),
        (b"payload=%7B", "application/x-www-form-urlencoded", 400,
         "the form's one field, `payload` (read as GitHub's JSON), is not valid JSON"),
        (b"<a/>", "application/xml", 415, "unsupported content type"),
        # Its type is the fault, not its bytes (UTF-16 XML was told "not valid UTF-8").
        (b"\xff\xfe<\x00a\x00", "application/xml", 415, "unsupported content type"),
        (b"x", "multipart/form-data; boundary=x", 415, "unsupported content type"),
        # Python's parser takes these; JSON has none, and the API could not write them back.
        (b'{"a": NaN}', "application/json", 400, "NaN is not a JSON number"),
        (b'[Infinity]', None, 400, "Infinity is not a JSON number"),
        (b'{"a": -Infinity}', "application/json", 400, "-Infinity is not a JSON number"),
        (b'{"a": 1e999}', "application/json", 400, "1e999 is out of range"),
        (b'{"a": -2.5E+400}', "application/json", 400, "2.5E+400 is out of range"),
        (b"payload=%7B%22a%22%3ANaN%7D", "application/x-www-form-urlencoded", 400, "NaN"),
        (b"\x00", "application/octet-stream", 415, "unsupported content type"),
        (b"\xff{}", "application/json", 400, "body is not valid UTF-8"),
        (b'{"a": "\xe9"}', "application/json; charset=klingon", 400, "body is not valid UTF-8"),
    ],
)
def test_bodies_that_do_not_parse_get_a_clear_status(
    body: bytes, content_type: str | None, status: int, message: str
) -> None:
    with pytest.raises(PayloadError) as info:
        parse_body(body, content_type)
    assert info.value.status == status
    assert message in info.value.message


CONTENT_TYPES = st.one_of(
    st.none(),
    st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain",
                     "application/cloudevents+json", "application/xml", "", ";", "json"]),
    st.text(max_size=40),
)
JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
).map(lambda v: repr(v).encode())  # Python repr: JSON-like, often not JSON
BODIES = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
    JSONISH,
    st.integers(min_value=1, max_value=3000).map(lambda n: b"[" * n),
    st.builds(lambda k, v: f"{k}={v}".encode(), st.text(max_size=20), st.text(max_size=20)),
)


@settings(max_examples=500, deadline=None)
@given(body=BODIES, content_type=CONTENT_TYPES)
def test_any_body_parses_or_raises_a_400_or_415(body: bytes, content_type: str | None) -> None:
    try:
        parse_body(body, content_type)
    except PayloadError as exc:
        assert exc.status in (400, 415) and exc.message


@pytest.mark.parametrize(
    "body",
    [b'{"a": "\\ud800"}', b'{"a": "x\\u0000y"}', b'{"\\udfff": 1}', b'[["\\ud800"]]'],
)
def test_values_that_cannot_be_stored_are_refused_with_400(body: bytes) -> None:
    """Lone surrogates and NUL can be neither bound by SQLite nor kept by PostgreSQL text."""
    with pytest.raises(PayloadError) as info:
        parse_body(body, "application/json")
    assert info.value.status == 400 and "cannot be stored" in info.value.message


def test_escaped_text_that_is_valid_unicode_is_kept() -> None:
    assert parse_body(b'{"a": "\\u00e9\\ud83d\\ude00"}', "application/json") == {"a": "é😀"}


def test_form_fields_with_nul_are_refused() -> None:
    with pytest.raises(PayloadError):
        parse_body(b"a=%00", "application/x-www-form-urlencoded")


def test_a_declared_charset_and_a_byte_order_mark_are_honoured() -> None:
    assert parse_body('{"a": "café"}'.encode("latin-1"), "application/json; charset=ISO-8859-1") \
        == {"a": "café"}
    # UTF-8 mislabelled (common) stays UTF-8; a label never turns it into mojibake.
    for charset in ("ISO-8859-1", "us-ascii", "utf-16", "binary", "unicode_escape"):
        assert parse_body('{"a": "José"}'.encode(), f"application/json; charset={charset}") \
            == {"a": "José"}
    assert parse_body(b'\xef\xbb\xbf{"a": 1}', "application/json") == {"a": 1}
    assert parse_body(b'\xef\xbb\xbfa=1', "application/x-www-form-urlencoded") == {"a": "1"}


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate", "GZIP "])
def test_a_compressed_body_is_refused_naming_its_encoding(encoding: str) -> None:
    with pytest.raises(PayloadError) as info:
        parse_body(b"\x1f\x8b\x08\x00", "application/json", encoding)
    assert info.value.status == 415
    assert f"content encoding {encoding.strip().lower()!r} is not supported" in info.value.message
    assert parse_body(b"{}", "application/json", "identity") == {}


def test_content_encoding_sent_on_several_lines_is_one_list() -> None:
    """RFC 9110 5.3: `identity` then `gzip` on two lines is a gzip body; only the first
    line was read, and the compressed bytes were parsed as text."""
    from hookrunner.payload import body_labels
    from hookrunner.verify.base import Headers

    two = Headers([("Content-Encoding", "identity"), ("content-encoding", "gzip")])
    assert body_labels(two) == (None, "identity, gzip")
    with pytest.raises(PayloadError) as info:
        parse_body(b"\x1f\x8b\x08\x00", *body_labels(two))
    assert info.value.status == 415 and "content encoding 'gzip' is not" in info.value.message
    plain = Headers([("Content-Encoding", "identity"), ("Content-Encoding", " IDENTITY,")])
    assert parse_body(b"{}", *body_labels(plain)) == {}
    single = Headers([("Content-Type", "application/json"), ("Content-Encoding", "identity")])
    assert body_labels(single) == ("application/json", "identity")  # (no repeats: no lists)


@pytest.mark.parametrize(("types", "refused"), [
    (["application/json", "text/xml"], True), (["text/xml", "application/json"], True),
    (["application/json", " Application/JSON"], False), (["application/json"] * 3, False),
])
def test_content_type_sent_twice_with_different_values_is_refused(
        types: list[str], refused: bool) -> None:
    """The first was believed and the second never read: a body labelled both ways."""
    from hookrunner.payload import body_labels
    from hookrunner.verify.base import Headers

    headers = Headers([("Content-Type", t) for t in types] + [("X-Other", "x")])
    if not refused:
        assert body_labels(headers) == (types[0], None)
        return
    with pytest.raises(PayloadError) as info:
        body_labels(headers)
    assert info.value.status == 400
    assert info.value.message == ("Content-Type is given more than once, with different "
                                  "values: send one")


def test_percent_escaped_form_bytes_follow_the_labelled_charset_or_are_refused() -> None:
    """An HTML form with accept-charset=ISO-8859-1 sends `%E9` for é: decoded per the label,
    never turned into U+FFFD without a word."""
    latin = "application/x-www-form-urlencoded; charset=ISO-8859-1"
    assert parse_body(b"name=Jos%E9", latin) == {"name": "José"}
    assert parse_body(b"name=Jos%C3%A9", FORM) == {"name": "José"}
    with pytest.raises(PayloadError, match="percent-escaped bytes are not valid UTF-8") as info:
        parse_body(b"name=Jos%E9", FORM)
    assert info.value.status == 400


@pytest.mark.parametrize("content_type", [
    "application/json; charset=windows-1252", "text/plain; charset=cp1252",
    "application/x-www-form-urlencoded; charset=windows-1252"])
def test_bytes_windows_1252_leaves_undefined_are_read_as_browsers_read_them(
        content_type: str) -> None:
    """0x81, 0x8D, 0x8F, 0x90, 0x9D: Python's cp1252 refused them (a 500 on the hook);
    browsers read each as the C1 control of its number (WHATWG Encoding)."""
    body = b'{"a": "\x81\x8d\x8f\x90\x9d\x80"}' if "form" not in content_type \
        else b"a=%81%8D\x8f%90\x9d%80"
    assert parse_body(body, content_type) == {"a": "\x81\x8d\x8f\x90\x9d€"}


def nested(levels: int) -> bytes:
    """`{"v": [[...]]}`: `levels` levels of arrays and objects in all."""
    return b'{"v":' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"


def test_depth_is_counted_without_recursion_and_only_in_arrays_and_objects() -> None:
    """What cannot take a deep value asks (the ansible action, the API's display)."""
    assert deeper_than(parse_body(nested(900), "application/json"), 899)
    assert not deeper_than(parse_body(nested(900), "application/json"), 900)
    assert not deeper_than("[[[", 1) and not deeper_than(7, 0)
    wide = {"a": [[1]] * 1000}
    assert not deeper_than(wide, 3) and deeper_than(wide, 2)


def test_a_bad_number_is_not_quoted_back_whole() -> None:
    for body, shown in ((b'{"v": ' + b"9" * 900_000 + b'.5}', "... (900002 characters) is out of range"),
                        (b'{"v": ' + b"9" * 5000 + b"}", "a number has more than 4300 digits")):
        with pytest.raises(PayloadError) as info:
            parse_body(body, "application/json")
        assert shown in info.value.message and len(info.value.message) < 200, info.value.message


@pytest.mark.parametrize("body", [b"\xef\xbb\xbf", b"\xef\xbb\xbf \r\n", b" \t"])
def test_only_a_byte_order_mark_is_an_empty_body(body: bytes) -> None:
    assert parse_body(body, "application/json") == {}


@pytest.mark.parametrize(("body", "content_type", "hinted"), [
    (b'{"a": 1}', "application/x-www-form-urlencoded", True),
    (b' [1, 2]', "application/x-www-form-urlencoded; charset=utf-8", True),
    (b'{"url": "https://x/?a=1&b=2"}', "application/x-www-form-urlencoded", True),
    (b"a=1&b=2", "application/x-www-form-urlencoded", False),
    (b"payload=%7B%7D", "application/x-www-form-urlencoded", False),
    (b'{"a": 1}', "application/json", False),
    (b'{"a": 1}', None, False),
])
def test_json_posted_as_a_form_gets_a_hint(body: bytes, content_type: str | None,
                                          hinted: bool) -> None:
    assert (form_json_hint(body, content_type) == FORM_JSON_HINT) is hinted

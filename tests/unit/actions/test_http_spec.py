"""HTTP specs: normalization and the URL shown in logs."""

from __future__ import annotations

from typing import Any

import pytest

from hookrunner.actions.http import normalize_http
from hookrunner.errors import ConfigError
from hookrunner.redact import log_url as redacted


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"url": "https://x/y"}, {"url": "https://x/y", "method": "POST"}),
        (
            {"url": "u", "method": "put", "headers": {"X-A": 1}, "json": {"a": "{{ b }}"}},
            {"url": "u", "method": "PUT", "headers": {"X-A": "1"}, "json": {"a": "{{ b }}"}},
        ),
        ({"url": "u", "body": "{{ payload }}"}, {"url": "u", "method": "POST", "body": "{{ payload }}"}),
    ],
)
def test_normalize_accepts(raw: dict[str, Any], expected: dict[str, Any]) -> None:
    assert normalize_http(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message", "path"),
    [
        ({}, "'url' is required", ("url",)),
        ({"url": "u", "method": "FETCH"}, "method must be one of", ("method",)),
        ({"url": "u", "json": {}, "body": "x"}, "not both", ("body",)),
        ({"url": "u", "headers": {"Bad Header": "1"}}, "invalid name", ("headers", "Bad Header")),
        ({"url": "u", "timeout": 5}, "unknown key 'timeout'", ("timeout",)),
        # Every run would fail on it: refused by `check` instead.
        ({"url": "https://u:p@h/", "headers": {"authorization": "Bearer x"}},
         "the URL carries credentials and the rule sets an Authorization header", ("url",)),
        ({"url": "https://u@h/", "headers": {"Authorization": {"env": "T"}}},
         "keep one", ("url",)),
    ],
)
def test_normalize_rejects(raw: dict[str, Any], message: str, path: tuple[Any, ...]) -> None:
    with pytest.raises(ConfigError) as err:
        normalize_http(raw)
    assert message in err.value.message
    assert err.value.path == path


def test_credentials_that_only_a_payload_may_put_in_the_url_are_left_to_the_run() -> None:
    for url in ("https://{{ payload.auth }}@h/", "https://h/", "https://[bad/"):
        assert normalize_http({"url": url, "headers": {"Authorization": "x"}})["url"] == url


def test_redacted_drops_credentials_and_query() -> None:
    assert redacted("https://user:pw@example.com:8443/a/b?token=t#f") == "https://example.com:8443/a/b"
    assert redacted("http://[::1]:8080/x?t=1") == "http://[::1]:8080/x"  # brackets kept


@pytest.mark.parametrize(("host", "port", "no_proxy", "bypassed"), [
    ("::1", 80, "localhost,127.0.0.1,::1", True),  # curl's usual list: urllib missed `::1`
    ("::1", 9, "[::1]:9", True),
    ("api.example.com", 443, "api.example.com:443", True),  # the URL's port left implicit
    ("api.example.com", 443, "api.example.com:8443", False),
    ("x.example.com", 80, ".example.com", True),
    ("example.com", 80, "example.com", True),
    ("badexample.com", 80, "example.com", False),
    ("10.0.0.1", 80, "*", True),
    ("10.0.0.1", 80, " , ", False),
])
def test_no_proxy_is_read_as_curl_reads_it(host: str, port: int, no_proxy: str,
                                           bypassed: bool) -> None:
    from hookrunner.actions.http import _bypassed

    assert _bypassed(host, port, no_proxy) is bypassed


def test_a_secret_split_across_two_reads_of_the_answer_is_scrubbed_whole() -> None:
    from types import SimpleNamespace

    from hookrunner.actions.http import _Scrubbing, sent_secrets

    written: list[bytes] = []
    ctx = SimpleNamespace(log=SimpleNamespace(write=written.append))
    secrets = sent_secrets({"headers_env": {"X-Hook": "HOOK_URL"}}, "https://h.example/x",
                           {"Authorization": b"Bearer tok-123456", "X-Hook": b"abcd1234",
                            "X-Plain": b"visible"})
    assert secrets == (b"Bearer tok-123456", b"tok-123456", b"abcd1234")
    out = _Scrubbing(ctx, secrets)  # type: ignore[arg-type]
    for piece in (b"Authorization: Bearer tok-1", b"23456\nX-Hook: abcd", b"1234\nX-Plain: visible\n"):
        out.write(piece)
    out.flush()
    assert b"".join(written) == (b"Authorization: [redacted]\nX-Hook: [redacted]\n"
                                 b"X-Plain: visible\n")


def test_a_secret_is_looked_for_as_json_writes_it_but_a_short_value_is_not() -> None:
    """PHP writes `/` as `\\/`, Go `&` as `\\u0026`: echoed so, a key was in the log. A
    value too short to look for is not looked for escaped either (`\\/api\\/v2` garbled
    every echo of the path)."""
    from hookrunner.actions.http import sent_secrets

    secrets = sent_secrets({"url_env": "U"}, "https://h.example/api/v2?a=1&b=2&c=3",
                           {"X-Api-Key": b'k/e"y-123&4'})
    assert b'k\\/e\\"y-123&4' in secrets and b'k/e\\"y-123\\u00264' in secrets
    assert b"a=1\\u0026b=2\\u0026c=3" in secrets  # an {env:} URL's query, Go's way
    assert not any(b"api" in s for s in secrets)  # /api/v2: under the minimum


def test_an_env_urls_query_values_and_path_segments_are_looked_for_alone_and_decoded() -> None:
    """probe: an echo showing the query as httpbin's `args` (each value alone, `%2F` decoded)
    or the path's token alone put them in the log: only the whole path and query were
    looked for."""
    from hookrunner.actions.http import sent_secrets

    secrets = sent_secrets({"url_env": "U"}, "https://h.example/T0001/B0002/SlackSecretPart123"
                           "?token=abc%2Fdef%2Bghi123&signature=QuerySecret42", {})
    for piece in (b"SlackSecretPart123", b"abc/def+ghi123", b"abc%2Fdef%2Bghi123",
                  b"QuerySecret42"):
        assert piece in secrets, piece
    assert b"signature" not in secrets and b"T0001" not in secrets  # a name; too short


def test_an_answer_cut_inside_a_secret_shows_none_of_it() -> None:
    """The 64 KiB cap fell 3 bytes before a secret's end: the held start went out as it was."""
    from types import SimpleNamespace

    from hookrunner.actions.http import _Scrubbing

    written: list[bytes] = []
    ctx = SimpleNamespace(log=SimpleNamespace(write=written.append))
    out = _Scrubbing(ctx, (b"SECRETTOKEN-0123456789abcdef",))  # type: ignore[arg-type]
    out.write(b"Authorization: Bearer SECRETTOKEN-0123456789abcd")
    out.flush(cut=True)
    assert b"".join(written) == b"Authorization: Bearer [redacted]"
    written.clear()
    out.write(b"no secret here, only SECRET")  # a common word's start: cut, but said
    out.flush()
    assert b"".join(written) == b"no secret here, only SECRET"


def test_an_env_reference_written_as_the_shell_reads_it_says_to_drop_the_dollar() -> None:
    with pytest.raises(ConfigError, match="without a `\\$`"):
        normalize_http({"url": {"env": "$HOOK_URL"}})


def test_a_pinned_url_is_read_as_the_client_reads_it() -> None:
    """review: IDNA's full stops (U+3002, U+FF0E) are dots to httpx and letters to urlsplit, so a
    host template's value could pass the checks and name another domain."""
    from urllib.parse import urlsplit

    from hookrunner.actions.http import _read_alike

    for url in ("http://api-x\u3002attacker\u3002example:8080/ok", "http://a\uff0eb/x"):
        assert not _read_alike(url, urlsplit(url)), url
    for url in ("http://API.example.com:80/x", "https://b\u00fccher.example/x",
                "http://[::1]:8080/x", "http://127.0.0.1:41531/ok"):
        assert _read_alike(url, urlsplit(url)), url


def test_a_fixed_international_host_still_passes_and_an_escape_in_a_host_value_does_not() -> None:
    """review 3: the check of how the client reads the host compared `api.xn--bcher-kva...`
    with `api.b\u00fccher...` and refused every run of such a rule; and a value `x%2eevil%2ecom`
    in `api-{{ region }}` passed, which a proxy reads as `x.evil.com`."""
    from hookrunner.actions.http import URL_FIXED, _pinned

    def pinned(url: str, rendered: str, holes: list[list[str]] | None) -> bool:
        return _pinned(rendered, normalize_http({"url": url})[URL_FIXED], holes)

    assert pinned("https://api.b\u00fccher.example/deploy/{{ payload.v }}",
                  "https://api.b\u00fccher.example/deploy/x", None)
    assert pinned("https://XN--BCHER-KVA.example/api/{{ payload.v }}",
                  "https://XN--BCHER-KVA.example/api/x", None)
    assert pinned("https://{{ payload.r }}.b\u00fccher.example/", "https://eu.b\u00fccher.example/",
                  [["eu"]])
    assert not pinned("http://api-{{ payload.r }}/deploy", "http://api-x%2eevil%2ecom/deploy",
                      [["x%2eevil%2ecom"]])
    assert not pinned("http://{{ payload.r }}.example.com/", "http://a%2eb.example.com/",
                      [["a%2eb"]])


def test_a_port_that_is_a_passwords_start_is_not_quoted() -> None:
    """review: a password's unescaped `#` ends urlsplit's host part inside it, and what
    followed its `:` was quoted as the port: the password's start, in a reason `?wait` hands
    to the sender."""
    from hookrunner.actions.http import _prepare
    from hookrunner.errors import ActionError

    with pytest.raises(ActionError) as refused:
        _prepare({"url_env": "HOOK_URL"},
                 {"HOOK_URL": "https://deploy:S3cr3t#Pass@ci.example/hook"})
    assert "S3cr3t" not in str(refused.value) and "Pass" not in str(refused.value)
    assert "its port is not a number (a user name or password with a `/`, `?` or `#` in it " \
           "is written %2F, %3F, %23)" in str(refused.value)


@pytest.mark.parametrize(("url", "said"), [
    ("http://x.example:" + "9" * 5000 + "/", "its port 99999999999999999999... is not from 1 "
                                             "to 65535"),
    ("http://x.example:" + "0" * 5000 + "80/", None),  # leading zeros: digits, port 80
    ("http://x.example:65535/", None), ("http://x.example:65536/", "its port 65536 is not"),
])
def test_a_port_of_any_length_is_judged_without_an_error(url: str, said: str | None) -> None:
    """review: int() of more than 4,300 digits raises: a traceback from `check`, and an
    internal error of the run."""
    from hookrunner.actions.http import _url_problem

    problem = _url_problem(url)
    assert problem is None if said is None else problem is not None and problem.startswith(said)


@pytest.mark.parametrize("name", ["X-Hookrunner-Hops", "x-hookrunner-hops"])
def test_the_loop_guards_header_is_hookrunners_own(name: str) -> None:
    """probe: a rule's own `X-Hookrunner-Hops: 1` replaced the count, and a self-posting
    rule posted without end (522 runs in 4 s)."""
    with pytest.raises(ConfigError, match="X-Hookrunner-Hops is hookrunner's own") as caught:
        normalize_http({"url": "http://x/", "headers": {name: "1"}})
    assert caught.value.path == ("headers", name)


def test_a_binary_json_value_and_a_templated_method_are_said_plainly() -> None:
    """probe: `json: {b: !!binary aGVsbG8=}` sent `{"b": "b'hello'"}`, and a templated
    method was told only the list of methods."""
    with pytest.raises(ConfigError, match="a !!binary value has no JSON form") as caught:
        normalize_http({"url": "http://x/", "json": {"a": [1, {"b": b"hello"}]}})
    assert caught.value.path == ("json", "a", 1, "b")
    with pytest.raises(ConfigError, match=r"\(it is not templated: a rule per method\)"):
        normalize_http({"url": "http://x/", "method": "{{ payload.m }}"})

"""Secret-looking values are hidden: a rendered action's in what the console shows (the store
keeps them while the run may run), a delivery's headers and query parameters before they are
stored."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hookrunner.redact import (
    HIDDEN_KEY,
    HIDDEN_PATHS,
    REDACTED,
    ended_key,
    ended_spec,
    ended_spec_text,
    hidden_values,
    named_secret_values,
    passed_secret_values,
    redact_pairs,
    redact_spec,
    redact_url,
    scrub,
    scrub_tree,
    secret_key,
)


@pytest.mark.parametrize(("name", "secret"), [
    ("password", True), ("DB_PASSWORD", True), ("api_token", True), ("X-Auth-Token", True),
    ("client_secret", True), ("Authorization", True), ("API-KEY", True), ("aws_credentials", True),
    ("argv", False), ("url", False), ("replicas", False), ("DEPLOY_REF", False),
    # Header and query parameter names: the same rule.
    ("X-Gitlab-Token", True), ("X-Api-Key", True), ("Stripe-Signature", True),
    ("X-Hub-Signature-256", True), ("X-Shopify-Hmac-Sha256", True), ("Cookie", True),
    ("Proxy-Authorization", True), ("X-Session-Id", True), ("X-Auth", True), ("sig", True),
    ("access_token", True), ("key", True), ("apikey", True),
    # Common services' key headers and parameters (Azure Functions, API Management, JWTs).
    ("X-Functions-Key", True), ("Ocp-Apim-Subscription-Key", True), ("X-Webhook-Key", True),
    ("X-Signing-Key", True), ("X-Passphrase", True), ("X-Pass", True), ("X-Jwt", True),
    ("X-Bearer", True), ("Authentication", True), ("code", True), ("x-functions-key", True),
    ("pass", True), ("jwt", True), ("bypass", False), ("X-Error-Code", False), ("passenger", False),
    ("DEPLOY_AUTHOR", False), ("design", False), ("X-Event-Key", False), ("Idempotency-Key", False),
    ("I-Twilio-Idempotency-Token", False), ("X-GitHub-Delivery", False), ("Content-Type", False),
    ("env", False), ("bodySHA256", False), ("wait", False),
    # Joined or camelCase (probe: shown in clear), and a header name as the server lowers it.
    ("privateKey", True), ("accessKey", True), ("x-accesskey", True), ("clientKey", True),
    ("masterKey", True), ("signingKey", True), ("webhookKey", True), ("subscriptionKey", True),
    ("functionsKey", True), ("accessToken", True), ("clientSecret", True), ("privatekey", True),
    ("publicKeyId", False), ("monkey", False), ("X-Event-Key", False),
])
def test_secret_looking_key_names(name: str, secret: bool) -> None:
    assert secret_key(name) is secret


CASES: list[tuple[str, Any, str, Any]] = [
    ("shell env token", {"argv": ["x"], "env": {"API_TOKEN": "t0k", "REF": "main"}}, "shell",
     {"argv": ["x"], "env": {"API_TOKEN": REDACTED, "REF": "main"}}),
    ("nested password", {"extravars": {"db": {"password": "pw", "host": "h"}}}, "ansible",
     {"extravars": {"db": {"password": REDACTED, "host": "h"}}}),
    ("secret key with a mapping value", {"secrets": {"a": "1", "b": "2"}}, "terraform",
     {"secrets": {"a": REDACTED, "b": REDACTED}}),
    ("every http header", {"url": "https://x/y", "headers": {"X-Trace": "abc", "Accept": "a/b"}}, "http",
     {"url": "https://x/y", "headers": {"X-Trace": REDACTED, "Accept": REDACTED}}),
    ("headers kept outside http", {"headers": {"A": "b"}}, "shell", {"headers": {"A": "b"}}),
    ("url password", {"url": "https://bot:hunter2@api.example:8443/p?q=1"}, "http",
     {"url": f"https://bot:{REDACTED}@api.example:8443/p?q=1"}),
    ("lists walked", {"argv": [{"token": "t"}, "plain"]}, "shell", {"argv": [{"token": REDACTED}, "plain"]}),
    # Variable names, not values: shown as they are, whatever the header is called.
    ("http env references", {"url_env": "HOOK_URL", "headers_env": {"Authorization": "CI_TOKEN"}},
     "http", {"url_env": "HOOK_URL", "headers_env": {"Authorization": "CI_TOKEN"}}),
    ("env references only at the top", {"json": {"headers_env": {"Authorization": "x"}}}, "http",
     {"json": {"headers_env": {"Authorization": REDACTED}}}),
    # Values rendered from secret request values (ingest lists where they are).
    ("hidden paths", {"argv": ["a", "s3", "b"], "env": {"X": "s3", "Y": "y"}, "json": {"l": [{"v": 1}]},
                      "hidden_paths": [["argv", 1], ["env", "X"], ["json", "l", 0, "v"],
                                       ["gone", 1], ["argv", 9], "junk"]},
     "shell", {"argv": ["a", REDACTED, "b"], "env": {"X": REDACTED, "Y": "y"},
               "json": {"l": [{"v": REDACTED}]}}),
]


@pytest.mark.parametrize(("what", "spec", "action", "shown"), CASES, ids=[c[0] for c in CASES])
def test_redact_spec(what: str, spec: Any, action: str, shown: Any) -> None:
    assert redact_spec(spec, action) == shown


def test_redaction_leaves_the_stored_spec_untouched() -> None:
    spec = {"env": {"TOKEN": "t"}}
    redact_spec(spec, "shell")
    assert spec == {"env": {"TOKEN": "t"}}


@pytest.mark.parametrize(("text", "shown"), [
    # A user name alone is the credential (a token as GitHub and GitLab take it, Stripe's key
    # with an empty password): hidden, not shown as a name.
    ("https://user@host/x", f"https://{REDACTED}@host/x"),
    ("https://ghp_S3CR3T@github.com/o/r.git", f"https://{REDACTED}@github.com/o/r.git"),
    ("http://sk_live_S3CR3T:@h:8/", f"http://{REDACTED}@h:8/"),
    ("plain text with a:b@c", "plain text with a:b@c"),
    ("http://u:p@[::1]:8080/", f"http://u:{REDACTED}@[::1]:8080/"),
    # A fragment is never sent, but is kept with the URL: `#access_token=` hidden too.
    ("https://h/cb#access_token=FRAG&state=1", f"https://h/cb#access_token={REDACTED}&state=1"),
    ("https://h/docs#section-2", "https://h/docs#section-2"),
    # Nothing to hide: the text as it is, not as urlsplit puts it back (a tab dropped, an
    # empty `?` or `#` gone), so the API shows what the action got.
    ("https://example.com/x\ty?#", "https://example.com/x\ty?#"),
    ("https://h/a?ref=main&x", "https://h/a?ref=main&x"),
])
def test_redact_url(text: str, shown: str) -> None:
    assert redact_url(text) == shown


def test_redact_pairs_hides_secret_names_and_the_named_ones_keeping_order() -> None:
    pairs = [("X-Sig-Custom", "s"), ("X-Api-Key", "k"), ("Accept", "a"), ("x-custom", "c"),
             ("X-Api-Key", "k2")]
    assert redact_pairs(pairs, also=["X-CUSTOM"]) == [
        ("X-Sig-Custom", REDACTED), ("X-Api-Key", REDACTED), ("Accept", "a"),
        ("x-custom", REDACTED), ("X-Api-Key", REDACTED)]


def test_a_long_made_up_name_is_judged_but_never_remembered() -> None:
    """Names are remembered (every delivery has the same few dozen), but only short ones: a
    client's 60 KB header names must not pile up in memory."""
    from hookrunner import redact

    long_name = "X-" + "a" * 100 + "-Token"
    assert redact.secret_key(long_name) and redact.secret_key("X-" + "b" * 100) is False
    assert long_name not in redact._KNOWN and "X-" + "b" * 100 not in redact._KNOWN
    assert redact.secret_key("X-Api-Key") and redact._KNOWN["X-Api-Key"] is True
    assert redact.secret_key("X-Api-Key")


def test_a_stream_of_made_up_names_never_grows_the_memory_past_its_bound(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A sender sending new header names without end: the memory is emptied when full, and
    every verdict stays the same as a fresh judgement's."""
    from hookrunner import redact

    monkeypatch.setattr(redact, "_KNOWN", {})
    monkeypatch.setattr(redact, "_KNOWN_MAX", 8)
    names = [f"X-Made-Up-{i}" + ("-Token" if i % 3 == 0 else "") for i in range(30)]
    for name in names * 2:
        assert redact.secret_key(name) is redact._judge(name) is name.endswith("-Token")
        assert len(redact._KNOWN) <= 8
    pairs = [(n, "v") for n in names]
    assert redact.redact_pairs(pairs) == [
        (n, redact.REDACTED if n.endswith("-Token") else "v") for n in names]


@pytest.mark.parametrize(("url", "shown"), [
    ("https://h/x?api_key=S3CR3T&ref=main", "https://h/x?api_key=[redacted]&ref=main"),
    ("http://u:pw@h:8/x?token=t&sig=s", "http://u:[redacted]@h:8/x?token=[redacted]&sig=[redacted]"),
    ("https://h/x?ref=main&n=1", "https://h/x?ref=main&n=1"),  # nothing secret: as written
    ("http://[::1", "http://[::1"),  # not a URL after all: left alone, no error
])
def test_secret_query_parameters_of_a_url_are_hidden(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert redact_spec({"url": url}, "http") == {"url": shown}


def test_values_rendered_from_secrets_are_scrubbed_from_messages() -> None:
    spec = {"argv": ["x", "s3cret-1"], "cwd": "/w/s3cret-1", "env": {"A": "ab"},
            "json": {"k": [1, 2]}, "hidden_paths": [["argv", 1], ["cwd"], ["env", "A"], ["json"]]}
    values = hidden_values(spec)
    assert {"/w/s3cret-1", '{"k": [1, 2]}', "s3cret-1"} <= set(values)
    assert "ab" not in values  # too short: scrubbing it would garble messages
    assert scrub("path '/w/s3cret-1' is outside --root", values) == "path '[redacted]' is outside --root"
    assert scrub("executable not found: s3cret-1\\n", values) == "executable not found: [redacted]\\n"
    assert scrub("nothing here", values) == "nothing here"
    assert hidden_values({"argv": ["x"]}) == ()


def test_an_ended_spec_keeps_no_value_at_its_hidden_paths() -> None:
    """What a run keeps once it ends: its hidden values redacted, the rest as it ran; a
    path that leads nowhere is left alone, and a spec that cannot be read is kept as is."""
    spec = {"argv": ["deploy", "tok-123", "x"], "env": {"T": "tok-123"},
            HIDDEN_PATHS: [["argv", 1], ["env", "T"], ["argv", 9], ["nope", "x"], "bad", []]}
    ended = ended_spec(json.loads(json.dumps(spec)))
    assert ended["argv"] == ["deploy", REDACTED, "x"]
    assert ended["env"] == {"T": REDACTED}
    assert ended[HIDDEN_PATHS] == spec[HIDDEN_PATHS]
    assert json.loads(ended_spec_text(json.dumps(spec))) == ended
    plain = json.dumps({"argv": ["echo", "hi"]})
    assert ended_spec_text(plain) is plain  # no parse where nothing is hidden
    named = json.dumps({"argv": ["echo", "hidden_paths"]})
    assert json.loads(ended_spec_text(named)) == {"argv": ["echo", "hidden_paths"]}
    assert ended_spec_text('{"hidden_paths": [') == '{"hidden_paths": ['
    assert ended_spec_text(None) is None


def test_an_ended_spec_of_an_unforeseen_shape_is_kept_not_an_error() -> None:
    """The statement that ends a run calls these: they must never raise."""
    odd = {"argv": ["a"], HIDDEN_PATHS: [[["argv"], 0], [{"x": 1}], None, [0, "argv"]]}
    assert ended_spec(json.loads(json.dumps(odd))) == odd
    assert json.loads(ended_spec_text(json.dumps(odd))) == odd
    assert json.loads(ended_spec_text('{"hidden_paths": 1}')) == {"hidden_paths": 1}
    assert ended_spec({HIDDEN_PATHS: 1}) == {HIDDEN_PATHS: 1}


def compact(value: Any) -> str:  # as the store writes a spec (store._rows.dumps)
    return json.dumps(value, separators=(",", ":"))


def test_an_ended_run_keeps_its_key_unless_a_secret_made_it() -> None:
    assert ended_key(compact({"argv": [], HIDDEN_KEY: True}), "tok-123") == REDACTED
    assert ended_key({HIDDEN_KEY: True}, "tok-123") == REDACTED
    assert ended_key({HIDDEN_KEY: True}, None) is None
    assert ended_key(compact({"argv": [], HIDDEN_KEY: False}), "main") == "main"
    assert ended_key("not json " + HIDDEN_KEY, "main") == "main"


@pytest.mark.parametrize(("text", "quoted", "shown"), [
    ("scripts/Zm9v//tok-9.sh", "executable not found: /r/scripts/Zm9v/tok-9.sh",
     "executable not found: /r/[redacted]"),
    ("scripts/../tok-9.sh", "executable not found: /r/tok-9.sh", "executable not found: /r/[redacted]"),
    ("cb.example/tok-9?t=x", "http: not an http(s) URL (it has no scheme): cb.example/tok-9",
     "http: not an http(s) URL (it has no scheme): [redacted]"),
    # review: what no form of the value holds stays as it is
    ("/srv/app/Tok3nValue/..", "cannot run /srv/app/bin/deploy", "cannot run /srv/app/bin/deploy"),
    ("issue #12 by Tok3n", "issue 7: not writable", "issue 7: not writable"),
])
def test_a_hidden_value_is_scrubbed_in_the_forms_an_error_quotes_it_in(
        text: str, quoted: str, shown: str) -> None:
    values = hidden_values({"argv": [text], "hidden_paths": [["argv", 0]]})
    assert scrub(quoted, values) == shown


def test_terraform_outputs_made_of_hidden_values_are_scrubbed_keeping_their_types() -> None:
    values = hidden_values({"vars": {"t": "tok-from-header", "pin": 48213},
                            "hidden_paths": [["vars", "t"], ["vars", "pin"]]})
    outputs = {"token": "tok-from-header", "url": "https://x/?k=tok-from-header",
               "by_token": {"tok-from-header": 1}, "pin": 48213, "replicas": 3,
               "ready": True, "names": ["a", "tok-from-header"]}
    assert scrub_tree(outputs, values) == {
        "token": "[redacted]", "url": "https://x/?k=[redacted]", "by_token": {"[redacted]": 1},
        "pin": "[redacted]", "replicas": 3, "ready": True, "names": ["a", "[redacted]"]}


def test_the_values_a_spec_shows_redacted_for_their_names_are_listed_longest_first() -> None:
    spec = {"dir": "tf/app", "vars": {"db_password": "hunter2hunter2", "replicas": "3",
                                      "api_token": "tok-12345678", "pin": "12"},
            "nested": [{"client_secret": {"a": "inner-value"}}], "session": "abc"}
    assert named_secret_values(spec) == (
        '{"a": "inner-value"}', "hunter2hunter2", "tok-12345678", "inner-value")


def test_passed_terraform_vars_named_as_secrets_are_scrubbed_values() -> None:
    """`--pass-env TF_VAR_db_password` is judged by its var's name, as a rule's `vars` is."""
    environ = {"TF_VAR_db_password": "hunter2-pw", "TF_VAR_region": "eu-west-1",
               "API_TOKEN": "not-a-tf-var", "TF_VAR_api_token": "abc", "TF_VAR_secret": "x" * 9}
    passed = ["TF_VAR_db_password", "TF_VAR_region", "API_TOKEN", "TF_VAR_api_token",
              "TF_VAR_unset_password"]
    assert passed_secret_values(environ, passed) == ("hunter2-pw",)  # (abc: too short)

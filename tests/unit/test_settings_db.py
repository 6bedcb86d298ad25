"""`--db` URLs: refused where a password's `@`, `/`, `?` or `#` would cut the URL short and
have part of it quoted in messages; accepted where an `@` is an option's (`?user=a@b`)."""

from __future__ import annotations

import pytest

from hookrunner.settings import load_settings


@pytest.mark.parametrize(("url", "ok"), [
    ("postgresql://hookrunner:Secr/etPart@127.0.0.1:1/hookrunner", False),
    ("postgresql://u:pa?sxyzw@host/db", False),
    ("postgresql://u:pa#sxyzw@host/db", False),
    ("postgresql://u:1234/secret@host/db", False),
    ("postgresql://u:p@ss@host/db", False),
    # One '@' and one '/' in it: `ss` was taken for the host, and named in the messages.
    ("postgresql://hookrunner:p@ss/w@127.0.0.1:18500/hookrunner", False),
    ("postgresql://u:pa@ss?w@host/db", False),
    # An '@', a '/', then a '#' or '?' before the last '@': `s3cretHalf` was the host, and
    # both parts were quoted (and looked up in DNS).
    ("postgresql://hookrunner:Xy@s3cretHalf/Qz#9@127.0.0.1:18174/hookrunner", False),
    ("postgresql://u:p@ss/w?rd#1@127.0.0.1/db", False),
    ("postgresql://u:p@ss/w?r@d=1@127.0.0.1/db", False),
    ("postgresql://u:p@127.0.0.1/db#fragment", True),
    # The review's: libpq reads a `#` as part of an option's value, or of the database.
    ("postgresql://u@h/db?password=Pa#ss@1", True),
    ("postgresql:///db?host=%2Ftmp&password=a@b/c#d@e", True),
    ("postgresql://u@h/db?application_name=a#b@c", True),
    ("postgresql://u:p@127.0.0.1/db?sslmode=require&connect_timeout=5", True),
    # A password `p@ss/w?x=1`: libpq's "invalid URI query parameter" quoted `x`.
    ("postgresql://u:p@ss/w?x=1@host", False),
    ("postgresql://host?user=a@b", True),
    ("postgresql://u:pw@host?user=a@b", True),
    ("postgresql://host/db?user=app@server", True),
    ("postgresql://host:5432/db?user=a@b", True),
    ("postgresql:///db?host=/run/postgresql&user=a@b", True),
    ("postgresql://u:p%2Fw@[::1]:5432/db", True),
    ("postgres://u:pw@h/db", True),
    ("postgresql://u:pw@[::1]:5432/db", True),
    # Read wrongly, they named another host or port, or ended in a traceback.
    ("postgresql://u:secret@[::1/db", False),
    ("postgresql://u:secret@h:99999/db", False),
    ("postgresql://u:secret@h:abc/db", False),
    ("postgresql://u:secret@::1/db", False),
])
def test_db_urls(url: str, ok: bool) -> None:
    if ok:
        assert load_settings({"db": url}, {}, ["db"]).db == url
        return
    with pytest.raises(ValueError) as caught:
        load_settings({"db": url}, {}, ["db"])
    message = str(caught.value)
    assert message.startswith(("--db: the URL has ", "--db: its host part cannot be read"))
    for secret in ("etPart", "sxyzw", "secret", "ss@host", "s3cretHalf", "Qz"):
        assert secret not in message


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://hr:PW@/hr?host=/tmp/x/pgdata&port=55510", "/tmp/x/pgdata:55510/hr"),
    ("postgresql://hr:PW@127.0.0.1:55510/hr?dbname=hr2", "127.0.0.1:55510/hr2"),
    ("postgresql://hr:PW@127.0.0.2,127.0.0.1/hr?port=55510", "127.0.0.2,127.0.0.1:55510/hr"),
    ("postgresql://hr:PW@[::1]:55510/hr", "[::1]:55510/hr"),
    ("postgresql://hr:PW@%2Ftmp%2Fsock/hr", "/tmp/sock:5432/hr"),
    ("postgresql://hr:PW@h/", "h:5432/hr"),  # the database named after the user, as libpq does
])
def test_messages_name_the_database_libpq_uses(url: str, shown: str) -> None:
    from hookrunner.preflight import postgres_target

    assert postgres_target(url) == shown and "PW" not in postgres_target(url)


def test_several_hosts_for_failover_are_taken() -> None:
    url = "postgresql://hr:pw@127.0.0.1:5432,127.0.0.2:5432/hr"
    assert load_settings({"db": url}, {}, ["db"]).db == url


def test_variables_no_setting_reads_are_named_with_the_likely_intended_one() -> None:
    """`HOOKRUNNER_WORKER=3` in a unit's environment file ran the server with 8 workers."""
    from hookrunner.settings import unknown_variables

    environ = {"HOOKRUNNER_WORKER": "3", "HOOKRUNNER_ADMINTOKEN": "x", "HOOKRUNNER_FOO": "1",
               "HOOKRUNNER_PORT": "1", "HOOKRUNNER_ADMIN_TOKEN": "t", "HOOKRUNNER_RUN_ID": "r",
               "HOOKRUNNER_DELIVERY_ID": "d", "PATH": "/bin",
               # examples/send.sh's, which the README has exported where `make run` starts
               "HOOKRUNNER_URL": "http://127.0.0.1:9090"}
    assert unknown_variables(environ) == [
        ("HOOKRUNNER_ADMINTOKEN", "HOOKRUNNER_ADMIN_TOKEN"), ("HOOKRUNNER_FOO", None),
        ("HOOKRUNNER_WORKER", "HOOKRUNNER_WORKERS")]
    assert unknown_variables(environ, passed=["HOOKRUNNER_FOO"]) == [
        ("HOOKRUNNER_ADMINTOKEN", "HOOKRUNNER_ADMIN_TOKEN"),
        ("HOOKRUNNER_WORKER", "HOOKRUNNER_WORKERS")]

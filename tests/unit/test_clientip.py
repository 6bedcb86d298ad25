"""Which address a request came from, and whether a hook's allow_ips admits it."""

from __future__ import annotations

import pytest

from hookrunner.clientip import allowed, bucket, client_ip, forwarded_origin, parse_networks, plain
from hookrunner.rules.model import IPNetwork

PROXY = parse_networks(["10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize(
    ("peer", "xff", "trusted", "expected"),
    [
        # No trusted proxies (the default): X-Forwarded-For is never believed.
        ("203.0.113.9", ["198.51.100.1"], (), "203.0.113.9"),
        ("10.0.0.1", ["198.51.100.1"], (), "10.0.0.1"),
        # The peer is not a trusted proxy: its header is a client's claim, ignored.
        ("203.0.113.9", ["198.51.100.1"], PROXY, "203.0.113.9"),
        # A trusted proxy: the address it saw is the client.
        ("10.0.0.1", ["198.51.100.1"], PROXY, "198.51.100.1"),
        # A chain: walk from the right past trusted hops; a spoofed leftmost entry is ignored.
        ("10.0.0.1", ["6.6.6.6, 198.51.100.1, 10.1.1.1"], PROXY, "198.51.100.1"),
        # Several header lines count as one list, in order.
        ("10.0.0.1", ["6.6.6.6", "198.51.100.1"], PROXY, "198.51.100.1"),
        # A trusted proxy without the header: the proxy itself.
        ("10.0.0.1", [], PROXY, "10.0.0.1"),
        # Every hop trusted: the leftmost is the best we know.
        ("10.0.0.1", ["10.2.2.2, 10.3.3.3"], PROXY, "10.2.2.2"),
        # A hop that is no address (a client's own header passed on unchecked, Squid's
        # `unknown`) stops the walk: the client is `unknown`, whom no allow_ips admits (the
        # proxy's own address might); the text was stored, rate-limited and templated as the
        # client's address (30,000 characters of it, or markup).
        ("10.0.0.1", ["198.51.100.1, not-an-ip"], PROXY, "unknown"),
        ("10.0.0.1", ["not-an-ip, 10.2.2.2"], PROXY, "unknown"),
        ("10.0.0.1", ["<script>alert(1)</script>"], PROXY, "unknown"),
        ("10.0.0.1", ["g" * 30_000], PROXY, "unknown"),
        ("10.0.0.1", ["198.51.100.1:$(id)"], PROXY, "unknown"),  # not a port
        ("10.0.0.1", ["[2001:db8::7]x"], PROXY, "unknown"),
        # IPv6 proxies.
        ("fd00::1", ["2001:db8::7"], PROXY, "2001:db8::7"),
        # Empty and whitespace entries are skipped.
        ("10.0.0.1", [" , 198.51.100.1 ,"], PROXY, "198.51.100.1"),
        # A dual-stack listener's IPv4 peer (::ffff:a.b.c.d) is its IPv4 address, to the
        # trusted networks and in the answer; so are such hops.
        ("::ffff:10.0.0.1", ["198.51.100.1"], PROXY, "198.51.100.1"),
        ("::ffff:203.0.113.9", [], (), "203.0.113.9"),
        ("10.0.0.1", ["::ffff:198.51.100.1"], PROXY, "198.51.100.1"),
        # A proxy that adds the client's port.
        ("10.0.0.1", ["198.51.100.1:51234"], PROXY, "198.51.100.1"),
        ("10.0.0.1", ["[2001:db8::7]:443"], PROXY, "2001:db8::7"),
        ("10.0.0.1", ["10.2.2.2:80, 198.51.100.1:9"], PROXY, "198.51.100.1"),
        # An IPv6 zone is any text a client writes: no address (it was stored as sent).
        ("10.0.0.1", ["2001:db8::1%$(id);<script>"], PROXY, "unknown"),
        ("10.0.0.1", ["[fe80::1%eth0]:443"], PROXY, "unknown"),
    ],
)
def test_client_ip_believes_forwarded_for_only_from_trusted_proxies(
    peer: str, xff: list[str], trusted: tuple[IPNetwork, ...], expected: str
) -> None:
    assert client_ip(peer, xff, trusted) == expected


@pytest.mark.parametrize(
    ("addr", "allow", "expected"),
    [
        ("203.0.113.9", [], True),  # no allow-list: everyone
        ("192.30.252.17", ["192.30.252.0/22"], True),
        ("192.30.256.1", ["192.30.252.0/22"], False),  # not an address at all
        ("unknown", ["0.0.0.0/0", "::/0"], False),  # a hop that was no address
        ("192.30.250.1", ["192.30.252.0/22"], False),
        ("2001:db8::1", ["192.30.252.0/22", "2001:db8::/32"], True),
        ("127.0.0.1", ["10.0.0.0/8"], False),
        ("not-an-ip", ["0.0.0.0/0"], False),  # a garbage forwarded hop is never allowed
        ("", ["0.0.0.0/0"], False),
        ("10.1.2.3", ["10.1.2.3"], True),  # a bare address is a /32
    ],
)
def test_allow_ips_admits_only_addresses_inside_its_networks(
    addr: str, allow: list[str], expected: bool
) -> None:
    assert allowed(addr, parse_networks(allow)) is expected


def test_an_ipv4_mapped_address_is_matched_as_ipv4() -> None:
    assert plain("::ffff:127.0.0.1") == "127.0.0.1"
    assert plain("::FFFF:7f00:1") == "127.0.0.1"
    assert plain("2001:db8::ffff:1") == "2001:db8::ffff:1"
    assert plain("2001:DB8:0:0::1") == "2001:db8::1"
    assert plain("::ffff:not") == "::ffff:not"
    assert plain("0:0:0:0:0:ffff:198.51.100.7") == "198.51.100.7"
    assert allowed("::ffff:127.0.0.1", parse_networks(["127.0.0.0/8"]))
    # The networks too, as `ss` spells a dual-stack listener's IPv4 clients: they matched none.
    mapped = parse_networks(["::ffff:127.0.0.1/128", "::ffff:10.0.0.0/104"])
    assert [str(n) for n in mapped] == ["127.0.0.1/32", "10.0.0.0/8"]
    assert allowed("127.0.0.1", mapped) and allowed("::ffff:10.1.2.3", mapped)
    assert not allowed("11.0.0.1", mapped)
    assert [str(n) for n in parse_networks(["::ffff:0:0/80", "2001:db8::/32"])] == [
        "::/80", "2001:db8::/32"]  # not a mapped network: left as IPv6


def test_a_per_client_limit_and_login_tries_count_an_ipv6_host_by_its_64() -> None:
    assert bucket("2001:db8:1:2:aaaa::1") == bucket("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert bucket("2001:db8:1:3::1") != bucket("2001:db8:1:2::1")
    assert bucket("198.51.100.1") == "198.51.100.1"
    assert bucket("not-an-ip") == "not-an-ip" and bucket("") == ""


@pytest.mark.parametrize(
    ("peer", "protos", "hosts", "expected"),
    [
        ("10.0.0.1", ["https"], ["hooks.example.com:8443"], ("https", "hooks.example.com:8443")),
        # The nearest proxy's word: the last item of the last line.
        ("10.0.0.1", ["http", "x, HTTPS"], ["a.example", "b.example, c.example"],
         ("https", "c.example")),
        # Not said, or not a scheme a URL of ours can have.
        ("10.0.0.1", [], [], ("", "")),
        ("10.0.0.1", ["javascript"], ["h"], ("", "h")),
        # A client's own claim (not a trusted proxy) is never believed.
        ("203.0.113.9", ["https"], ["evil.example"], ("", "")),
    ],
)
def test_only_a_trusted_proxy_names_the_public_scheme_and_host(
        peer: str, protos: list[str], hosts: list[str], expected: tuple[str, str]) -> None:
    assert forwarded_origin(peer, PROXY, protos, hosts) == expected
    assert forwarded_origin(peer, (), protos, hosts) == ("", "")

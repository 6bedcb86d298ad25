"""Which address a request came from: the peer, unless the peer is a trusted proxy."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # (rules.model's templates read addresses with this module)
    from hookrunner.rules.model import IPNetwork


def parse_networks(cidrs: Sequence[str]) -> tuple[IPNetwork, ...]:
    return tuple(network(c) for c in cidrs)


def network(text: str) -> IPNetwork:
    """`ip_network(text, strict=False)`; an IPv4-mapped network (`::ffff:10.0.0.0/104`, the
    spelling `ss` shows for a dual-stack listener's IPv4 clients) as the IPv4 network it
    maps, since clients are compared by their IPv4 address (`plain`): it matched none."""
    net = ipaddress.ip_network(text, strict=False)
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96 \
            and net.network_address.ipv4_mapped is not None:
        return ipaddress.IPv4Network((int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96))
    return net


def bits_past_prefix(text: str) -> bool:
    """Whether a network is written with bits set past its prefix (`10.0.1.11/8`, meant as
    one address, stands for all of 10.0.0.0/8). False for a valid one or no network."""
    try:
        ipaddress.ip_network(text, strict=True)
    except ValueError:
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            return False  # not a network at all: said as such where it is read
        return True
    return False


def plain(addr: str) -> str:
    """An IPv4 client of a dual-stack listener (`--host ::`) arrives as `::ffff:a.b.c.d`:
    its IPv4 address, which allow lists, proxies, rate limits and the history name; an IPv6
    address in its one canonical spelling."""
    if ":" not in addr:
        return addr
    try:
        ip = ipaddress.IPv6Address(addr)
    except ValueError:
        return addr
    # One spelling per address (`2001:DB8:0::1` is 2001:db8::1), as the history stores it.
    return str(ip.ipv4_mapped) if ip.ipv4_mapped is not None else str(ip)


# Where a hop is no address (`unknown`, text a client sent that a proxy passed on): the client
# is unknown, and no allow_ips admits it (the trusted proxy's own address might).
UNKNOWN = "unknown"
_PORT = re.compile(r"[0-9]{1,5}")


def hop(text: str) -> str:
    """An X-Forwarded-For entry as an address: some proxies add the client's port
    (`198.51.100.7:51234`, `[2001:db8::1]:443`). Anything else after the address is not a
    port: the text is returned as it is (no address: `10.0.0.1:$(id)` is not 10.0.0.1)."""
    if text.startswith("["):
        inside, bracket, port = text[1:].partition("]")
        if bracket and (not port or (port[0] == ":" and _PORT.fullmatch(port[1:]))):
            return plain(inside)
        return text
    if text.count(":") == 1:
        address, _, port = text.partition(":")
        return address if _PORT.fullmatch(port) else text
    return plain(text)


def bucket(addr: str) -> str:
    """The client a per-client limit counts: an IPv6 host usually has a whole /64 to send
    from, so it is one client; an IPv4 address is one."""
    if ":" not in addr:
        return addr
    try:
        address = ipaddress.ip_address(addr)
    except ValueError:
        return addr
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return addr


def _in(addr: str, nets: Sequence[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(plain(addr))
    except ValueError:
        return False
    return any(ip in n for n in nets)


def trusted(peer: str, nets: Sequence[IPNetwork]) -> bool:
    """Whether the peer is one of the --trusted-proxy networks."""
    return _in(peer, nets)


def last_item(values: Sequence[str]) -> str:
    """A forwarding header's last item (`a, b` and a second header line: the nearest
    proxy's), or "" where none is sent."""
    return values[-1].rsplit(",", 1)[-1].strip() if values else ""


def forwarded_origin(peer: str, nets: Sequence[IPNetwork], protos: Sequence[str],
                     hosts: Sequence[str]) -> tuple[str, str]:
    """The scheme and host the sender used, as a --trusted-proxy says in `X-Forwarded-Proto`
    and `X-Forwarded-Host` (where it terminated TLS and rewrote `Host`): each "" where it
    is not said, not one of http/https, or the peer is not trusted."""
    if not nets or not _in(peer, nets):
        return "", ""
    scheme = last_item(protos).lower()
    return (scheme if scheme in ("http", "https") else ""), last_item(hosts)


def client_ip(peer: str, forwarded_for: Sequence[str], trusted: Sequence[IPNetwork]) -> str:
    """Walk X-Forwarded-For from the right while the hop is a trusted proxy: the first
    untrusted address is the client. Without trusted proxies the header is never believed."""
    peer = plain(peer)
    if not trusted or not _in(peer, trusted):
        return peer
    hops = [hop(h.strip()) for value in forwarded_for for h in value.split(",") if h.strip()]
    current = peer
    for address in reversed(hops):
        if not _in(current, trusted):
            break
        if not is_address(address):
            # What a trusted proxy passed on unchecked (`garbage`, a client's own header,
            # Squid's `unknown`): no address at all, so no allow_ips may admit it (the proxy
            # itself might), and its text is not stored, logged or templated.
            return UNKNOWN
        current = address
    return current


def is_address(text: str) -> bool:
    """An IP address as a header or a flag gives one: without an IPv6 zone (`%eth0`), whose
    text Python takes whatever it is (`::1%$(id);<script>`), and which names an interface
    of the machine that sent it, nothing a client here is known by."""
    if "%" in text:
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def allowed(addr: str, allow: Sequence[IPNetwork]) -> bool:
    """An empty allow-list allows everyone."""
    return not allow or _in(addr, allow)

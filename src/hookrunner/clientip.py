"""Which address a request came from: the peer, unless the peer is a trusted proxy."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from hookrunner.rules.model import IPNetwork


def parse_networks(cidrs: Sequence[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _in(addr: str, nets: Sequence[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return any(ip in n for n in nets)


def trusted(peer: str, nets: Sequence[IPNetwork]) -> bool:
    """Whether the peer is one of the --trusted-proxy networks."""
    return _in(peer, nets)


def client_ip(peer: str, forwarded_for: Sequence[str], trusted: Sequence[IPNetwork]) -> str:
    """Walk X-Forwarded-For from the right while the hop is a trusted proxy: the first
    untrusted address is the client. Without trusted proxies the header is never believed."""
    if not trusted or not _in(peer, trusted):
        return peer
    hops = [h.strip() for value in forwarded_for for h in value.split(",") if h.strip()]
    current = peer
    for hop in reversed(hops):
        if not _in(current, trusted):
            break
        current = hop
    return current


def allowed(addr: str, allow: Sequence[IPNetwork]) -> bool:
    """An empty allow-list allows everyone."""
    return not allow or _in(addr, allow)

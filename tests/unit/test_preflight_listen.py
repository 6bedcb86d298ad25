"""The listening sockets `serve` binds before it starts: real sockets on this machine."""

from __future__ import annotations

import socket

import pytest

from hookrunner.errors import StartupRefused
from hookrunner.preflight import listen


def test_every_address_of_the_host_is_bound_on_one_port() -> None:
    """'' is every interface: IPv4 and IPv6 both (as uvicorn binds a name that resolves to
    several addresses), one port for all, even when the port is chosen (0)."""
    resolved = {info[0] for info in socket.getaddrinfo(None, 0, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)}
    assert socket.AF_INET in resolved
    sockets = listen("", 0)
    try:
        families = {s.family for s in sockets}
        ports = {s.getsockname()[1] for s in sockets}
        assert families == resolved and len(ports) == 1  # here: IPv4 and IPv6
        with socket.create_connection(("127.0.0.1", ports.pop()), timeout=5):
            pass  # the IPv4 one accepts (into its backlog)
    finally:
        for s in sockets:
            s.close()


def test_a_port_in_use_is_one_clear_refusal_and_nothing_stays_bound() -> None:
    (taken,) = listen("127.0.0.1", 0)
    port = taken.getsockname()[1]
    try:
        with pytest.raises(StartupRefused, match=rf"cannot listen on 127\.0\.0\.1:{port}: "
                                                 "Address already in use"):
            listen("127.0.0.1", port)
    finally:
        taken.close()
    with pytest.raises(StartupRefused, match=r"cannot listen on no-such-host\.invalid"):
        listen("no-such-host.invalid", 0)

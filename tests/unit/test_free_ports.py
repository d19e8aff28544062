"""The ports the harness gives servers: free when probed, and below the
kernel's range of source ports, where no outgoing connection (a peer's call
to a node that is down, say) can take a node's port while it restarts."""

from __future__ import annotations

import socket

import pytest

from selectorkv.lab.harness import servers


@pytest.mark.skipif(
    servers._ephemeral_low() <= servers.LOWEST_PORT, reason="no room below the source ports"
)
def test_a_free_port_is_below_the_source_port_range_and_free() -> None:
    for _ in range(20):
        port = servers.free_port()
        assert servers.LOWEST_PORT <= port < servers._ephemeral_low()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # free: this would raise


def test_free_ports_gives_a_run_of_free_ports() -> None:
    base = servers.free_ports(3)
    for port in range(base, base + 3):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))

"""The ports the harness gives servers: free when probed, and below the
kernel's range of source ports, where no outgoing connection (a peer's call
to a node that is down, say) can take a node's port while it restarts. The
kernel's range is read from a file handed in through the module's seam
(``EPHEMERAL_RANGE``), so that both cases run on any machine."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from selectorkv.lab.harness import servers


def source_ports(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, first: int) -> None:
    """The kernel's source ports start at ``first`` (a fake range file)."""
    fake = tmp_path / "ip_local_port_range"
    fake.write_text(f"{first}\t60999\n")
    monkeypatch.setattr(servers, "EPHEMERAL_RANGE", fake)


def test_a_free_port_is_below_the_source_port_range_and_free_fake_range(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source_ports(monkeypatch, tmp_path, 32768)
    for _ in range(20):
        port = servers.free_port()
        assert servers.LOWEST_PORT <= port < 32768
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # free: this would raise


def test_without_room_below_the_range_the_kernel_picks_fake_range(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source_ports(monkeypatch, tmp_path, servers.LOWEST_PORT)
    port = servers.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # free: this would raise


def test_free_ports_gives_a_run_of_free_ports() -> None:
    base = servers.free_ports(3)
    for port in range(base, base + 3):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))

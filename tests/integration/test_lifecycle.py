"""The command line, start-up, signals, graceful shutdown and persistence."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from selectorkv.http import parser
from tests.support import (
    BlockingServerFactory,
    RawClient,
    request_bytes,
    serve_process,
    wait_until,
)


def refused(address: tuple[str, int]) -> bool:
    """True once nothing listens at ``address``. A connect that races the
    close of the listening socket is reset instead of refused (its SYN was
    queued on the socket being closed): that too says nothing listens."""
    try:
        socket.create_connection(address, timeout=5).close()
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    return False


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "selectorkv", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def test_help_explains_every_flag_and_its_environment_variable() -> None:
    result = run_cli("serve", "--help")
    assert result.returncode == 0
    for flag in (
        "--host",
        "--port",
        "--data",
        "--mode",
        "--selectors",
        "--workers",
        "--queue-size",
        "--max-body",
        "--keepalive-timeout",
        "--header-timeout",
        "--log-level",
        "--fsync",
    ):
        assert flag in result.stdout
    assert "SELECTORKV_QUEUE_SIZE" in result.stdout


def test_no_command_prints_usage_and_fails() -> None:
    result = run_cli()
    assert result.returncode == 2
    assert "serve" in result.stderr


def test_bad_environment_value_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("serve", env={"SELECTORKV_PORT": "eighty", "PATH": "/usr/bin"})
    assert result.returncode == 2
    assert "SELECTORKV_PORT='eighty'" in result.stderr


def test_start_line_port_zero_and_environment(tmp_path: Path) -> None:
    proc = serve_process(env={"SELECTORKV_MODE": "sync", "SELECTORKV_DATA": str(tmp_path / "d")})
    try:
        line = next(line for line in proc.lines if "listening on" in line)
        assert f"listening on http://127.0.0.1:{proc.address[1]} mode=sync" in line
        assert f"parser={parser.NAME}/{parser.VERSION}" in line
        assert f"data={tmp_path / 'd'}" in line
        assert proc.address[1] != 0
        assert (tmp_path / "d").is_dir()
    finally:
        assert proc.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_and_data_survives_restart(
    tmp_path: Path, mode: str, sig: int
) -> None:
    data = str(tmp_path / "db")
    first = serve_process("--data", data, "--mode", mode)
    client = RawClient(first.address)
    for i in range(100):
        assert client.request("PUT", f"/v0/entity?id=k{i}", b"value %d" % i).status == 201
    assert client.request("DELETE", "/v0/entity?id=k0").status == 202
    assert first.stop(sig) == 0
    assert "shutting down" in first.text()
    assert client.is_closed_by_server()

    second = serve_process("--data", data, "--mode", mode)
    try:
        client = RawClient(second.address)
        assert client.request("GET", "/v0/entity?id=k0").status == 404
        for i in range(1, 100):
            assert client.request("GET", f"/v0/entity?id=k{i}").body == b"value %d" % i
    finally:
        assert second.stop() == 0


def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    data = str(tmp_path / "db")
    first = serve_process("--data", data)
    client = RawClient(first.address)
    for i in range(200):
        assert client.request("PUT", f"/v0/entity?id=k{i}", b"v%d" % i).status == 201
    first.stop(signal.SIGKILL)
    second = serve_process("--data", data)
    try:
        client = RawClient(second.address)
        assert all(
            client.request("GET", f"/v0/entity?id=k{i}").body == b"v%d" % i for i in range(200)
        )
    finally:
        second.stop()


def test_fsync_mode_serves(tmp_path: Path) -> None:
    proc = serve_process("--data", str(tmp_path / "db"), "--fsync")
    try:
        assert RawClient(proc.address).request("PUT", "/v0/entity?id=f", b"1").status == 201
    finally:
        assert proc.stop() == 0


def test_locked_database_fails_with_a_clear_message(tmp_path: Path) -> None:
    data = str(tmp_path / "db")
    first = serve_process("--data", data)
    try:
        result = run_cli("serve", "--port", "0", "--data", data)
        assert result.returncode == 1
        assert "lock" in result.stderr.lower()
        assert "Traceback" not in result.stderr
    finally:
        first.stop()


def test_port_in_use_fails_with_a_clear_message(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_cli("serve", "--port", str(port), "--data", str(tmp_path / "db"))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.timing
def test_graceful_shutdown_lets_the_request_in_flight_finish(
    make_blocking_server: BlockingServerFactory, mode: str
) -> None:
    """Injected blocking storage holds a PUT in flight while the server stops."""
    server, storage = make_blocking_server(mode, grace=10)
    idle = RawClient(server.address)
    assert idle.request("GET", "/v0/status").status == 200
    busy = RawClient(server.address)
    busy.send(request_bytes("PUT", "/v0/entity?id=inflight", b"kept"))
    assert storage.entered.acquire(timeout=10)

    stopper = threading.Thread(target=server.stop)
    stopper.start()
    wait_until(lambda: refused(server.address), "the listening socket closed")  # no new clients
    if mode == "async":
        assert idle.is_closed_by_server()  # idle connections go at once
    # (In sync mode the one SelectorThread is itself stuck in storage, so it
    # closes the idle connection once the storage call returns.)
    storage.gate.set()
    assert idle.is_closed_by_server()
    reply = busy.read_reply()
    assert reply.status == 201
    if mode == "async":  # the SelectorThread knew of the shutdown before the response
        assert reply.headers.get(b"connection") == b"close"
    assert busy.is_closed_by_server()
    stopper.join(15)
    assert not stopper.is_alive()


@pytest.mark.timing
def test_shutdown_cuts_what_outlasts_the_grace_period(
    make_blocking_server: BlockingServerFactory,
) -> None:
    server, storage = make_blocking_server("async", grace=0.5)
    busy = RawClient(server.address)
    busy.send(request_bytes("PUT", "/v0/entity?id=slow", b"x"))
    assert storage.entered.acquire(timeout=10)
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    # Closed while the storage still holds the request: the grace period cut
    # it (the storage is released only below).
    assert busy.is_closed_by_server()
    storage.gate.set()  # the PayloadThread finishes; its response goes nowhere
    stopper.join(15)
    assert not stopper.is_alive()


def test_cpu_outside_the_allowed_set_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("serve", "--port", "0", "--cpu", "4095", "--data", str(tmp_path / "db"))
    assert result.returncode == 2
    assert "--cpu 4095: this process may use CPUs" in result.stderr


def test_sigterm_right_after_start_stops_cleanly(tmp_path: Path) -> None:
    """RocksDB starts threads when the database opens. If they began with
    SIGTERM unblocked, the kernel could hand the signal to one of them and
    its default action would kill the server (-15) instead of stopping it.
    Before the fix a script that signalled as soon as the start line
    appeared saw 11 of 30 servers end so; under pytest it is rarer (CI met
    it twice in a day), so this test is a guard, not a proof."""
    for attempt in range(5):
        proc = serve_process("--data", str(tmp_path / f"db{attempt}"))
        assert proc.stop(signal.SIGTERM) == 0

"""The wrk scripts produce the seed's workload against a real server.

Needs Debian's ``wrk`` (.ci/run installs it); without it these tests are
skipped with a reason, since the scripts are a tool for the lab and not part
of the server.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import rocksdict

from selectorkv.lab.load.tools import WrkPaced
from selectorkv.server import Server
from tests.support import (
    FreezingServer,
    RawClient,
    ServerFactory,
    assert_counts_the_stall,
    assert_on_schedule,
    serve_process,
)

SCRIPTS = Path(__file__).resolve().parents[2] / "wrk_scripts"

needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")


def run_wrk(server: Server, script: str, env: dict[str, str] | None = None) -> str:
    host, port = server.address
    result = subprocess.run(
        ["wrk", "-t2", "-c4", "-d1s", "-s", str(SCRIPTS / script), f"http://{host}:{port}"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def stored_items(server: Server) -> list[tuple[bytes, bytes]]:
    """What a stopped server stored, read straight from its RocksDB."""
    db = rocksdict.Rdict(server.config.data, rocksdict.Options(raw_mode=True))
    try:
        return list(db.items())
    finally:
        db.close()


def requests_done(output: str) -> int:
    match = re.search(r"(\d+) requests in", output)
    assert match, output
    return int(match.group(1))


@needs_wrk
def test_put_script_stores_300_byte_values_under_3_letter_ids(make_server: ServerFactory) -> None:
    server = make_server("sync")
    output = run_wrk(server, "put.lua")
    assert requests_done(output) > 100
    assert "Non-2xx" not in output  # every PUT was answered 201
    server.stop()
    items = stored_items(server)  # the seed's key space and value size
    assert len(items) > 50
    for key, value in items:
        assert re.fullmatch(rb"[a-zA-Z0-9]{3}", key), key
        assert re.fullmatch(rb"[a-zA-Z0-9]{300}", value), value[:20]


@needs_wrk
def test_put_script_with_a_keys_file_writes_only_those_keys(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keys.write_text("first\nsecond\n\nthird\n")  # an empty line is skipped
    server = make_server("sync")
    output = run_wrk(server, "put.lua", {"SELECTORKV_KEYS_FILE": str(keys)})
    assert requests_done(output) > 10
    server.stop()
    assert {key for key, _ in stored_items(server)} == {b"first", b"second", b"third"}


@needs_wrk
def test_get_and_delete_scripts_hit_the_same_key_space(make_server: ServerFactory) -> None:
    server = make_server("async")
    client = RawClient(server.address)
    client.request("PUT", "/v0/entity?id=abc", b"x" * 300)
    get_output = run_wrk(server, "get.lua")
    assert requests_done(get_output) > 100
    delete_output = run_wrk(server, "delete.lua")
    assert requests_done(delete_output) > 100
    assert "Non-2xx" not in delete_output  # DELETE is always 202


@needs_wrk
def test_range_script_reads_short_ranges(make_server: ServerFactory) -> None:
    server = make_server("sync")
    client = RawClient(server.address)
    for key in ("aa1", "aaZ", "zz9"):
        client.request("PUT", f"/v0/entity?id={key}", b"x" * 300)
    output = run_wrk(server, "range.lua")
    assert requests_done(output) > 100
    assert "Non-2xx" not in output  # every range answered 200


@needs_wrk
@pytest.mark.timing
def test_paced_script_keeps_to_its_schedule_or_says_it_fell_behind(tmp_path: Path) -> None:
    # A server in its own process, as the lab runs it (in this process it
    # would share pytest's GIL and CPU with the test).
    server = serve_process("--data", str(tmp_path / "db"), "--mode", "sync")
    host, port = server.address
    try:
        measured = WrkPaced().constant_rate(f"http://{host}:{port}", "put", 2000, 8, 3)
    finally:
        server.stop()
    figures = measured.figures
    assert figures["tool"] == "wrk + paced.lua"
    assert set(figures["status_counts"]) == {"201"}
    assert figures["errors"] == 0
    assert_on_schedule(figures, 2000)
    assert measured.histogram.get_total_count() == figures["requests"]


@needs_wrk
@pytest.mark.timing
def test_paced_script_counts_a_stall_from_the_due_time() -> None:
    server = FreezingServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host, port = server.server_address[:2]
        measured = WrkPaced().constant_rate(f"http://{host}:{port}", "get", 400, 4, 4)
    finally:
        server.shutdown()
        server.server_close()
    assert_counts_the_stall(measured.figures["latency_ms"])


@needs_wrk
@pytest.mark.parametrize("stated", [None, "2"])
def test_paced_script_refuses_a_thread_count_other_than_wrks(
    make_server: ServerFactory, tmp_path: Path, stated: str | None
) -> None:
    # wrk starts each thread as soon as its setup() returns, so the script
    # cannot count the threads itself without reaching into running ones.
    server = make_server("sync")
    host, port = server.address
    env = {**os.environ, "PACED_RATE": "100", "PACED_OUT": str(tmp_path / "out.json")}
    env.pop("PACED_THREADS", None)
    if stated is not None:
        env["PACED_THREADS"] = stated
    result = subprocess.run(
        ["wrk", "-t4", "-c4", "-d1s", "-s", str(SCRIPTS / "paced.lua"), f"http://{host}:{port}"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert result.returncode != 0
    assert "PACED_THREADS" in result.stderr
    assert not (tmp_path / "out.json").exists()

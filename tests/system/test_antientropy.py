"""Anti-entropy repair on real node processes: a node that missed writes,
or lost its disk, gets every newest record back through ``selectorkv
repair`` with no client reading them, and no key ends up on more nodes
than its ``from``. Hinted handoff is off, so that repair alone restores
them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from selectorkv.kv.records import decode
from selectorkv.lab.harness.nodes import TOKEN, ClusterFactory, Node, wait_until

NO_HINTS = "--no-hinted-handoff"


def repair(node: Node) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "selectorkv", "repair", "--node", node.url, "--token", TOKEN],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def internal(node: Node, method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
    return node.request(method, target, body, {"X-Selectorkv-Token": TOKEN})


def held(nodes: list[Node], key: str) -> dict[str, tuple[int, bytes | None]]:
    """Each node's record of ``key``: (version, value), for those that hold one."""
    found = {}
    for node in nodes:
        status, body = node.internal("GET", key)
        if status == 200:
            record = decode(body)
            found[node.url] = (record.version, record.value)
    return found


def test_a_node_that_missed_writes_converges_without_a_read(make_cluster: ClusterFactory) -> None:
    nodes = make_cluster(3, "async", NO_HINTS)
    for i in range(30):
        assert nodes[0].put(f"old{i}", b"first") == 201
    nodes[2].stop()
    for i in range(30):
        assert nodes[0].put(f"old{i}", b"second") == 201  # overwrites it missed
        assert nodes[0].put(f"new{i}", b"new") == 201  # keys it never saw
    assert nodes[0].delete("old0") == 202
    nodes[2].start()
    wait_until(nodes[2].answers, "the node answers again", timeout=30)
    assert held(nodes, "new5").keys() == {nodes[0].url, nodes[1].url}

    done = repair(nodes[2])
    assert done.returncode == 0, done.stderr
    assert "segments differed" in done.stdout
    for i in range(1, 30):
        for key, value in ((f"old{i}", b"second"), (f"new{i}", b"new")):
            records = held(nodes, key)
            assert len(records) == 3, key
            assert {v for _, v in records.values()} == {value}, key
    assert {v for _, v in held(nodes, "old0").values()} == {None}  # the tombstone too

    again = repair(nodes[0])  # everything agrees now: roots equal, nothing sent
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("0 records sent, 0 received") == 2


def test_repair_makes_no_copy_beyond_from(make_cluster: ClusterFactory) -> None:
    nodes = make_cluster(3, "sync", NO_HINTS)
    for i in range(40):
        assert nodes[0].put(f"one{i}", b"x", "&ack=1&from=1") == 201
        assert nodes[1].put(f"two{i}", b"y", "&ack=2&from=2") == 201
    for node in nodes:
        assert repair(node).returncode == 0
    for i in range(40):
        assert len(held(nodes, f"one{i}")) == 1
        assert len(held(nodes, f"two{i}")) == 2


def test_a_node_with_an_empty_disk_is_refilled_by_repair(make_cluster: ClusterFactory) -> None:
    """Enough keys that nearly every segment differs: the walk asks for
    every node of the lowest level."""
    nodes = make_cluster(3, "async", NO_HINTS)
    for i in range(600):
        assert nodes[1].put(f"k{i}", b"v%d" % i) == 201
    nodes[0].stop()
    shutil.rmtree(nodes[0].data)
    nodes[0].restart()
    assert all(nodes[0].stored(f"k{i}") == 404 for i in range(600))
    done = repair(nodes[0])
    assert done.returncode == 0, done.stderr
    for i in range(600):
        status, body = nodes[0].internal("GET", f"k{i}")
        assert status == 200 and decode(body).value == b"v%d" % i


def test_repair_state_and_refusals(make_cluster: ClusterFactory) -> None:
    nodes = make_cluster(2, "sync", NO_HINTS)
    assert nodes[0].request("POST", "/v0/internal/repair")[0] == 403  # no token
    status, body = internal(nodes[0], "GET", "/v0/internal/repair")
    assert status == 200 and json.loads(body)["state"] == "never"
    status, _ = internal(nodes[0], "GET", "/v0/internal/repair/tree?peer=http://x:1")
    assert status == 400
    status, _ = internal(
        nodes[0], "POST", f"/v0/internal/repair/push?peer={nodes[1].url}", b"1,99999"
    )
    assert status == 400
    wrong = subprocess.run(
        [sys.executable, "-m", "selectorkv", "repair", "--node", nodes[0].url, "--token", "bad"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert wrong.returncode == 1 and "403" in wrong.stderr

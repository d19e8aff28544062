"""Anti-entropy repair on real node processes: a node that missed writes,
or lost its disk, gets every newest record back through ``selectorkv
repair`` or the background repair, with no client reading them, and no key
ends up on more nodes than its ``from``; old tombstones are purged once
every replica holds them, and a key deleted while a replica was down never
comes back. Hinted handoff is off, so that repair alone restores them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

from selectorkv.cluster.clock import NODE_BITS
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


def test_a_background_repair_converges_a_node_without_a_client(
    make_cluster: ClusterFactory,
) -> None:
    nodes = make_cluster(3, "sync", NO_HINTS, "--repair-interval", "0.5")
    nodes[2].stop()
    for i in range(30):
        assert nodes[0].put(f"k{i}", b"v%d" % i) == 201
    nodes[2].start()
    wait_until(nodes[2].answers, "the node answers again", timeout=30)
    wait_until(
        lambda: all(len(held(nodes, f"k{i}")) == 3 for i in range(30)),
        "every key on its three replicas again, with no read and no selectorkv repair",
        timeout=60,
    )
    wait_until(lambda: nodes[2].metric("selectorkv_repairs_total", result="done") > 0, "counted")


def test_old_tombstones_are_purged_once_every_replica_holds_them_and_never_come_back(
    make_cluster: ClusterFactory,
) -> None:
    nodes = make_cluster(3, "sync", NO_HINTS, "--tombstone-grace", "1", "--repair-interval", "0")
    a, b, c = nodes
    for i in range(20):
        assert a.put(f"all{i}", b"old", "&ack=3&from=3") == 201
        assert a.put(f"two{i}", b"old", "&ack=2&from=2") == 201
    elsewhere = [f"two{i}" for i in range(20) if c.url not in held(nodes, f"two{i}")]
    assert elsewhere
    c.stop()
    for i in range(20):
        assert a.delete(f"all{i}", "&ack=2&from=3") == 202
    for key in elsewhere:
        assert a.delete(key, "&ack=2&from=2") == 202
    deleted = held([a], "all19")[a.url][0] >> NODE_BITS
    wait_until(lambda: time.time_ns() - deleted > 1.5e9, "the grace period is over")

    # c missed the deletes: their tombstones stay while it cannot be asked,
    # and only theirs: a key whose replicas were both reached loses its own.
    assert repair(a).returncode == 1
    for i in range(20):
        assert [value for _, value in held([a, b], f"all{i}").values()] == [None, None]
    assert all(held([a, b], key) == {} for key in elsewhere)

    c.start()
    wait_until(c.answers, "c answers again", timeout=30)
    assert held([c], "all0")[c.url][1] == b"old"  # what a purge too early would bring back
    done = repair(c)  # c gets the tombstones, then all three purge them
    assert done.returncode == 0, done.stderr
    assert "tombstones purged: 20" in done.stdout
    for i in range(20):
        assert held(nodes, f"all{i}") == {}
    assert repair(b).returncode == 0  # nothing left to bring anything back
    for i in range(20):
        assert held(nodes, f"all{i}") == {}
        assert all(node.get(f"all{i}")[0] == 404 for node in nodes)
    purged = sum(node.metric("selectorkv_tombstones_purged_total") for node in nodes)
    assert purged == 3 * 20 + 2 * len(elsewhere)


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

"""The hash tree of anti-entropy, without a database or a network: the
other node's tree is handed in as a function, as the walk would ask a peer."""

from __future__ import annotations

import random

import pytest

from selectorkv.cluster.merkle import (
    DEPTH,
    FANOUT,
    SEGMENTS,
    HashTree,
    differing_segments,
    segment_of,
)
from selectorkv.kv.records import Record


def tree_of(entries: list[tuple[bytes, bytes]]) -> HashTree:
    tree = HashTree()
    for key, raw in entries:
        tree.add(key, raw)
    return tree


def entries(count: int, seed: int = 1) -> list[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    return [
        (b"key-%d" % i, Record(rng.getrandbits(64), b"v%d" % i, 3).encode()) for i in range(count)
    ]


def test_the_same_entries_in_any_order_make_the_same_tree() -> None:
    some = entries(500)
    shuffled = some[:]
    random.Random(2).shuffle(shuffled)
    assert tree_of(some).hashes(0, [0]) == tree_of(shuffled).hashes(0, [0])


def test_equal_trees_are_compared_by_their_roots_alone() -> None:
    some = entries(300)
    asked: list[int] = []

    def theirs(level: int, indices: list[int]) -> list[bytes]:
        asked.append(level)
        return tree_of(some).hashes(level, indices)

    assert differing_segments(tree_of(some), theirs) == ({}, 1)
    assert asked == [0]


def test_one_differing_record_is_found_in_its_segment_down_one_path() -> None:
    some = entries(2000)
    other = some[:]
    key, _ = other[700]
    other[700] = (key, Record(1, b"older", 3).encode())
    remote = tree_of(other)
    found, compared = differing_segments(tree_of(some), remote.hashes)
    segment = segment_of(key)
    assert found == {segment: remote.hashes(DEPTH, [segment])[0]}
    assert compared == 1 + FANOUT * DEPTH  # the root, then one node's children per level


def test_a_key_one_side_lacks_is_found() -> None:
    some = entries(100)
    found, _ = differing_segments(tree_of(some), tree_of(some[1:]).hashes)
    assert list(found) == [segment_of(some[0][0])]


def test_keys_spread_over_the_segments() -> None:
    counts = [0] * SEGMENTS
    for i in range(SEGMENTS * 20):
        counts[segment_of(b"%d" % i)] += 1
    assert max(counts) < 60 and min(counts) > 0  # 20 each on average


def test_levels_and_nodes_out_of_the_tree_are_refused() -> None:
    tree = tree_of(entries(3))
    with pytest.raises(ValueError):
        tree.hashes(DEPTH + 1, [0])
    with pytest.raises(ValueError):
        tree.hashes(1, [FANOUT])
    with pytest.raises(ValueError, match="2 hashes for 1 nodes"):
        differing_segments(tree, lambda level, indices: [b"x", b"y"])

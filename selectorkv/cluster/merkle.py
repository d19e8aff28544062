"""A hash tree (Merkle tree) of a node's records, for anti-entropy: two
nodes that compare their trees top-down find the few parts of the key
space where they differ without sending what they agree on.

The key space is cut into ``SEGMENTS`` segments by a hash of the key, not
by key order: whatever the keys look like, they spread evenly, and a
segment's size does not depend on where the keys cluster. A leaf is the
XOR of the 64-bit digests of its segment's entries (key and record as
stored), so a scan in key order builds it whatever order the segments
come in, and an entry's digest can be taken out as it was put in. An inner
node is the BLAKE2b digest of its ``FANOUT`` children's hashes. The tree
of ``SEGMENTS`` = 16**3 = 4,096 leaves is 4,369 hashes of 8 bytes: its
memory is the tree's, whatever the data's size (Riak's active
anti-entropy keeps a tree of the same shape; Cassandra's repair builds
one per range).

The comparison is a walk from the root: equal roots end it (the common
case: one hash each way); otherwise only the children of the nodes that
differ are compared, level by level, down to the leaves that differ. The
records of those segments are then exchanged, each side keeping the newer
(records.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

FANOUT = 16
DEPTH = 3  # levels below the root
SEGMENTS: int = FANOUT**DEPTH
_SEGMENT_BITS = SEGMENTS.bit_length() - 1
HASH_BYTES = 8


def segment_of(key: bytes) -> int:
    """The segment of ``key``: the top bits of a digest of it."""
    digest = hashlib.blake2b(key, digest_size=4, person=b"segment").digest()
    return int.from_bytes(digest, "big") >> (32 - _SEGMENT_BITS)


def entry_digest(key: bytes, raw: bytes) -> int:
    """The digest of one entry (its key's length first: no two entries
    share the bytes hashed)."""
    hasher = hashlib.blake2b(digest_size=HASH_BYTES, person=b"entry")
    hasher.update(len(key).to_bytes(4, "big"))
    hasher.update(key)
    hasher.update(raw)
    return int.from_bytes(hasher.digest(), "big")


class HashTree:
    """The hash tree of a set of entries; ``add`` them, then read
    ``hashes``. Level 0 is the root, level ``DEPTH`` the leaves."""

    def __init__(self) -> None:
        self._leaves = [0] * SEGMENTS
        self._levels: list[list[bytes]] | None = None
        self.entries = 0

    def add(self, key: bytes, raw: bytes) -> None:
        self._leaves[segment_of(key)] ^= entry_digest(key, raw)
        self._levels = None
        self.entries += 1

    def hashes(self, level: int, indices: Sequence[int]) -> list[bytes]:
        """The hashes of the nodes ``indices`` of ``level``."""
        if not 0 <= level <= DEPTH:
            raise ValueError(f"level must be 0..{DEPTH}, not {level}")
        nodes = self._built()[level]
        if any(not 0 <= index < len(nodes) for index in indices):
            raise ValueError(f"a node index out of 0..{len(nodes) - 1} on level {level}")
        return [nodes[index] for index in indices]

    def _built(self) -> list[list[bytes]]:
        if self._levels is None:
            level = [leaf.to_bytes(HASH_BYTES, "big") for leaf in self._leaves]
            levels = [level]
            while len(level) > 1:
                level = [
                    hashlib.blake2b(
                        b"".join(level[i : i + FANOUT]), digest_size=HASH_BYTES
                    ).digest()
                    for i in range(0, len(level), FANOUT)
                ]
                levels.append(level)
            self._levels = levels[::-1]
        return self._levels


# Another node's hashes of the nodes ``indices`` of ``level`` of its tree.
RemoteHashes = Callable[[int, list[int]], list[bytes]]


def differing_segments(mine: HashTree, theirs: RemoteHashes) -> tuple[dict[int, bytes], int]:
    """The segments where ``mine`` and the other node's tree differ, found
    top-down, with the other node's hash of each; and how many hashes were
    compared (what the walk cost)."""
    wanted = [0]
    compared = 0
    for level in range(DEPTH + 1):
        if not wanted:
            break
        local = mine.hashes(level, wanted)
        remote = theirs(level, wanted)
        if len(remote) != len(wanted):
            raise ValueError(f"{len(remote)} hashes for {len(wanted)} nodes")
        compared += len(wanted)
        differ = {index: b for index, a, b in zip(wanted, local, remote, strict=True) if a != b}
        if level == DEPTH:
            return differ, compared
        wanted = [
            child for index in differ for child in range(index * FANOUT, (index + 1) * FANOUT)
        ]
    return {}, compared

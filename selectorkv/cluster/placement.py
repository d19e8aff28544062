"""Placement: which nodes of a cluster hold a key.

Rendezvous (highest random weight) hashing: every node scores every key
with BLAKE2b of the node's URL and the key, and the replicas are the
``count`` best: the same on every node and after every restart, a prefix
(``from=2`` are the first two of ``from=3``), and removing a node moves
only its keys. ``Topology`` is the static node list and this node's place
in it; its ``cluster_id`` (a hash of the sorted list) lets nodes refuse a
peer that was given another list. Host names are resolved once, at start.

docs/cluster.md, "Topology" and "Placement", gives the reasons.
"""

from __future__ import annotations

import functools
import hashlib
import json
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit


class TopologyError(ValueError):
    """The cluster's node list or this node's place in it is unusable."""


def normalise(url: str) -> str:
    """``http://host:port`` with a lower-case host and no trailing slash;
    TopologyError for anything else (another scheme, a path, no port)."""
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise TopologyError(f"{url!r}: {exc}") from None
    if parts.scheme != "http" or not parts.hostname or port is None:
        raise TopologyError(f"{url!r}: a node is http://host:port")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise TopologyError(f"{url!r}: a node URL has no path, query or user")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"  # IPv6
    return f"http://{host}:{port}"


def node_hasher(node: str) -> hashlib.blake2b:
    """BLAKE2b (64 bits) fed with the node's part of every score: its URL,
    length-prefixed so that no (node, key) pair can collide with another by
    moving bytes from one to the other. A key's score is a copy of it fed
    the key: the node's part is hashed once, not once per key."""
    node_bytes = node.encode()
    return hashlib.blake2b(b"%d:" % len(node_bytes) + node_bytes, digest_size=8)


@dataclass(frozen=True)
class Topology:
    """Every node of the cluster, in the given order, and which one we are."""

    nodes: tuple[str, ...]
    self_url: str

    @classmethod
    def parse(cls, cluster: str, self_url: str) -> Topology:
        """From ``--cluster URL,URL,...`` and ``--self URL``."""
        nodes = tuple(normalise(url) for url in cluster.split(",") if url.strip())
        if not nodes:
            raise TopologyError("--cluster lists no node")
        duplicates = sorted({node for node in nodes if nodes.count(node) > 1})
        if duplicates:
            raise TopologyError(f"--cluster lists {', '.join(duplicates)} more than once")
        me = normalise(self_url)
        if me not in nodes:
            raise TopologyError(f"--self {me} is not in --cluster ({', '.join(nodes)})")
        return cls(nodes, me)

    @functools.cached_property
    def index(self) -> int:
        """This node's place in the sorted node list: the same on every
        node, whatever order each was given the list in."""
        return sorted(self.nodes).index(self.self_url)

    @functools.cached_property
    def cluster_id(self) -> str:
        """A name for the sorted node list: nodes that agree on it place
        every key alike."""
        joined = "\n".join(sorted(self.nodes)).encode()
        return hashlib.blake2b(joined, digest_size=8).hexdigest()

    @functools.cached_property
    def _hashers(self) -> tuple[tuple[str, hashlib.blake2b], ...]:
        return tuple((node, node_hasher(node)) for node in self.nodes)

    def describe(self) -> bytes:
        """What a node tells a client at ``GET /v0/cluster`` (JSON): the
        sorted node list, its cluster id, and which node this is."""
        about = {"cluster_id": self.cluster_id, "nodes": sorted(self.nodes), "self": self.self_url}
        return json.dumps(about).encode()

    def replicas(self, key: bytes, count: int) -> list[str]:
        """The ``count`` nodes that hold ``key``, best first: the highest
        scores, a score being the 8 bytes of BLAKE2b over the node and the
        key (compared as bytes: the same order as the big-endian number)."""
        if not 1 <= count <= len(self.nodes):
            raise ValueError(f"count must be 1..{len(self.nodes)}, not {count}")
        scored = []
        for node, hasher in self._hashers:
            digest = hasher.copy()
            digest.update(key)
            scored.append((digest.digest(), node))
        if count == 1:
            return [max(scored)[1]]
        scored.sort(reverse=True)
        return [node for _, node in scored[:count]]


Address = tuple[str, int]


def host_and_port(url: str) -> tuple[str, int]:
    """The host (an IPv6 address without its brackets) and the port of a
    normalised node URL, not looked up."""
    host, _, port = url.removeprefix("http://").rpartition(":")
    return host.strip("[]"), int(port)


def resolve(url: str) -> Address:
    """(IP address, port) of a normalised node URL, looked up now;
    TopologyError naming the host when it does not resolve."""
    host, port = host_and_port(url)
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise TopologyError(f"--cluster: {host!r} does not resolve ({exc})") from None
    address = found[0][4]
    return str(address[0]), int(address[1])

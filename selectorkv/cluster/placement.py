"""Placement: which nodes of a cluster hold a key.

# design: rendezvous hashing

Every node scores every key: a stable 64-bit hash of the node's URL and the
key. The replicas of a key are the ``count`` nodes with the highest scores
(highest random weight, Thaler and Ravishankar 1996). Three properties
follow, and the cluster relies on each:

- Deterministic: the hash is BLAKE2b of bytes, not Python's ``hash()``
  (which is salted per process), so every node, in every process and after
  every restart, computes the same replicas from the same list of URLs.
- A prefix: the replicas for ``from=2`` are the first two of those for
  ``from=3``. A read with a smaller ``from`` asks nodes that a larger write
  included.
- Even and stable: each node is first for about 1/N of the keys, and
  removing a node moves only the keys it held (each to the node that scored
  next), unlike ``hash(key) % N``, which moves nearly all of them.

Scoring is N hashes per key, where a ring would be a binary search; at the
handful of nodes a course cluster has, N hashes of a short key cost a few
microseconds, and there is no ring to build, balance or keep in step.

# design: topology

The cluster is a static list of node URLs (``http://host:port``), the same
on every node, and which of them this node is. ``Topology.parse`` refuses
what would make nodes disagree or fail later: a malformed URL, a duplicate,
a self that is not in the list.

Nodes that were given different lists would place keys differently and
read each other's replicas in the wrong places, silently. So the sorted list
has a name, ``cluster_id`` (a hash of it), which every internal request
carries and every node compares with its own (api.py): a node started with
another list, or with ``localhost`` where the others say ``127.0.0.1``, is
refused by the others and says so in their logs and metrics. The order of
the list does not matter: placement scores URLs, and a node's ``index``
(the low bits of its versions, clock.py) is its place in the sorted list.

Host names are resolved once, at start (``resolve``): a name that does not
resolve is a start error, and no peer call ever waits for a name lookup on
a SelectorThread.
"""

from __future__ import annotations

import functools
import hashlib
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


def score(node: bytes, key: bytes) -> int:
    """The node's weight for the key: 64 bits of BLAKE2b over both. The
    node URL is length-prefixed so that no (node, key) pair can collide
    with another by moving bytes from one to the other."""
    digest = hashlib.blake2b(b"%d:" % len(node) + node + key, digest_size=8).digest()
    return int.from_bytes(digest, "big")


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

    def replicas(self, key: bytes, count: int) -> list[str]:
        """The ``count`` nodes that hold ``key``, best first."""
        if not 1 <= count <= len(self.nodes):
            raise ValueError(f"count must be 1..{len(self.nodes)}, not {count}")
        ranked = sorted(self.nodes, key=lambda node: score(node.encode(), key), reverse=True)
        return ranked[:count]


Address = tuple[str, int]


def resolve(url: str) -> Address:
    """(IP address, port) of a normalised node URL, looked up now;
    TopologyError naming the host when it does not resolve."""
    host, _, port = url.removeprefix("http://").rpartition(":")
    host = host.strip("[]")
    try:
        found = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except OSError as exc:
        raise TopologyError(f"--cluster: {host!r} does not resolve ({exc})") from None
    address = found[0][4]
    return str(address[0]), int(address[1])

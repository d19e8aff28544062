"""A Python client for selectorkv that knows where keys live: standard
library only.

    from selectorkv.client import Client

    nodes = ["http://127.0.0.1:8080", "http://127.0.0.1:8081", "http://127.0.0.1:8082"]
    with Client(nodes) as kv:
        kv.put(b"key", b"value")               # the cluster's default quorum
        kv.get(b"key")                         # b"value"; None when there is none
        kv.put("key", b"other", ack=1, from_=1)
        kv.delete(b"key")
        for key, value in kv.range(b"a", b"b"):
            ...

# design

**Placement-aware.** The client computes each key's replicas with the
nodes' own placement (``cluster/placement.py``, rendezvous hashing over the
same node list) and sends the request to the first of them, which then
coordinates it with no extra hop: a request that enters at a node that
holds no replica of its key costs that node a whole coordination and the
replica a peer call (docs/cluster.md, "What a hop costs"). If that node
cannot be reached (refused, reset, timed out) or sheds the request (503),
the request goes to the next replica, then to the other nodes: any node
coordinates any key.

**It must agree with the nodes.** Placement depends on the exact node
list, so the first time the client talks to a node it asks it
``GET /v0/cluster`` and compares the node's cluster id (a hash of the
sorted list) with its own: a client given another list, or ``localhost``
where the nodes say ``127.0.0.1``, raises ``TopologyMismatch`` instead of
sending keys to the wrong nodes. A single node (no ``--cluster``) has no
``/v0/cluster``; a client with a list of one accepts it.

**What a failure means.** 504 (``NotEnoughReplicas``) is the cluster's "not
confirmed": the write may still have landed on some replicas (a retry with
the same value is safe). A write retried on the next node after a
connection failed mid-request may be stored twice, as two versions of the
same value. Other 4xx answers raise ``RequestFailed`` with the node's
reason. The client keeps one keep-alive connection per node and is not
thread-safe: give each thread its own.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator, Sequence
from types import TracebackType
from urllib.parse import quote

from selectorkv.cluster.placement import Topology, TopologyError, host_and_port, normalise

DEFAULT_TIMEOUT = 10.0  # seconds per request; a node's own request timeout is 10 s
MAX_RANGE_LINE = 64  # bytes of a chunk-size line in a range's body


class ClusterError(Exception):
    """The cluster could not do what was asked."""


class TopologyMismatch(ClusterError):
    """A node has another node list than this client: keys would be placed
    differently."""


class NoNodeAvailable(ClusterError):
    """No node could be reached (or every one shed the request)."""


class RequestFailed(ClusterError):
    """A node refused the request: ``status`` and its reason (``body``)."""

    def __init__(self, node: str, status: int, body: bytes) -> None:
        reason = body.decode(errors="replace").strip()
        super().__init__(f"{node} answered {status}{': ' + reason if reason else ''}")
        self.node = node
        self.status = status
        self.body = body


class NotEnoughReplicas(RequestFailed):
    """504: fewer than ``ack`` replicas confirmed in time. Not "not
    written": some replicas may hold the write."""


def _key_bytes(key: bytes | str) -> bytes:
    data = key.encode() if isinstance(key, str) else bytes(key)
    if not data:
        raise ValueError("a key is not empty")
    return data


def _counts(ack: int | None, from_: int | None, nodes: int) -> str:
    """The query's ``&ack=A&from=F``, checked here so that a mistake is a
    ValueError, not a round trip."""
    if ack is None and from_ is None:
        return ""
    if ack is None or from_ is None:
        raise ValueError("give ack and from_ together, or neither")
    if not 1 <= ack <= from_ <= nodes:
        raise ValueError(f"need 1 <= ack <= from_ <= {nodes} (the nodes), not {ack}/{from_}")
    return f"&ack={ack}&from={from_}"


class Client:
    """Requests to a selectorkv cluster, each sent to a replica of its key.

    ``nodes``: the node URLs, exactly as the nodes' ``--cluster`` lists them
    (any order). ``timeout``: seconds a node may take to answer one request
    before the next node is tried."""

    def __init__(self, nodes: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> None:
        if isinstance(nodes, str):
            nodes = nodes.split(",")
        try:
            normalised = [normalise(url) for url in nodes]
            self.topology = Topology.parse(",".join(normalised), normalised[0] if nodes else "")
        except (TopologyError, IndexError) as exc:
            raise ValueError(f"a client needs the nodes' URLs: {exc}") from None
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.timeout = timeout
        self._connections: dict[str, http.client.HTTPConnection] = {}
        self._checked: set[str] = set()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        for conn in self._connections.values():
            conn.close()
        self._connections.clear()

    def verify(self) -> None:
        """Ask every node now whether it places keys as this client does:
        TopologyMismatch if one does not, NoNodeAvailable naming those that
        cannot be reached (else each node is asked on first use)."""
        unreachable = [node for node in self.topology.nodes if self._connection(node) is None]
        if unreachable:
            raise NoNodeAvailable(f"cannot reach {', '.join(unreachable)}")

    def replicas(self, key: bytes | str, count: int | None = None) -> list[str]:
        """The nodes that hold ``key`` with ``from`` = ``count`` (default:
        every node), in the nodes' own order: the first is where requests go."""
        nodes = len(self.topology.nodes)
        return self.topology.replicas(_key_bytes(key), count or nodes)

    # The API

    def get(
        self, key: bytes | str, ack: int | None = None, from_: int | None = None
    ) -> bytes | None:
        """The value of ``key``, or None when it has none (never written, or
        deleted)."""
        status, body, _ = self._entity("GET", key, None, ack, from_, ok=(200, 404))
        return body if status == 200 else None

    def put(
        self, key: bytes | str, value: bytes, ack: int | None = None, from_: int | None = None
    ) -> None:
        """Store ``value`` under ``key`` once ``ack`` of ``from_`` replicas have."""
        self._entity("PUT", key, bytes(value), ack, from_, ok=(201,))

    def delete(self, key: bytes | str, ack: int | None = None, from_: int | None = None) -> None:
        self._entity("DELETE", key, None, ack, from_, ok=(202,))

    def range(
        self, start: bytes | str, end: bytes | str | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """The live entries with ``start`` <= key < ``end`` (no end: to the
        last key), in key order: the cluster-wide range of the first node
        that can be reached, which merges every node's records, freshest
        first (docs/cluster.md, "The cluster-wide range"). RequestFailed
        (504) when a node is down: the range could not be complete."""
        query = "start=" + quote(_key_bytes(start), safe="")
        if end is not None:
            query += "&end=" + quote(_key_bytes(end), safe="")
        unreachable = []
        for node in sorted(self.topology.nodes):
            try:
                entries = _range_of(node, query, self.timeout)
                first = next(entries, None)
            except NoNodeAvailable:
                unreachable.append(node)
                continue
            if first is not None:
                yield first
                yield from entries
            return
        raise NoNodeAvailable(f"range: no node could be reached ({', '.join(unreachable)})")

    # Sending

    def _entity(
        self,
        method: str,
        key: bytes | str,
        body: bytes | None,
        ack: int | None,
        from_: int | None,
        ok: tuple[int, ...],
    ) -> tuple[int, bytes, str]:
        raw = _key_bytes(key)
        target = (
            "/v0/entity?id=" + quote(raw, safe="") + _counts(ack, from_, len(self.topology.nodes))
        )
        tried: list[str] = []
        for node in self.topology.replicas(raw, len(self.topology.nodes)):
            answer = self._send(node, method, target, body)
            if answer is None or answer[0] == 503:
                tried.append(node if answer is None else f"{node} (503)")
                continue
            status, reply = answer
            if status in ok:
                return status, reply, node
            if status == 504:
                raise NotEnoughReplicas(node, status, reply)
            raise RequestFailed(node, status, reply)
        raise NoNodeAvailable(f"{method} {target}: no node answered (tried {', '.join(tried)})")

    def _send(
        self, node: str, method: str, target: str, body: bytes | None
    ) -> tuple[int, bytes] | None:
        """One request to ``node`` on its kept-alive connection: (status,
        body), or None when the node could not be reached. A connection the
        node closed while it sat idle is opened again once."""
        for attempt in range(2):
            conn = self._connection(node)
            if conn is None:
                return None
            try:
                conn.request(method, target, body=body)
                reply = conn.getresponse()
                answer = reply.status, reply.read()
            except (OSError, http.client.HTTPException) as exc:
                self._drop(node)
                idle_closed = isinstance(exc, (http.client.RemoteDisconnected, BrokenPipeError))
                if attempt == 0 and idle_closed:
                    continue
                return None
            if reply.will_close:
                self._drop(node)
            return answer
        return None

    def _connection(self, node: str) -> http.client.HTTPConnection | None:
        conn = self._connections.get(node)
        if conn is not None:
            return conn
        conn = http.client.HTTPConnection(*host_and_port(node), timeout=self.timeout)
        self._connections[node] = conn
        if node not in self._checked:
            try:
                self._check(node, conn)
            except (OSError, http.client.HTTPException):
                self._drop(node)
                return None
            except TopologyMismatch:
                self._drop(node)
                raise
            self._checked.add(node)
        return conn

    def _check(self, node: str, conn: http.client.HTTPConnection) -> None:
        """Does ``node`` place keys as this client does? TopologyMismatch if not."""
        conn.request("GET", "/v0/cluster")
        reply = conn.getresponse()
        body = reply.read()
        if reply.status in (400, 404) and len(self.topology.nodes) == 1:
            return  # a single node: nothing to place
        mine = self.topology.cluster_id
        try:
            about = json.loads(body) if reply.status == 200 else {}
        except ValueError:
            about = {}
        theirs = about.get("cluster_id") if isinstance(about, dict) else None
        if theirs != mine:
            listed = ", ".join(about.get("nodes", [])) if isinstance(about, dict) else ""
            raise TopologyMismatch(
                f"{node} is not a node of this client's cluster: its cluster id is {theirs} "
                f"(nodes {listed or 'unknown'}), this client's {mine} "
                f"(nodes {', '.join(sorted(self.topology.nodes))}); give the client the "
                "nodes' own --cluster list"
            )

    def _drop(self, node: str) -> None:
        conn = self._connections.pop(node, None)
        if conn is not None:
            conn.close()


def _range_of(node: str, query: str, timeout: float) -> Iterator[tuple[bytes, bytes]]:
    """The entries of one node's ``/v0/entities``, as they stream in: each
    chunk of the body is one ``<key>\\n<value>`` (a node's own format)."""
    host, port = host_and_port(node)
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise NoNodeAvailable(f"range: {node} cannot be reached ({exc})") from None
    with sock, sock.makefile("rb") as stream:
        sock.sendall(f"GET /v0/entities?{query} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        status_line = stream.readline(MAX_RANGE_LINE * 4)
        headers = []
        while (line := stream.readline(MAX_RANGE_LINE * 64)) not in (b"\r\n", b"\n", b""):
            headers.append(line.lower())
        parts = status_line.split(b" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        if status != 200 or not any(h.startswith(b"transfer-encoding: chunked") for h in headers):
            raise RequestFailed(node, status, stream.read(4096) if status else b"no answer")
        while True:
            size_line = stream.readline(MAX_RANGE_LINE).split(b";")[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise ClusterError(f"range: {node} sent a malformed chunk") from None
            if size == 0:
                return
            chunk = stream.read(size)
            if len(chunk) != size or stream.read(2) != b"\r\n":
                raise ClusterError(f"range: {node} closed the stream mid-entry")
            key, sep, value = chunk.partition(b"\n")
            if not sep:
                raise ClusterError(f"range: {node} sent an entry without its value")
            yield key, value

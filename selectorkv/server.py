"""The server: wires the acceptor, the SelectorThreads, the executor and the
storage together, and takes them apart again in the right order.

    clients --TCP--> Acceptor --round-robin--> SelectorThread-1..N
                                               |  sync:  execute inline
                                               |  async: bounded queue
                                               v
                                          PayloadThread-1..M --> RocksDB

``build_executor`` composes the executor from the config, ``join_cluster``
a cluster node's parts. Stopping is the start-up in reverse: the acceptor,
then the SelectorThreads (idle connections at once, busy ones after their
response, the rest cut at the end of the grace period), the PayloadThreads,
RocksDB. The Python threads are pinned to one CPU and run as SCHED_BATCH.
docs/architecture.md, "Closing" and "One CPU for the Python threads", gives
the reasons and the figures.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import resource
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from selectorkv.cluster.antientropy import AntiEntropy
from selectorkv.cluster.clock import HybridClock, Reservation
from selectorkv.cluster.hints import HintedHandoff, HintLimits, HintStore
from selectorkv.cluster.placement import resolve
from selectorkv.cluster.ranges import ClusterRange
from selectorkv.cluster.replication import (
    BlockingCoordinator,
    Cluster,
    Coordinator,
    claim_directory,
)
from selectorkv.config import ServerConfig
from selectorkv.execution.commit import GroupCommit, RoundCommit
from selectorkv.execution.inline import InlineExecutor
from selectorkv.execution.pool import PayloadPool
from selectorkv.http import parser
from selectorkv.http.connection import Allowance, Connection, Limits
from selectorkv.http.exchange import Executor
from selectorkv.kv.api import (
    INTERNAL_HEAD_ALLOWANCE,
    INTERNAL_PREFIX,
    RECORD_OVERHEAD,
    Api,
    ReplicaApi,
    internal_target,
)
from selectorkv.kv.records import ReplicaStore, check_format
from selectorkv.kv.storage import MAX_OPEN_FILES, RocksStorage, Storage, StorageError
from selectorkv.metrics import exposition
from selectorkv.reactor.acceptor import Acceptor, ConnectionSlots
from selectorkv.reactor.selector_thread import SelectorThread
from selectorkv.reactor.stalls import StallRecorder
from selectorkv.reactor.stats import StatsThread

log = logging.getLogger("selectorkv.server")

BACKLOG = 1024


class Server:
    """A selectorkv server over ``storage``; ``start`` it, later ``stop`` it."""

    def __init__(
        self, config: ServerConfig, storage: Storage, executor: Executor | None = None
    ) -> None:
        """``executor`` replaces the mode's (sync: inline, async: the pool);
        tests inject one whose answers come later."""
        self.config = config
        self._storage = storage
        # --record-stalls: garbage collections and long rounds (reactor/stalls.py)
        self._stalls = StallRecorder() if config.record_stalls else None
        stall_record = self._stalls.as_json if self._stalls is not None else None
        check_format(config.data, storage, cluster=config.topology is not None)
        node = join_cluster(config, storage) if config.topology is not None else None
        self._hints = node.hints if node is not None else None
        self._handoff = node.handoff if node is not None else None
        self._node = node
        api = (
            ReplicaApi(
                storage,
                node.replica,
                config.cluster_token.encode(),
                node.cluster.topology.cluster_id.encode(),
                self.metrics,
                node.cluster.topology.describe(),
                {**node.repair.routes(), **node.ranges.routes()},
                stall_record,
            )
            if node is not None
            else Api(storage, self.metrics, stall_record)
        )
        executor, self._pool = build_executor(config, storage, api, node, executor)
        limits = Limits(
            max_body=config.max_body,
            max_header_size=config.max_header_size,
            header_timeout=config.header_timeout,
            keepalive_timeout=config.keepalive_timeout,
            request_timeout=config.answer_timeout,
            # A node's internal request carries a client's value and key
            # with a little more around them (kv/api.py): let it through.
            wider=Allowance(INTERNAL_PREFIX, INTERNAL_HEAD_ALLOWANCE, RECORD_OVERHEAD),
        )
        make_connection = functools.partial(Connection, limits=limits, executor=executor)
        self.max_connections = connection_cap(config.max_connections)
        self._slots = ConnectionSlots(self.max_connections)
        self._reactors = [
            SelectorThread(i, make_connection) for i in range(1, config.selectors + 1)
        ]
        for reactor in self._reactors:
            reactor.stalls = self._stalls
        self._acceptor: Acceptor | None = None
        self._cpu = choose_cpu(config.cpu)
        self._stopped = False
        self.address: tuple[str, int] = (config.host, config.port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"

    def start(self) -> None:
        """Bind, start every thread, and return once clients can connect."""
        listener = socket.create_server(
            (self.config.host, self.config.port), backlog=BACKLOG, reuse_port=False
        )
        self.address = listener.getsockname()[:2]
        if self._stalls is not None:
            self._stalls.install()
        if self._pool is not None:
            self._pool.start()
        for reactor in self._reactors:
            reactor.start()
        if self._handoff is not None:
            self._handoff.start(self._reactors[0])
        if self._node is not None and self.config.repair_interval > 0:
            self._node.repair.run_every(self.config.repair_interval)
        self._acceptor = Acceptor(listener, self._reactors, self._slots)
        self._acceptor.start()
        cpu = self._cpu
        if cpu is not None:
            place_threads(cpu, [self._acceptor, *self._reactors, *self._payload_threads()])
        if self.config.rocksdb_threads == "idle":
            idle_rocksdb_threads()
        config = self.config
        log.info(
            "listening on %s mode=%s selectors=%d workers=%d queue=%d commit-batch=%d "
            "max-connections=%d "
            "cpu=%s rocksdb-threads=%s parser=%s/%s data=%s%s%s",
            self.url,
            config.mode,
            config.selectors,
            config.workers if config.mode == "async" else 0,
            config.queue_size,
            config.commit_batch,
            self.max_connections,
            "any" if cpu is None else cpu,
            config.rocksdb_threads,
            parser.NAME,
            parser.VERSION,
            config.data,
            " record-stalls=on" if config.record_stalls else "",
            f" cluster={len(config.cluster.split(','))}-nodes self={config.self_node}"
            f" peer-calls={config.peer_calls} peer-timeout={config.peer_timeout:g}s"
            f" request-timeout={config.answer_timeout:g}s"
            if config.cluster
            else "",
        )
        warning = exposure_warning(config.host)
        if warning:
            log.warning("%s", warning)

    def _payload_threads(self) -> list[StatsThread]:
        return [] if self._pool is None else self._pool.threads

    def metrics(self) -> bytes:
        """GET /metrics: every thread's counters, summed now, and the gauges."""
        pool = self._pool
        depth = pool.depth() if pool is not None else 0
        gauges: dict[str, tuple[str, float]] = {
            "queue_depth": ("Requests waiting for a PayloadThread.", depth),
            "in_flight": (
                "Requests handed to PayloadThreads and not yet answered.",
                depth + (pool.busy() if pool is not None else 0),
            ),
            "connections": (
                "Open client connections.",
                sum(reactor.connection_count for reactor in self._reactors),
            ),
        }
        counters: dict[str, tuple[str, float]] = {
            "connections_accepted": (
                "Client connections accepted and handed to a SelectorThread.",
                self._acceptor.accepted if self._acceptor is not None else 0,
            ),
        }
        # RocksStorage counts its log syncs when --fsync is on (a wrapped or
        # test storage may not): the figure that shows group commit at work.
        syncs = self._storage.wal_syncs()
        if syncs is not None:
            counters["wal_syncs"] = ("Syncs of RocksDB's write-ahead log (with --fsync).", syncs)
        families = self._hints.metrics() if self._hints is not None else []
        if self._node is not None:
            families += self._node.repair.metrics() + self._node.ranges.metrics()
        return exposition(
            list(self._reactors), self._payload_threads(), gauges, counters, families=families
        )

    def stop(self) -> bool:
        """Graceful stop (the module's docstring); returns when all is closed,
        True if the database closed cleanly. A second call does nothing."""
        if self._stopped:
            return True
        self._stopped = True
        started = time.monotonic()
        if self._acceptor is not None:
            self._acceptor.stop()
        deadline = started + self.config.grace
        for reactor in self._reactors:
            reactor.shut_down(deadline)
        for reactor in self._reactors:
            if reactor.is_alive():
                reactor.join()
        if self._pool is not None:
            self._pool.stop()
        for reactor in self._reactors:
            reactor.close_cut_sockets()
        if self._stalls is not None:
            self._stalls.uninstall()
        if self._node is not None:  # their scans and merges hold storage cursors
            self._node.repair.stop()
            self._node.ranges.stop()
        if self._hints is not None:
            self._hints.close()  # after every thread that keeps hints is gone
        clean = True
        try:
            self._storage.close()
        except StorageError as exc:
            # Writes answered 201 are in the write-ahead log: a restart
            # replays it. The exit status says the close failed.
            log.error("the database did not close cleanly: %s", exc)
            clean = False
        log.info("stopped in %.2fs", time.monotonic() - started)
        return clean


@dataclass
class ClusterNode:
    """What a cluster node adds to a server: its view of the cluster, its
    storage seen as records, and the hints it keeps for other nodes."""

    cluster: Cluster
    replica: ReplicaStore
    repair: AntiEntropy
    ranges: ClusterRange
    hints: HintStore | None
    handoff: HintedHandoff | None


def join_cluster(config: ServerConfig, storage: Storage) -> ClusterNode:
    """Claim the data directory for this node and build its cluster parts."""
    topology = config.topology
    assert topology is not None
    claim_directory(config.data, topology)
    cluster = Cluster(
        topology=topology,
        addresses={node: resolve(node) for node in topology.nodes},
        token=config.cluster_token.encode(),
        clock=HybridClock(topology.index, Reservation(config.data, config.fsync), skewed_clock()),
        peer_timeout=config.peer_timeout,
        max_body=config.max_body,
        source=source_address(config.host),
    )
    replica = ReplicaStore(storage, cluster.clock.observe, cluster.clock.ceiling())
    repair = AntiEntropy(replica, cluster, config.repair_share, config.tombstone_grace)
    ranges = ClusterRange(replica, cluster)
    if not config.hinted_handoff:
        return ClusterNode(cluster, replica, repair, ranges, None, None)
    hints = open_hints(config)
    handoff = HintedHandoff(
        hints, cluster.peer_pool, cluster.addresses, cluster.headers, internal_target
    )
    cluster.hint = handoff.keep
    return ClusterNode(cluster, replica, repair, ranges, hints, handoff)


def build_executor(
    config: ServerConfig,
    storage: Storage,
    api: Api,
    node: ClusterNode | None,
    injected: Executor | None = None,
) -> tuple[Executor, PayloadPool | None]:
    """The executor the config asks for, and the PayloadThread pool if it
    has one: inline (sync) or the pool (async), with group commit when
    --commit-batch is over 1; on a cluster node, behind a Coordinator (peer
    calls on the reactors) or running a BlockingCoordinator's handle
    (blocking peer calls). ``injected`` replaces the mode's executor: tests
    give one whose answers come later."""
    handle = api.handle
    blocking = node is not None and config.peer_calls == "blocking"
    if node is not None and blocking:
        handle = BlockingCoordinator(handle, node.cluster, node.ranges.answer).handle
    group = None
    if config.commit_batch > 1:
        group = GroupCommit(storage, api.write_of, config.commit_batch)
    pool = None
    executor = injected
    if executor is None and config.mode == "async":
        # A PayloadThread runs the batch it takes in order. With blocking
        # peer calls one request waiting for a peer would hold up every
        # request taken with it while other threads sit idle, so then
        # each PayloadThread takes one request at a time.
        pool = PayloadPool(handle, config.workers, config.queue_size, None if blocking else group)
        executor = pool
    elif executor is None:
        executor = InlineExecutor(handle, RoundCommit(group) if group is not None else None)
    if node is not None and not blocking:
        assert isinstance(api, ReplicaApi)  # a cluster node's
        executor = Coordinator(executor, api.answer, node.cluster, node.ranges.start)
    return executor, pool


# An experiment's knob, not a setting: the fault runs (docs/cluster.md,
# "Clocks") start a node whose wall clock is this many seconds off.
CLOCK_SKEW_VARIABLE = "SELECTORKV_CLOCK_SKEW"


# The hints a cluster node keeps for others: a RocksDB of their own in the
# data directory (hints.py).
HINTS_DIRECTORY = "hints"


def open_hints(config: ServerConfig) -> HintStore:
    """The node's hint store; ValueError when it cannot be opened."""
    limits = HintLimits(config.hint_ttl, config.hints_max, config.hints_max_bytes, config.hint_rate)
    try:
        storage = RocksStorage(os.path.join(config.data, HINTS_DIRECTORY), fsync=config.fsync)
    except StorageError as exc:
        raise ValueError(f"cannot open the hint store: {exc}") from exc
    return HintStore(storage, limits)


def source_address(host: str) -> str | None:
    """The address a node sends its peer calls from: the one it listens on
    when that is one IP address (127.0.0.2: a partition can then cut the
    links of this node alone), else the kernel's choice."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None  # a name: not looked up again here
    return None if address.is_unspecified else str(address)


def skewed_clock() -> Callable[[], int]:
    """The wall clock in nanoseconds, off by $SELECTORKV_CLOCK_SKEW seconds."""
    skew = round(float(os.environ.get(CLOCK_SKEW_VARIABLE) or 0) * 1e9)
    if not skew:
        return time.time_ns
    log.warning("the clock runs %+.3f s off ($%s)", skew / 1e9, CLOCK_SKEW_VARIABLE)
    return lambda: time.time_ns() + skew


# Descriptors kept for everything but client connections: RocksDB's files
# (storage.MAX_OPEN_FILES), the listening socket, wakeup channels, logs.
RESERVED_DESCRIPTORS = MAX_OPEN_FILES + 64


def connection_cap(wanted: int) -> int:
    """``--max-connections``, lowered if the open-file limit could not hold
    that many sockets beside the reserved descriptors."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or wanted + RESERVED_DESCRIPTORS <= soft:
        return wanted
    cap = max(1, soft - RESERVED_DESCRIPTORS)
    log.warning(
        "--max-connections %d lowered to %d: the open-file limit is %d (ulimit -n)",
        wanted,
        cap,
        soft,
    )
    return cap


def exposure_warning(host: str) -> str | None:
    """What to warn about when binding ``host``: the API has no
    authentication, so listening beyond loopback is a decision to flag."""
    if host in ("0.0.0.0", "::", ""):
        where = host or "any address"
        return f"bound to all interfaces ({where}): anyone who can reach this host can use the API"
    return None


def choose_cpu(setting: str) -> int | None:
    """The CPU for ``--cpu``: a number as given, None for 'none', and for
    'auto' the highest-numbered CPU this process may use (CPU 0 is where
    many systems handle interrupts)."""
    if setting == "none" or not hasattr(os, "sched_setaffinity"):
        return None
    allowed = os.sched_getaffinity(0)
    if setting == "auto":
        return max(allowed)
    if int(setting) not in allowed:
        raise ValueError(f"--cpu {setting}: this process may use CPUs {sorted(allowed)}")
    return int(setting)


def idle_rocksdb_threads() -> None:
    """Run RocksDB's own threads (named ``rocksdb:*``: the pools that flush
    and compact, started when the database opened) as SCHED_IDLE: the
    kernel gives them only CPU time that no other thread wants. A flush
    then waits for the server's idle moments instead of taking its CPU
    (docs/lab.md, "What stops a Python reactor"). When every CPU is busy and the
    memtables fill, RocksDB holds writes back; the writer then waits, its
    CPU goes idle, and the flush runs."""
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm") as comm:
                if not comm.read().startswith("rocksdb"):
                    continue
            os.sched_setscheduler(int(task), os.SCHED_IDLE, os.sched_param(0))
        except OSError:
            continue  # the thread ended meanwhile


def place_threads(cpu: int, threads: list[threading.Thread]) -> None:
    """Pin each started thread to ``cpu`` and make it SCHED_BATCH (Linux
    takes a thread id for both; neither needs privileges)."""
    for thread in threads:
        assert thread.native_id is not None, "pin threads after starting them"
        os.sched_setaffinity(thread.native_id, {cpu})
        os.sched_setscheduler(thread.native_id, os.SCHED_BATCH, os.sched_param(0))

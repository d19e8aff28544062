"""The server's settings: one table that makes the flags, the environment
variables, the defaults and the help text.

Every option exists once, in ``OPTIONS``. The CLI builds its argparse flags
from it, each flag's default may come from ``SELECTORKV_<NAME>`` in the
environment, and ``ServerConfig`` is the typed object that the rest of the
server reads. docs/configuration.md is this table in prose.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from selectorkv.cluster.placement import Topology

ENV_PREFIX = "SELECTORKV_"
# The cluster token travels in every internal request's head, within the
# allowance that head has over a client's (api.INTERNAL_HEAD_ALLOWANCE).
MAX_TOKEN = 256


@dataclass(frozen=True)
class ServerConfig:
    """What ``selectorkv serve`` was asked to do; immutable once built."""

    host: str = "127.0.0.1"
    port: int = 8080
    data: str = "./data"
    mode: str = "async"
    selectors: int = 1
    workers: int = 1
    queue_size: int = 1024
    max_connections: int = 10_000
    max_body: int = 8 * 1024 * 1024
    max_header_size: int = 16 * 1024
    keepalive_timeout: float = 30.0
    header_timeout: float = 10.0
    request_timeout: float = 10.0
    grace: float = 10.0
    fsync: bool = False
    commit_batch: int = 64
    cpu: str = "auto"
    log_level: str = "info"
    record_stalls: bool = False
    rocksdb_threads: str = "normal"
    cluster: str = ""
    self_node: str = ""
    cluster_token: str = ""
    peer_timeout: float = 1.0
    peer_calls: str = "async"
    hinted_handoff: bool = True
    hint_ttl: float = 3 * 3600.0
    hints_max: int = 100_000
    hints_max_bytes: int = 256 * 1024 * 1024
    hint_rate: int = 500
    repair_share: float = 0.1
    repair_interval: float = 3600.0
    tombstone_grace: float = 10 * 86400.0

    def __post_init__(self) -> None:
        if self.peer_calls not in ("async", "blocking"):
            raise ValueError(f"peer_calls must be async or blocking, not {self.peer_calls!r}")
        if self.rocksdb_threads not in ("normal", "idle"):
            raise ValueError(f"rocksdb_threads: normal or idle, not {self.rocksdb_threads!r}")
        if self.mode not in ("sync", "async"):
            raise ValueError(f"mode must be sync or async, not {self.mode!r}")
        for name in (
            "selectors",
            "workers",
            "queue_size",
            "max_connections",
            "max_body",
            "max_header_size",
            "commit_batch",
            "hints_max",
            "hints_max_bytes",
            "hint_rate",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in (
            "keepalive_timeout",
            "header_timeout",
            "request_timeout",
            "grace",
            "peer_timeout",
            "hint_ttl",
            "tombstone_grace",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if not 0 < self.repair_share <= 1:
            raise ValueError(f"repair_share must be in (0, 1], not {self.repair_share}")
        if self.repair_interval < 0:
            raise ValueError("repair_interval must be 0 (no background repair) or more")
        if self.hinted_handoff and self.tombstone_grace <= self.hint_ttl:
            # A hint outliving a purged tombstone would bring its older
            # value back (cluster/tombstones.py).
            raise ValueError(
                f"tombstone_grace ({self.tombstone_grace:g} s) must be longer than hint_ttl "
                f"({self.hint_ttl:g} s): a hint older than a purged tombstone would bring "
                "its key back"
            )
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, not {self.port}")
        cpu_setting(self.cpu)
        if self.cluster:
            from selectorkv.cluster.placement import Topology

            if not self.self_node:
                raise ValueError(
                    "--cluster needs --self: which of the listed nodes this one is "
                    "(its http://host:port exactly as in --cluster)"
                )
            Topology.parse(self.cluster, self.self_node)  # TopologyError is a ValueError
            if len(self.cluster_token) > MAX_TOKEN:
                raise ValueError(f"the cluster token is longer than {MAX_TOKEN} characters")
            if not self.cluster_token:
                raise ValueError(
                    "--cluster needs --cluster-token (or SELECTORKV_CLUSTER_TOKEN): the secret "
                    "every node sends with its internal requests; selectorkv cluster makes one"
                )
        elif self.self_node:
            raise ValueError("--self names this node in --cluster, which is not given")

    @property
    def answer_timeout(self) -> float:
        """How long a request waits for an answer given later (504 after
        it): ``request_timeout``, and in a cluster at least what a read may
        take, its replicas' answers and then its read repair, each within
        ``peer_timeout``, plus a second: the quorum always decides first."""
        if not self.cluster:
            return self.request_timeout
        return max(self.request_timeout, 2 * self.peer_timeout + 1.0)

    @property
    def topology(self) -> Topology | None:
        """The cluster this node belongs to; None for a single node."""
        from selectorkv.cluster.placement import Topology

        return Topology.parse(self.cluster, self.self_node) if self.cluster else None


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be positive")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError("must be 0 or more")
    return value


def port_number(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be 0..65535")
    return value


def byte_size(text: str) -> int:
    """'4194304', '4MiB', '512KiB', '8MB' -> bytes (binary multiples for both
    spellings, since that is what a limit on a buffer means)."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    cleaned = text.strip().lower().removesuffix("ib").removesuffix("b")
    factor = 1
    if cleaned and cleaned[-1] in units:
        factor = units[cleaned[-1]]
        cleaned = cleaned[:-1]
    value = int(cleaned) * factor
    if value < 1:
        raise ValueError("must be at least 1 byte")
    return value


def cpu_setting(text: str) -> str:
    """'auto', 'none' or a CPU number."""
    if text not in ("auto", "none") and not (text.isdigit() and int(text) < 4096):
        raise ValueError("must be auto, none or a CPU number")
    return text


def boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


@dataclass(frozen=True)
class Option:
    """One setting: its flag, how to parse it, and a one-line explanation."""

    name: str
    parse: Callable[[str], Any]
    help: str
    choices: tuple[str, ...] | None = None
    spelled: str = ""  # the flag's name where it differs from the field's

    @property
    def flag(self) -> str:
        return "--" + (self.spelled or self.name).replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + (self.spelled or self.name).upper()


OPTIONS: tuple[Option, ...] = (
    Option("host", str, "address to bind; 0.0.0.0 exposes the server to the network"),
    Option("port", port_number, "TCP port; 0 picks a free one and the log says which"),
    Option("data", str, "RocksDB directory, created if missing"),
    Option(
        "mode",
        str,
        "sync: SelectorThreads execute requests; async: PayloadThreads do",
        choices=("sync", "async"),
    ),
    Option("selectors", positive_int, "number of SelectorThreads (reactors owning connections)"),
    Option("workers", positive_int, "number of PayloadThreads in async mode"),
    Option(
        "queue_size",
        positive_int,
        "PayloadThread queue bound; a full queue answers 503. It is the overload latency "
        "budget: an accepted request waits behind at most this many, and nothing is shed "
        "while clients have fewer requests in flight (docs/reliability.md)",
    ),
    Option(
        "max_connections",
        positive_int,
        "most connections held at once; beyond it new ones wait in the backlog",
    ),
    Option("max_body", byte_size, "largest request body in bytes (413 above it), e.g. 8MiB"),
    Option("max_header_size", byte_size, "largest request head in bytes (431 above it)"),
    Option(
        "keepalive_timeout",
        positive_float,
        "seconds an idle keep-alive connection (or a stalled reader) is kept",
    ),
    Option(
        "header_timeout",
        positive_float,
        "seconds a request head may take to arrive; also the longest pause inside a body",
    ),
    Option(
        "request_timeout",
        positive_float,
        "seconds a complete request may wait for an answer that another thread or node "
        "gives (504 after it); in a cluster at least twice --peer-timeout plus 1: a read "
        "waits for its replicas, then for its read repair",
    ),
    Option("grace", positive_float, "seconds in-flight requests get to finish on SIGTERM/SIGINT"),
    Option(
        "fsync",
        boolean,
        "sync the write-ahead log to disk before a write is answered, once per group-commit "
        "batch (survives power loss; without it, a write survives a crash of the process)",
    ),
    Option(
        "commit_batch",
        positive_int,
        "most writes stored together as one batch, with one log sync under --fsync (group "
        "commit: the writes of one round, or what a PayloadThread finds queued); 1 turns it off",
    ),
    Option(
        "cpu",
        cpu_setting,
        "CPU that the server's Python threads share (GIL: they never run at once); "
        "auto picks one, none lets the OS move them",
    ),
    Option(
        "log_level",
        str,
        "logging level",
        choices=("debug", "info", "warning", "error"),
    ),
    Option(
        "cluster",
        str,
        "every node of the cluster as http://host:port, comma-separated, the same list on "
        "every node (docs/cluster.md); empty: a single node",
    ),
    Option("self_node", str, "this node's URL in --cluster", spelled="self"),
    Option(
        "cluster_token",
        str,
        "the secret that nodes send with internal requests; without it an internal "
        "request is refused (403). Prefer the environment variable: a flag shows in ps",
    ),
    Option(
        "peer_timeout",
        positive_float,
        "seconds a call to another node may take before it counts as a failed replica",
    ),
    Option(
        "peer_calls",
        str,
        "async: replicas are asked at once over non-blocking sockets on the SelectorThread; "
        "blocking: the executing thread asks them one after another and waits (for comparison)",
        choices=("async", "blocking"),
    ),
    Option(
        "hinted_handoff",
        boolean,
        "keep the writes a replica missed (hints, in DATA/hints) and hand them to it "
        "when it answers again (docs/cluster.md)",
    ),
    Option("hint_ttl", positive_float, "seconds a hint is kept before it expires undelivered"),
    Option(
        "hints_max", positive_int, "most hints kept for one node; over it the oldest are dropped"
    ),
    Option("hints_max_bytes", byte_size, "most bytes of hints kept for one node, e.g. 256MiB"),
    Option(
        "hint_rate",
        positive_int,
        "most hints a second handed to one node that answers again (not to flood it)",
    ),
    Option(
        "repair_share",
        positive_float,
        "the share of a CPU an anti-entropy scan may take (a tree, a push; "
        'docs/cluster.md, "Anti-entropy"): 0 < share <= 1',
    ),
    Option(
        "rocksdb_threads",
        str,
        "the scheduling of RocksDB's own threads (flushes, compactions): idle runs them "
        "only on CPU time no other thread wants, so that a flush does not take the CPU "
        'from the server\'s threads (docs/lab.md, "What stops a Python reactor"); '
        "normal: as the OS does",
        choices=("normal", "idle"),
    ),
    Option(
        "record_stalls",
        boolean,
        "keep a record of garbage collections and SelectorThread rounds of 1 ms or more, "
        "on the monotonic clock, for the lab's stall timeline (GET /v0/debug/stalls)",
    ),
    Option(
        "repair_interval",
        non_negative_float,
        "seconds between two background anti-entropy repairs this node drives "
        "(give or take a tenth); 0: none, selectorkv repair only",
    ),
    Option(
        "tombstone_grace",
        positive_float,
        "seconds a delete's tombstone is kept at least; after it, a repair that finds it "
        "on every replica of its key purges it (longer than --hint-ttl)",
    ),
)

DEFAULTS = ServerConfig()


def default_of(option: Option) -> Any:
    return getattr(DEFAULTS, option.name)

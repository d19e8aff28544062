"""The command line: ``selectorkv serve`` (and ``python -m selectorkv``).

Each flag comes from the option table in config.py; its default can be set
through the environment as ``SELECTORKV_<NAME>`` (``SELECTORKV_MAX_BODY=1MiB``),
and a flag given on the command line wins over the environment.

Signals. The main thread blocks SIGINT and SIGTERM before it starts any other
thread (threads inherit the mask), then waits for them with ``sigwait``. So a
signal never interrupts a SelectorThread in the middle of a bytecode; it is
an event the main thread receives, like a reactor receives a readable socket,
and the shutdown runs in plain sequential code.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import resource
import signal
import sys
import time
from collections.abc import Sequence

from selectorkv import __version__
from selectorkv.cluster.merkle import SEGMENTS
from selectorkv.config import (
    OPTIONS,
    Option,
    ServerConfig,
    boolean,
    default_of,
    port_number,
    positive_float,
    positive_int,
)
from selectorkv.kv.storage import RocksStorage, StorageError
from selectorkv.lab import cli as lab_cli

log = logging.getLogger("selectorkv")

LOG_FORMAT = "%(asctime)s %(levelname)s [%(threadName)s] %(name)s: %(message)s"
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selectorkv",
        description="A key-value HTTP server built as a reactor: selectors + h11 + RocksDB.",
    )
    parser.add_argument("--version", action="version", version=f"selectorkv {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the server",
        description=(
            "Run the server. API: GET/PUT/DELETE /v0/entity?id=KEY, GET "
            "/v0/entities?start=KEY[&end=KEY] (a range, chunked), GET /v0/status, GET /metrics "
            "(Prometheus); a cluster node also GET /v0/cluster, and ack/from on the first "
            "three. With --cpu auto the server pins its Python threads to one CPU (the start "
            "line's cpu=) and runs them as SCHED_BATCH: with the GIL, one CPU is all they can "
            "use at once. "
            "Every flag can also be set as SELECTORKV_<NAME> in the environment; "
            "stop with SIGINT or SIGTERM (in-flight requests finish first). "
            "HTTP is parsed with h11; SELECTORKV_HTTP_PARSER=h11-mypyc selects the "
            "compiled fork (install selectorkv[fast])."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for option in OPTIONS:
        _add_option(serve, option)
    lab_cli.add_commands(commands)
    cluster = commands.add_parser(
        "cluster",
        help="run a local cluster: N node processes on 127.0.0.1",
        description=(
            "Start N nodes (selectorkv serve) on 127.0.0.1, ports BASE-PORT .. BASE-PORT+N-1, "
            "each with its own RocksDB directory DATA/node-<i>, the same --cluster list and a "
            "generated token (or SELECTORKV_CLUSTER_TOKEN), and a CPU of its own (round-robin "
            "over the CPUs this process may use, from the highest; --cpu among the node flags "
            "overrides); print their URLs; forward SIGINT and SIGTERM to all of them and exit "
            "when they have stopped. A node that cannot start stops the others: exit 1 with "
            "its reason. Flags after the known ones go to every node's serve (for example "
            "--mode sync)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    upgrade = commands.add_parser(
        "upgrade-records",
        help="rewrite a stopped cluster node's records in this version's format",
        description=(
            "A cluster node's records now say how many replicas they were written to (the "
            "request's `from`), so that repair restores exactly those copies; a node refuses "
            "a data directory of the earlier format. This rewrites one, with its hints, each "
            "record as written to --replicas nodes. Run it on every node's directory, with "
            "the nodes stopped. Interrupted, it finishes when run again; on a directory "
            "already upgraded it does nothing."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    upgrade.add_argument("--data", required=True, help="the node's data directory")
    upgrade.add_argument(
        "--replicas",
        type=positive_int,
        required=True,
        help="the `from` the records were written with: the number of nodes if the writes "
        "used the default (1..255)",
    )
    repair = commands.add_parser(
        "repair",
        help="anti-entropy repair of one cluster node with every other node",
        description=(
            "Ask the node at --node to compare its records with each other node's (hash trees "
            "of the records both should hold, compared top-down) and to exchange the records "
            "of the parts that differ, each side keeping the newer: a node that missed writes, "
            "or lost its disk, gets them back without a client reading them. Shows progress "
            "(a bar on a terminal), then what was compared and exchanged with each node. "
            "Exit 0 when every node was repaired, 1 when one failed or the node cannot be "
            'reached. docs/cluster.md, "Anti-entropy".'
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    repair.add_argument("--node", required=True, help="the node's URL, http://host:port")
    repair.add_argument(
        "--token",
        default=os.environ.get("SELECTORKV_CLUSTER_TOKEN", ""),
        help="the cluster token [env SELECTORKV_CLUSTER_TOKEN]",
    )
    repair.add_argument(
        "--timeout", type=positive_float, default=3600.0, help="seconds to wait for the repair"
    )
    cluster.add_argument("--nodes", type=positive_int, default=3, help="how many nodes")
    cluster.add_argument("--base-port", type=port_number, default=8080, help="the first port")
    cluster.add_argument("--data", default="./data-cluster", help="directory for the nodes' data")
    return parser


def _add_option(parser: argparse.ArgumentParser, option: Option) -> None:
    default = default_of(option)
    raw = os.environ.get(option.env)
    if raw is not None:
        try:
            default = option.parse(raw)
        except ValueError as exc:
            parser.error(f"{option.env}={raw!r}: {exc}")
        if option.choices and default not in option.choices:
            parser.error(f"{option.env}={raw!r}: choose from {', '.join(option.choices)}")
    help_text = f"{option.help} [env {option.env}]"
    if option.parse is boolean:
        parser.add_argument(
            option.flag,
            dest=option.name,
            action=argparse.BooleanOptionalAction,
            default=default,
            help=help_text,
        )
    else:
        parser.add_argument(
            option.flag,
            dest=option.name,
            type=option.parse,
            default=default,
            choices=option.choices,
            help=help_text,
            metavar=f"{{{','.join(option.choices)}}}"
            if option.choices
            else (option.spelled or option.name).upper(),
        )


def serve(args: argparse.Namespace) -> int:
    try:
        config = ServerConfig(**{option.name: getattr(args, option.name) for option in OPTIONS})
    except ValueError as exc:
        print(f"selectorkv serve: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level.upper(), format=LOG_FORMAT)
    # Block the stop signals before any thread exists: every thread inherits
    # the mask, and the main thread takes them with sigwait. RocksDB starts
    # threads of its own when the database opens; had they been started
    # unblocked, a SIGTERM could be delivered to one of them, and its default
    # action would kill the process without a shutdown (measured: 11 of 30
    # servers stopped right after start exited -15).
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        # Imported here, not at the top: importing the server chooses the
        # HTTP parser (selectorkv/http/parser.py), which can fail with a message.
        from selectorkv.server import Server
    except ImportError as exc:
        log.error("%s", exc)
        return 2
    try:
        os.makedirs(config.data, exist_ok=True)
        storage = RocksStorage(config.data, fsync=config.fsync)
    except (OSError, StorageError) as exc:
        hint = " (is another selectorkv serving this directory?)" if "lock" in str(exc) else ""
        log.error("%s%s", exc, hint)
        return 1
    raise_open_file_limit()
    try:
        server = Server(config, storage)
    except ValueError as exc:
        log.error("%s", exc)
        storage.close()
        return 2
    try:
        server.start()
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", config.host, config.port, exc)
        storage.close()
        return 1
    received = signal.sigwait(STOP_SIGNALS)
    log.info("%s received: shutting down (grace %ss)", signal.Signals(received).name, config.grace)
    return 0 if server.stop() else 1


def run_repair(node: str, token: str, timeout: float) -> int:
    """``selectorkv repair``: start the node's repair, follow it, say what it did."""
    from selectorkv.cluster.placement import host_and_port

    try:
        host, port = host_and_port(node.rstrip("/"))
    except ValueError:
        print(f"selectorkv repair: --node {node!r}: give http://host:port", file=sys.stderr)
        return 2
    headers = {"X-Selectorkv-Token": token}

    def ask(method: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        try:
            conn.request(method, "/v0/internal/repair", headers=headers)
            reply = conn.getresponse()
            return reply.status, reply.read()
        finally:
            conn.close()

    try:
        status, body = ask("POST")
        if status != 202:
            print(
                f"selectorkv repair: {node} answered {status}: "
                f"{body.decode(errors='replace').strip()}",
                file=sys.stderr,
            )
            return 1
        deadline = time.monotonic() + timeout
        bar = sys.stderr.isatty()
        while True:
            status, body = ask("GET")
            report = json.loads(body) if status == 200 else {}
            if report.get("state") != "running":
                break
            if bar:
                peers = report["peers"]
                done = sum(peer["state"] in ("done", "failed") for peer in peers)
                now = next(
                    (p for p in peers if p["state"] not in ("done", "failed", "waiting")), None
                )
                what = f"{now['peer']}: {now['state']}" if now else ""
                filled = "#" * round(30 * done / max(1, len(peers)))
                sys.stderr.write(f"\rrepair: [{filled:<30}] {done}/{len(peers)} nodes  {what:<60}")
                sys.stderr.flush()
            if time.monotonic() > deadline:
                print(f"\nselectorkv repair: not done after {timeout:.0f} s", file=sys.stderr)
                return 1
            time.sleep(0.2)
        if bar:
            sys.stderr.write("\n")
    except (OSError, http.client.HTTPException, ValueError) as exc:
        print(f"selectorkv repair: {node}: {exc}", file=sys.stderr)
        return 1
    print(f"repair of {node}: {report.get('state')} in {report.get('seconds', 0):.1f} s")
    for peer in report.get("peers", []):
        print(
            f"  with {peer['peer']}: {peer['state']}; {peer['records']} records shared, "
            f"{peer['hashes_compared']} hashes compared, {peer['segments_differing']} of "
            f"{SEGMENTS} segments differed; {peer['sent']} records sent, "
            f"{peer['received']} received ({peer['sent_bytes']:,} and "
            f"{peer['received_bytes']:,} bytes)" + (f"; {peer['error']}" if peer["error"] else "")
        )
    print(
        f"  tombstones purged: {report.get('tombstones_purged', 0)}"
        + (f"; {report['purge_error']}" if report.get("purge_error") else "")
    )
    return 0 if report.get("state") == "done" else 1


def upgrade_records(data: str, replicas: int) -> int:
    """``selectorkv upgrade-records``: a node's records and hints in this
    version's format (records.py, ``upgrade``)."""
    from selectorkv.cluster.hints import upgrade_hints
    from selectorkv.kv.records import upgrade
    from selectorkv.server import HINTS_DIRECTORY

    logging.basicConfig(level="INFO", format=LOG_FORMAT)
    if not os.path.isdir(data):
        log.error("%s is not a directory", data)
        return 2
    try:
        storage = RocksStorage(data)
    except StorageError as exc:
        hint = " (is a node serving this directory? stop it first)" if "lock" in str(exc) else ""
        log.error("%s%s", exc, hint)
        return 1
    try:
        records = upgrade(data, storage, replicas)
        hints_path = os.path.join(data, HINTS_DIRECTORY)
        hints = 0
        if os.path.isdir(hints_path):
            hint_storage = RocksStorage(hints_path)
            try:
                hints = upgrade_hints(hint_storage, replicas)
            finally:
                hint_storage.close()
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    finally:
        storage.close()
    log.info(
        "%s: %d records and %d hints rewritten, each as written to %d replicas",
        data, records, hints, replicas,
    )  # fmt: skip
    return 0


def raise_open_file_limit() -> None:
    """Each connection is a descriptor: take the hard limit as the soft one,
    as servers do, so that --max-connections is not cut by a shell default."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        log.debug("open-file limit raised from %d to %d", soft, hard)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "cluster":
        from selectorkv.cluster import local as local_cluster

        return local_cluster.run(args.nodes, args.base_port, args.data, extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "serve":
        return serve(args)
    if args.command == "repair":
        return run_repair(args.node, args.token, args.timeout)
    if args.command == "upgrade-records":
        return upgrade_records(args.data, args.replicas)
    if args.command in lab_cli.COMMANDS:
        return lab_cli.COMMANDS[args.command](args)
    parser.print_help(sys.stderr)
    return 2

"""This checkout against an earlier commit, by the instructions a request
costs: ``python -m benchmarks.instructions --base REV`` (or ``make
instructions BASE=REV``).

``make builds`` compares throughput, and on this machine a round's ratio
swings 0.6-1.4 from the machine alone, so a change of a few per cent hides
in it. Instructions do not drift: each build's server runs under valgrind's
callgrind, one client sends the same requests in sequence (PUT then GET of
a 300-byte value), and the instructions the server process executed while
they ran (every thread, RocksDB included) are divided by their number. The
same build measured twice agrees within 0.1 %. What it does not see:
anything that costs time without instructions (cache misses, the kernel's
scheduling, system calls' time), which is what ``make builds`` measures.
"""

from __future__ import annotations

import argparse
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from selectorkv.lab.harness.servers import ServerProcess, free_port, selectorkv_serve

ROOT = Path(__file__).resolve().parents[1]
WARMUP = 100
PUT = b"PUT /v0/entity?id=k HTTP/1.1\r\nHost: x\r\nContent-Length: 300\r\n\r\n" + b"v" * 300
GET = b"GET /v0/entity?id=k HTTP/1.1\r\nHost: x\r\n\r\n"
REQUESTS = {"put": PUT, "get": GET}


def roundtrip(sock: socket.socket, request: bytes) -> None:
    """Send ``request`` and read its whole response."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    found = re.search(rb"(?i)content-length: (\d+)", head)
    while found and len(body) < int(found.group(1)):
        body += sock.recv(65536)


def instructions(tree: Path, mode: str, requests: int, scratch: Path) -> dict[str, float]:
    """Per workload, the instructions per request of ``tree``'s server."""
    scratch.mkdir(parents=True)
    port = free_port()
    out = scratch / "callgrind.out"
    command = [
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
        *selectorkv_serve("--mode", mode, "--port", str(port), "--data", str(scratch / "db"),
                          "--cpu", "none", "--log-level", "warning"),
    ]  # fmt: skip
    with open(scratch / "server.log", "wb") as log:
        server = ServerProcess(command, port=port, cwd=tree, env={"PYTHONPATH": str(tree)}, log=log)
        found: dict[str, float] = {}
        try:
            server.wait_ready(timeout=300)
            with socket.create_connection(server.address, timeout=120) as sock:
                for workload, request in REQUESTS.items():
                    for _ in range(WARMUP):
                        roundtrip(sock, request)
                    callgrind_control("-z", server.pid)  # counting starts from zero here
                    for _ in range(requests):
                        roundtrip(sock, request)
                    before = set(scratch.glob("callgrind.out*"))
                    callgrind_control("-d", server.pid)  # returns once the dump is written
                    dumps = set(scratch.glob("callgrind.out*")) - before
                    found[workload] = sum(map(counted, dumps)) / requests
        finally:
            server.stop(timeout=120)
    return found


def callgrind_control(action: str, pid: int) -> None:
    subprocess.run(["callgrind_control", action, str(pid)], check=True, capture_output=True)


def counted(dump: Path) -> int:
    """The instructions a callgrind dump counted."""
    total = re.search(r"^(?:summary|totals): (\d+)", dump.read_text(), re.MULTILINE)
    if total is None:
        raise RuntimeError(f"no instruction count in {dump}")
    return int(total.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions", description=__doc__)
    parser.add_argument("--base", required=True, help="the commit to compare with, e.g. HEAD~1")
    parser.add_argument("--requests", type=int, default=1000, help="requests counted per workload")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="selectorkv-instructions-") as temp:
        scratch = Path(temp)
        tree = scratch / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), args.base],
                       cwd=ROOT, check=True, capture_output=True)  # fmt: skip
        try:
            print(f"base: {args.base}; instructions per request (callgrind, the server's "
                  f"process, {args.requests} requests in sequence)\n")  # fmt: skip
            print("| mode | workload | base | new | new / base |\n|---|---|---|---|---|")
            for mode in ("sync", "async"):
                base = instructions(tree, mode, args.requests, scratch / f"base-{mode}")
                new = instructions(ROOT, mode, args.requests, scratch / f"new-{mode}")
                for workload in REQUESTS:
                    b, n = base[workload], new[workload]
                    print(f"| {mode} | {workload.upper()} | {b:,.0f} | {n:,.0f} | {n / b:.4f} |")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())

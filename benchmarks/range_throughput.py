"""Full-range read throughput, and the latency of small GETs beside it.

Fills a database with COUNT entries of 300-byte values (once; kept in
DIR), then for each mode: starts the server, reads the whole range with curl
(which decodes the chunked body) while wrk sends small GETs on 4 other
connections, and prints MB/s, entries/s and the GETs' latency, beside the
same GETs with no stream running. Needs curl and wrk.

    python -m benchmarks.range_throughput [COUNT] [DIR]
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.serving import serving
from selectorkv.kv.storage import RocksStorage

SCRIPTS = Path(__file__).resolve().parent.parent / "wrk_scripts"
PORT = 8098


def fill(path: str, count: int) -> None:
    marker = Path(path) / f"filled-{count}"
    if marker.exists():
        return
    storage = RocksStorage(path)
    value = b"v" * 300
    for i in range(count):
        storage.put(b"%07d" % i, value)
    storage.close()
    marker.touch()


def small_gets(url: str, seconds: int) -> str:
    out = subprocess.run(
        ["wrk", "-t1", "-c4", f"-d{seconds}s", "--latency", "-s", str(SCRIPTS / "get.lua"), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    return f"{float(rate):,.0f} req/s, p50 {p50}, p99 {p99}"


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    data = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp()
    fill(data, count)
    for mode in ("sync", "async"):
        with serving(PORT, data, "--mode", mode) as url:
            idle = small_gets(url, 3)
            started = time.perf_counter()
            reader = subprocess.Popen(
                ["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}",
                 f"{url}/v0/entities?start=0000000"],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            beside = small_gets(url, 3)
            size = int(reader.communicate()[0])
            elapsed = time.perf_counter() - started
        print(
            f"{mode}: {count:,} entries, {size / 1e6:.0f} MB in {elapsed:.2f} s: "
            f"{size / 1e6 / elapsed:.1f} MB/s, {count / elapsed:,.0f} entries/s; "
            f"small GETs alone: {idle}; during the stream's first 3 s: {beside}",
            flush=True,
        )


if __name__ == "__main__":
    main()

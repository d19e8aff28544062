"""Throughput and p99 for SelectorThread / PayloadThread counts and queue
sizes: the data behind the defaults (docs/benchmarks.md).

Starts ``selectorkv serve`` for each configuration on a fresh database, loads
it with ``wrk -t1 -c64 --latency`` (put.lua, then get.lua over the keys the
PUTs wrote) and prints a Markdown table. Needs wrk.

    python -m benchmarks.defaults_matrix [SECONDS]
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.serving import serving

SCRIPTS = Path(__file__).resolve().parent.parent / "wrk_scripts"
PORT = 8097
CONFIGS: list[list[str]] = [
    ["--mode", "sync", "--selectors", "1"],
    ["--mode", "sync", "--selectors", "2"],
    ["--mode", "sync", "--selectors", "4"],
    ["--mode", "async", "--selectors", "1", "--workers", "1"],
    ["--mode", "async", "--selectors", "1", "--workers", "2"],
    ["--mode", "async", "--selectors", "1", "--workers", "4"],
    ["--mode", "async", "--selectors", "1", "--workers", "8"],
    ["--mode", "async", "--selectors", "2", "--workers", "2"],
    ["--mode", "async", "--selectors", "2", "--workers", "4"],
    ["--mode", "async", "--selectors", "4", "--workers", "4"],
    ["--mode", "async", "--selectors", "1", "--workers", "1", "--queue-size", "16"],
    ["--mode", "async", "--selectors", "1", "--workers", "1", "--cpu", "none"],
    ["--mode", "sync", "--selectors", "2", "--cpu", "none"],
]


def load(url: str, script: str, seconds: int) -> tuple[float, float, int]:
    """(requests/s, p99 ms, non-2xx responses) of one wrk run."""
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            "-c64",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(SCRIPTS / script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    p99 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rate, p99, int(errors.group(1)) if errors else 0


def main() -> None:
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    print("| configuration | PUT req/s | PUT p99 ms | GET req/s | GET p99 ms | 503s |")
    print("|---|---|---|---|---|---|")
    for args in CONFIGS:
        with tempfile.TemporaryDirectory() as data, serving(PORT, data, *args) as url:
            put, put_p99, put_err = load(url, "put.lua", seconds)
            get, get_p99, _ = load(url, "get.lua", seconds)  # 404s for unwritten keys count
        label = " ".join(a.removeprefix("--") for a in args)
        print(
            f"| {label} | {put:,.0f} | {put_p99:.1f} | {get:,.0f} | {get_p99:.1f} | {put_err} |",
            flush=True,
        )


if __name__ == "__main__":
    main()

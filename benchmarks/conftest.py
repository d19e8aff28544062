"""Shared pieces of the microbenchmarks (``make bench``).

The benchmarks use the same real parts as the tests: RocksDB in a temporary
directory, servers on free loopback ports, the tests' raw h11 client.
"""

from __future__ import annotations

from tests.conftest import make_server  # noqa: F401  (a fixture, used by name)

"""The seed's workload, shared by the load generator and fill: ids are
random 3-letter strings over [a-zA-Z0-9] (62^3 = 238,328 keys), bodies are
random 300-letter strings. wrk_scripts/common.lua is the same in Lua."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
ID_LENGTH = 3
BODY_LENGTH = 300
KEY_COUNT = len(ALPHABET) ** ID_LENGTH
WORKLOADS = ("put", "get", "delete", "mixed")  # mixed: half GET, half PUT


def all_keys() -> Iterator[bytes]:
    """Every id of the key space, in the alphabet's order."""
    for letters in itertools.product(ALPHABET, repeat=ID_LENGTH):
        yield "".join(letters).encode()

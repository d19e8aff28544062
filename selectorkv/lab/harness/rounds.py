"""Interleaved rounds: figures compared side by side are measured with
every contender up at once, each round in another order, so that the
machine's drift (10-40 % from minute to minute here) falls on all of them
alike; the ratio is then taken within each round (spread.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def rotated(items: Sequence[T], number: int) -> list[T]:
    """The order of round ``number``: the items rotated by it, so that each
    takes every place in turn."""
    shift = number % len(items)
    return [*items[shift:], *items[:shift]]

"""What select() reports, and again, until you act: level-triggered readiness.

    python -m docs.tutorial.readiness

Chapter 3's two rules, shown on a socketpair with no server in the way:

1. a socket with unread bytes is reported readable on every select() until
   the bytes are read, so a reactor may read once per report and lose
   nothing;
2. a socket registered for EVENT_WRITE is reported writable on every
   select() while its send buffer has room, so a reactor that stays
   registered with nothing to send never sleeps: it spins.
"""

from __future__ import annotations

import selectors
import socket
import time

SELECTS = 1000


def reported(selector: selectors.BaseSelector, times: int) -> int:
    """How many of ``times`` select(timeout=0) calls report anything."""
    return sum(1 for _ in range(times) if selector.select(timeout=0))


def main() -> None:
    here, there = socket.socketpair()
    here.setblocking(False)
    selector = selectors.DefaultSelector()
    print(f"selector: {type(selector).__name__}")

    selector.register(here, selectors.EVENT_READ)
    print(f"nothing sent:           readable on {reported(selector, 3)} of 3 selects")
    there.send(b"x" * 100)
    print(f"100 bytes sent:         readable on {reported(selector, 3)} of 3 selects")
    print(f"read 10 of them:        {len(here.recv(10))} bytes read")
    print(f"90 left unread:         readable on {reported(selector, 3)} of 3 selects")
    print(f"read the rest:          {len(here.recv(1000))} bytes read")
    print(f"nothing left:           readable on {reported(selector, 3)} of 3 selects")

    selector.modify(here, selectors.EVENT_WRITE)
    start = time.perf_counter()
    count = reported(selector, SELECTS)
    spent = time.perf_counter() - start
    print(
        f"EVENT_WRITE, nothing to send: writable on {count} of {SELECTS} selects "
        f"({spent * 1e6 / SELECTS:.1f} µs each): a loop that stays registered spins"
    )
    selector.close()
    here.close()
    there.close()


if __name__ == "__main__":
    main()

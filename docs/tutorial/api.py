"""The /v0/entity API on an in-memory dict, and the command line every step shares.

Kept apart so that each step's program holds only the idea it adds. The
answers are the real server's (selectorkv/kv/api.py): 200 with the value, 404,
201 on PUT, 202 on DELETE, 400 without an id, 405 for any other method.

``--delay-ms`` makes every request wait that long, the way a disk read
would: ``time.sleep`` lets go of the GIL, as a blocking system call does.
Step 5 uses it to show what a worker pool is for. (rocksdict, the real
server's storage, does *not* let go of the GIL: docs/architecture.md, "The
GIL, measured".)
"""

from __future__ import annotations

import argparse
import socket
import time

STORE: dict[bytes, bytes] = {}
DELAY_S = 0.0


def handle(method: bytes, path: bytes, query: dict[bytes, bytes], body: bytes) -> tuple[int, bytes]:
    """(status, body) of one request."""
    if DELAY_S:
        time.sleep(DELAY_S)
    if path != b"/v0/entity":
        return 400, b""
    key = query.get(b"id")
    if not key:
        return 400, b""
    if method == b"GET":
        return (200, STORE[key]) if key in STORE else (404, b"")
    if method == b"PUT":
        STORE[key] = body
        return 201, b""
    if method == b"DELETE":
        STORE.pop(key, None)
        return 202, b""
    return 405, b""


def listen(
    description: str, extra: argparse.ArgumentParser | None = None
) -> tuple[socket.socket, argparse.Namespace]:
    """Parse the step's command line, bind its port and say where it listens.

    ``--port 0`` takes a free port; the printed line tells the tests and
    docs/tutorial/measure.py which one.
    """
    parser = argparse.ArgumentParser(description=description, parents=[extra] if extra else [])
    parser.add_argument(
        "--port", type=int, default=8080, help="TCP port on 127.0.0.1 (0: any free one)"
    )
    parser.add_argument(
        "--delay-ms",
        type=float,
        default=0.0,
        help="make every request wait this long, GIL released",
    )
    args = parser.parse_args()
    global DELAY_S
    DELAY_S = args.delay_ms / 1000
    # backlog: connections the kernel completes while the program is not
    # accepting (step 1 is never accepting while it serves someone)
    listener = socket.create_server(("127.0.0.1", args.port), backlog=1024)
    print(f"listening on 127.0.0.1:{listener.getsockname()[1]}", flush=True)
    return listener, args

"""Step 2: a thread per connection.

    python -m docs.tutorial.step2_threads --port 8082

Step 1's connection loop, run for each connection in a thread of its own: a
client that keeps its connection open now holds only its own thread, and the
next client is served at once. The price is a thread per connection, busy or
idle: each has a stack (8 MiB of address space, a few pages of it touched),
a kernel task for the scheduler, and a Python thread state; and with the GIL
only one of them runs Python at a time anyway (docs/tutorial/02-threads.md
counts them with 10,000 idle clients).
"""

from __future__ import annotations

import socket
import threading

from docs.tutorial.api import listen
from docs.tutorial.step1_blocking import serve_connection


def serve(listener: socket.socket) -> None:
    while True:
        conn, _ = listener.accept()
        # daemon: an idle client must not keep the process alive at exit
        threading.Thread(target=serve_connection, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    serve(listen("step 2: a thread per connection")[0])

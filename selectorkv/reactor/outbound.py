"""The outbound buffer: bytes a connection has produced but the socket has
not taken yet.

It behaves like the write side of an asyncio transport. Whoever owns the
connection appends the pieces of a response (a head, a body, later the chunks
of a stream) without copying them together, then calls ``send_to``. That tries
the socket at once: with the buffer empty before the call, a small response
leaves in one system call and never waits for a selector round trip. Whatever
the socket does not take stays here, as the same ``bytes`` objects (or
memoryviews into them), until the SelectorThread sees the socket writable.

Several pieces go out in one ``sendmsg`` (a gather write, ``writev``), so a
response head and its body cost one system call, not two, and no join copies
a 4 MiB value just to send it.
"""

from __future__ import annotations

import socket
from collections import deque
from itertools import islice

# A gather write takes at most this many pieces (Linux's IOV_MAX is 1024).
MAX_PIECES = 64
# Pieces that add up to less than this are joined and sent with plain send.
JOIN_BELOW = 16 * 1024


class OutboundBuffer:
    """A FIFO of byte pieces with a running total."""

    def __init__(self) -> None:
        self._pieces: deque[bytes | memoryview] = deque()
        # Bytes waiting to be sent. A plain attribute rather than __len__:
        # the request path reads it several times per request, and an
        # attribute read costs no Python call.
        self.size = 0

    def append(self, piece: bytes) -> None:
        if piece:
            self._pieces.append(piece)
            self.size += len(piece)

    def clear(self) -> None:
        self._pieces.clear()
        self.size = 0

    def send_to(self, sock: socket.socket) -> int:
        """Send as much as the socket takes now; return how many bytes went.

        Raises BlockingIOError when the socket takes nothing, OSError when
        the peer is gone; the caller decides what either means.
        """
        before = self.size
        pieces = self._pieces
        if self.size <= JOIN_BELOW:
            # A small response (head + value), the usual case: one copy is
            # cheaper than building the I/O vector of a gather write, and it
            # nearly always leaves in a single send.
            data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            sent = sock.send(data)
            pieces.clear()
            if sent < len(data):
                pieces.append(memoryview(data)[sent:])
            self.size -= sent
            return sent
        while pieces:
            if len(pieces) == 1:
                offered = len(pieces[0])
                sent = sock.send(pieces[0])
            else:
                batch = list(islice(pieces, MAX_PIECES))
                offered = sum(map(len, batch))
                sent = sock.sendmsg(batch)
            self._consume(sent)
            if sent < offered:
                break  # the socket's send buffer is full: wait for EVENT_WRITE
        return before - self.size

    def _consume(self, sent: int) -> None:
        self.size -= sent
        pieces = self._pieces
        while sent:
            first = pieces[0]
            if sent < len(first):
                pieces[0] = memoryview(first)[sent:]
                return
            sent -= len(first)
            pieces.popleft()

"""The calibration target: a server whose latency is known by construction.

It answers every request of the ``/v0/entity`` API after a fixed service
time (``--service-ms``) and does nothing else, so its own cost stays a few
tens of microseconds. Each request's *hold* runs from the kernel's receive
timestamp (``SO_TIMESTAMPNS``) to the moment its answer is handed back to
the kernel; the loop waits with ``select.select``, whose timeout has
microsecond resolution. ``GET /hold`` returns the holds since the last one
(an HdrHistogram), and each answer carries its own in ``X-Hold-Us``, so a
ping loop can subtract it and keep the floor. docs/lab.md, "The instruments".
"""

from __future__ import annotations

import argparse
import heapq
import os
import selectors
import socket
import struct
import time
from collections.abc import Sequence

from hdrh.histogram import HdrHistogram

from selectorkv.lab.load.generator import take_message

# Linux's SO_TIMESTAMPNS (asm-generic/socket.h, SO_TIMESTAMPNS_OLD); Python's
# socket module does not name it. The control message's type is the same number.
SO_TIMESTAMPNS = 35
TIMESPEC = struct.Struct("@qq")  # struct timespec: seconds, nanoseconds
HIGHEST_US = 60_000_000
ANSWERS = {b"GET": b"200 OK", b"PUT": b"201 Created", b"DELETE": b"202 Accepted"}
BODY = b"x" * 64  # a GET's value


class Peer:
    """One client connection: its unread bytes and its answers not yet due."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.outgoing = bytearray()


class Target:
    def __init__(self, listener: socket.socket, service_s: float) -> None:
        self.service_ns = round(service_s * 1e9)
        self.listener = listener
        self.listener.setblocking(False)
        self.selector = selectors.SelectSelector()  # microsecond timeouts (see design)
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        # (due ns, sequence, peer, method, received ns): answers in due order
        self.due: list[tuple[int, int, Peer, bytes, int]] = []
        self.sequence = 0
        self.holds = HdrHistogram(1, HIGHEST_US, 3)

    def serve_forever(self) -> None:
        while True:
            timeout = None
            if self.due:
                timeout = max(0.0, (self.due[0][0] - time.time_ns()) / 1e9)
            for key, events in self.selector.select(timeout):
                peer = key.data
                if peer is None:
                    self.accept()
                    continue
                if events & selectors.EVENT_READ:
                    self.read(peer)
                if events & selectors.EVENT_WRITE and peer.sock.fileno() >= 0:
                    self.flush(peer)
            self.answer_due()

    def accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        except OSError:  # not Linux: the hold then starts when the bytes are read
            pass
        self.selector.register(sock, selectors.EVENT_READ, Peer(sock))

    def read(self, peer: Peer) -> None:
        try:
            data, ancillary, _, _ = peer.sock.recvmsg(65536, socket.CMSG_SPACE(TIMESPEC.size))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.close(peer)
            return
        received = time.time_ns()
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanoseconds = TIMESPEC.unpack(value[: TIMESPEC.size])
                received = seconds * 1_000_000_000 + nanoseconds
        peer.buffer += data
        while (request := self.take_request(peer)) is not None:
            method, path = request
            if path.startswith(b"/hold"):
                self.send(peer, b"200 OK", self.holds.encode(), 0)
                self.holds = HdrHistogram(1, HIGHEST_US, 3)
                continue
            self.sequence += 1
            heapq.heappush(
                self.due, (received + self.service_ns, self.sequence, peer, method, received)
            )

    @staticmethod
    def take_request(peer: Peer) -> tuple[bytes, bytes] | None:
        """The method and target of a complete request (consumed), or None."""
        head = take_message(peer.buffer)
        if head is None:
            return None
        method, path = head.split(b" ", 2)[:2]
        return method, path

    def answer_due(self) -> None:
        now = time.time_ns()
        while self.due and self.due[0][0] <= now:
            _, _, peer, method, received = heapq.heappop(self.due)
            if peer.sock.fileno() < 0:
                continue  # the client went away
            hold_us = max(1, (time.time_ns() - received) // 1000)
            self.holds.record_value(hold_us)
            body = BODY if method == b"GET" else b""
            self.send(peer, ANSWERS.get(method, b"405 Method Not Allowed"), body, hold_us)

    def send(self, peer: Peer, status: bytes, body: bytes, hold_us: int) -> None:
        peer.outgoing += b"HTTP/1.1 %s\r\nContent-Length: %d\r\nX-Hold-Us: %d\r\n\r\n%s" % (
            status,
            len(body),
            hold_us,
            body,
        )
        self.flush(peer)

    def flush(self, peer: Peer) -> None:
        try:
            sent = peer.sock.send(peer.outgoing)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.close(peer)
            return
        del peer.outgoing[:sent]
        # A slow reader: wait for room instead of blocking the loop.
        wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if peer.outgoing else 0)
        if self.selector.get_key(peer.sock).events != wanted:
            self.selector.modify(peer.sock, wanted, peer)

    def close(self, peer: Peer) -> None:
        self.selector.unregister(peer.sock)
        peer.sock.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m selectorkv.lab.studies.calibration_target",
        description="A server that answers the /v0/entity API after a fixed service time; "
        "GET /hold returns the server-side holds since the last GET /hold (an encoded "
        "HdrHistogram, microseconds). The lab's known-latency target (selectorkv lab --calibrate).",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", type=int, help="port to listen on, on 127.0.0.1")
    where.add_argument(
        "--listen-fd", type=int, help="a listening socket inherited from the parent (no port race)"
    )
    parser.add_argument("--service-ms", type=float, default=0.0, help="time before each answer")
    parser.add_argument("--cpu", type=int, help="pin to this CPU")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    if args.listen_fd is not None:
        listener = socket.socket(fileno=args.listen_fd)
    else:
        listener = socket.create_server(("127.0.0.1", args.port), backlog=1024)
    target = Target(listener, args.service_ms / 1000)
    try:
        target.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

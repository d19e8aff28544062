"""Step 4: h11 instead of hand parsing.

    python -m docs.tutorial.step4_h11 --port 8084

Step 3b's reactor, unchanged, with HandParser swapped for h11, a sans-I/O
HTTP/1.1 state machine behind the same four calls: the reactor still owns
the socket and the buffers, hands h11 the bytes it read (receive_data),
takes requests out of it (next_event) and the bytes of each answer
(send). What h11 adds over the hand parser:

- the connection's rules: after an answer h11 is ready for the next request
  only once the answer is complete (start_next_cycle), so pipelined requests
  are answered one at a time and in order; "Connection: close" and HTTP/1.0
  are honoured (must_close);
- refusals: what the hand parser guessed at, h11 answers 400: two different
  Content-Lengths, a header line without a colon. A server that guesses
  differently from a proxy in front of it is how request smuggling works
  (docs/tutorial/04-h11.md sends each to both steps). What the hand parser
  could not read at all, h11 reads: a chunked body, and lines ended by a
  bare LF (RFC 9112 lets a recipient accept one). A Transfer-Encoding that
  h11 does not know (gzip) it refuses, and this step answers 501.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import h11

from docs.tutorial.api import listen
from docs.tutorial.hand_parser import MAX_BODY, MAX_HEAD, BadRequest, Request
from docs.tutorial.step3b_flow import FlowReactor


class H11Parser:
    def __init__(self) -> None:
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.request: h11.Request | None = None
        self.body = bytearray()

    def feed(self, data: bytes) -> None:
        self.h11.receive_data(data)

    def next_request(self) -> Request | None:
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()  # the last answer is complete: ready for the next
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as error:
                raise BadRequest(error.error_status_hint) from None
            if (
                event is h11.NEED_DATA
                or event is h11.PAUSED
                or isinstance(event, h11.ConnectionClosed)
            ):
                return None  # PAUSED: a pipelined request waits until this answer is sent
            if isinstance(event, h11.Request):
                self.request, self.body = event, bytearray()
                declared = dict(event.headers).get(b"content-length", b"0")
                if int(declared) > MAX_BODY:  # h11 has checked it is a number
                    raise BadRequest(413)
            elif isinstance(event, h11.Data):
                self.body += event.data
                if len(self.body) > MAX_BODY:  # a chunked body declares no length
                    raise BadRequest(413)
            elif isinstance(event, h11.EndOfMessage) and self.request is not None:
                target = urlsplit(self.request.target)
                return Request(
                    self.request.method,
                    target.path,
                    dict(parse_qsl(target.query)),
                    bytes(self.body),
                )

    def respond(self, status: int, body: bytes) -> bytes:
        headers = [("content-length", str(len(body)))]
        return (
            self.h11.send(h11.Response(status_code=status, headers=headers))
            + self.h11.send(h11.Data(data=body))
            + self.h11.send(h11.EndOfMessage())
        )

    def refuse(self, status: int) -> bytes:
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return b""  # an answer was already begun: all that is left is to close
        head = h11.Response(
            status_code=status, headers=[("content-length", "0"), ("connection", "close")]
        )
        return self.h11.send(head) + self.h11.send(h11.EndOfMessage())

    @property
    def must_close(self) -> bool:
        return self.h11.our_state is h11.MUST_CLOSE


if __name__ == "__main__":
    reactor = FlowReactor(H11Parser)
    reactor.listen_on(listen("step 4: step 3b's reactor with h11")[0])
    reactor.run()

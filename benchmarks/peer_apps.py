"""selectorkv's API as an ASGI and a WSGI app on rocksdict: what a Python
user would write instead of selectorkv, for uvicorn and gunicorn to serve
in the peer comparison (benchmarks/peers.py).

Written the plain way an app author would, with one routing function for
both interfaces so that the two peers differ only in their server. The
database is opened as selectorkv opens it (rocksdict's raw mode: bytes in,
bytes out), so the comparison can start every server on a copy of one
filled database; its directory comes from SELECTORKV_PEER_DB.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from rocksdict import Options, Rdict

db = Rdict(os.environ.get("SELECTORKV_PEER_DB", "./peer-data"), Options(raw_mode=True))
REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
}


def route(method: str, path: str, query: str, body: bytes) -> tuple[int, bytes]:
    """The API: GET, PUT and DELETE of /v0/entity?id=, and /v0/status."""
    key = parse_qs(query).get("id", [""])[0].encode()
    if path == "/v0/status":
        return 200, b""
    if path != "/v0/entity" or not key:
        return 400, b""
    if method == "PUT":
        db[key] = body
        return 201, b""
    if method == "GET":
        value = db.get(key)
        return (200, value) if value is not None else (404, b"")
    if method == "DELETE":
        del db[key]
        return 202, b""
    return 405, b""


async def asgi_app(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    status, out = route(scope["method"], scope["path"], scope["query_string"].decode(), body)
    headers = [(b"content-length", str(len(out)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": out})


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    status, out = route(
        environ["REQUEST_METHOD"], environ["PATH_INFO"], environ.get("QUERY_STRING", ""), body
    )
    start_response(f"{status} {REASONS[status]}", [("Content-Length", str(len(out)))])
    return [out]

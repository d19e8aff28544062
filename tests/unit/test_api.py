"""The API without sockets: routing, the id parameter, status codes, on a
real RocksDB in a temporary directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from selectorkv.http.exchange import Request
from selectorkv.kv.api import Api, entity_id, percent_decode
from selectorkv.kv.storage import RocksStorage
from tests.support import FailingStorage


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    storage = RocksStorage(str(tmp_path / "db"))
    yield Api(storage)
    storage.close()


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        (b"abc", b"abc"),
        (b"a%20b", b"a b"),
        (b"a+b", b"a+b"),
        (b"%00%ff%FF", b"\x00\xff\xff"),
        (b"%2541", b"%41"),
        (b"", b""),
    ],
)
def test_percent_decode(raw: bytes, decoded: bytes) -> None:
    assert percent_decode(raw) == decoded


@pytest.mark.parametrize("raw", [b"%", b"%4", b"%zz", b"a%g0", b"%%"])
def test_percent_decode_rejects_malformed_escapes(raw: bytes) -> None:
    assert percent_decode(raw) is None


@pytest.mark.parametrize(
    ("query", "key"),
    [
        (b"id=k1", b"k1"),
        (b"x=1&id=k%2F2&y=", b"k/2"),
        (b"id=", None),
        (b"", None),
        (b"id", None),
        (b"ids=a", None),
        (b"id=a&id=b", None),
        (b"id=%zz", None),
    ],
)
def test_entity_id(query: bytes, key: bytes | None) -> None:
    assert entity_id(query) == key


def test_put_get_delete_cycle(api: Api) -> None:
    target = b"/v0/entity?id=key"
    assert api.handle(Request(b"GET", target)).status == 404
    assert api.handle(Request(b"PUT", target, b"value")).status == 201
    got = api.handle(Request(b"GET", target))
    assert (got.status, got.body) == (200, b"value")
    assert api.handle(Request(b"PUT", target, b"")).status == 201
    assert api.handle(Request(b"GET", target)).body == b""
    assert api.handle(Request(b"DELETE", target)).status == 202
    assert api.handle(Request(b"GET", target)).status == 404
    assert api.handle(Request(b"DELETE", target)).status == 202  # absent: still 202


@pytest.mark.parametrize(
    ("method", "target", "status"),
    [
        (b"GET", b"/v0/entity", 400),
        (b"GET", b"/v0/entity?id=", 400),
        (b"PUT", b"/v0/entity?x=1", 400),
        (b"GET", b"/abracadabra", 400),
        (b"GET", b"/v0/entity/?id=a", 400),
        (b"POST", b"/v0/entity?id=a", 405),
        (b"PATCH", b"/v0/entity", 405),
        (b"GET", b"/v0/status", 200),
        (b"PUT", b"/v0/status", 405),
    ],
)
def test_status_codes(api: Api, method: bytes, target: bytes, status: int) -> None:
    assert api.handle(Request(method, target, b"")).status == status


def test_405_names_the_allowed_methods(api: Api) -> None:
    response = api.handle(Request(b"POST", b"/v0/entity?id=a"))
    assert dict(response.headers)[b"allow"] == b"GET, PUT, DELETE"


def test_binary_keys_and_values_round_trip(api: Api) -> None:
    value = bytes(range(256))
    assert api.handle(Request(b"PUT", b"/v0/entity?id=%00%FFk", value)).status == 201
    assert api.handle(Request(b"GET", b"/v0/entity?id=%00%ffk")).body == value


def test_failing_storage_gives_500_and_logs_the_cause(caplog: pytest.LogCaptureFixture) -> None:
    api = Api(FailingStorage())
    assert api.handle(Request(b"PUT", b"/v0/entity?id=a", b"v")).status == 500
    assert "disk on fire" in caplog.text

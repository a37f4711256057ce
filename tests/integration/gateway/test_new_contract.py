"""A contract the gateway has never seen is served from its annotations alone.

tests/protos/bank/gwtest/v1/shelf.proto is compiled here with grpc_tools.protoc into tmp_path,
put on ``bank``'s package path (as ``make proto`` would put it in gen/), and a fresh gateway
serves it — sub-template variables, ``**``, a custom verb, additional_bindings, body mapping and
repeated/enum/int64/nested/FieldMask/Timestamp query parameters — with no gateway change.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.routing import contract_module_names, discover_routes, load_contracts
from tests.integration.gateway.conftest import FakeBackend, auth, error_of, gateway_for, settings_for

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def shelf_pb2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    import grpc_tools
    from grpc_tools import protoc

    import bank

    out = tmp_path_factory.mktemp("gen")
    wkt = Path(grpc_tools.__file__).parent / "_proto"
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{REPO / 'tests' / 'protos'}",
            f"-I{REPO / 'proto'}",
            f"-I{REPO / 'build' / 'proto-deps'}",
            f"-I{wkt}",
            f"--python_out={out}",
            "bank/gwtest/v1/shelf.proto",
        ]
    )
    assert code == 0, "protoc failed on tests/protos/bank/gwtest/v1/shelf.proto"
    extra = str(out / "bank")
    bank.__path__.append(extra)
    try:
        yield importlib.import_module("bank.gwtest.v1.shelf_pb2")
    finally:
        bank.__path__.remove(extra)  # later gateways in this session do not see the test contract
        sys.modules.pop("bank.gwtest.v1.shelf_pb2", None)


async def test_a_new_annotated_rpc_is_served_without_gateway_changes(shelf_pb2: Any) -> None:
    assert "bank.gwtest.v1.shelf_pb2" in contract_module_names()
    routes = [r for r in discover_routes(load_contracts()) if r.capability == "gwtest"]
    assert {(r.http_method, r.template.raw) for r in routes} == {
        ("GET", "/v1/{name=shelves/*/books/*}"),
        ("GET", "/v1/books/{name=**}:lookup"),
        ("POST", "/v1/{shelf=shelves/*}/books:shelve"),
    }
    service = shelf_pb2.DESCRIPTOR.services_by_name["ShelfService"]
    backend = FakeBackend([service], validate=False)
    target = await backend.start()

    async def get_book(request: Any, context: Any) -> Any:
        return shelf_pb2.Book(name=request.name, pages=request.edition, genres=request.genres)

    backend.handlers["/bank.gwtest.v1.ShelfService/GetBook"] = get_book
    try:
        async with gateway_for(settings_for("127.0.0.1:1", backends={"gwtest": target})) as (app, client):
            query = (
                "genres=GENRE_POETRY&genres=2&tags=a&tags=b&edition=9007199254740993&filter.minPages=100"
                "&filter.in_print=true&readMask=title,publish_time&asOf=2024-05-01T00:00:00Z&minRating=4.5"
            )
            r = await client.get(f"/v1/shelves/s1/books/b2?{query}", headers=auth("products:read"))
            assert r.status_code == 200, r.text
            request = backend.calls[-1].request
            assert request.name == "shelves/s1/books/b2"
            assert list(request.genres) == [1, 2] and list(request.tags) == ["a", "b"]
            assert request.edition == 9007199254740993  # > 2^53: int64 survives as a string
            assert (request.filter.min_pages, request.filter.in_print) == (100, True)
            assert list(request.read_mask.paths) == ["title", "publish_time"]
            assert request.as_of.seconds == 1714521600 and request.min_rating == 4.5
            assert r.json() == {
                "name": "shelves/s1/books/b2",
                "title": "",
                "pages": "9007199254740993",
                "genres": ["GENRE_POETRY", "GENRE_HISTORY"],
            }

            r = await client.get("/v1/books/a/b/c:lookup", headers=auth("products:read"))
            assert r.status_code == 200 and backend.calls[-1].request.name == "a/b/c"

            r = await client.post(
                "/v1/shelves/s9/books:shelve",
                json={"title": "Tang poems", "pages": "320", "genres": ["GENRE_POETRY"]},
                headers={**auth("products:admin"), "idempotency-key": "shelve-0001"},
            )
            assert r.status_code == 200, r.text
            shelved = backend.calls[-1].request
            assert (shelved.shelf, shelved.book.title, shelved.book.pages) == ("shelves/s9", "Tang poems", 320)
            assert shelved.request_id == "shelve-0001"

            r = await client.get("/v1/shelves/s1/books/b2?genres=GENRE_NOVEL", headers=auth("products:read"))
            assert r.status_code == 400 and error_of(r)["fields"] == ["genres"]
            r = await client.post("/v1/shelves/s9/books:shelve", json={}, headers=auth("products:read"))
            assert r.status_code == 403 and "products:admin" in error_of(r)["message"]
            doc = (await client.get("/openapi.json")).json()
            assert "/v1/books/{name}:lookup" in doc["paths"] and "/v1/{shelf}/books:shelve" in doc["paths"]
            assert app.routes  # nothing about ShelfService exists in gateway/
    finally:
        await backend.stop()

"""The gateway serves the AsyncAPI document of the event registry at /asyncapi.json."""

from __future__ import annotations

from gateway.asyncapi import build_asyncapi
from gateway.routing import load_contracts

from .conftest import Stack


async def test_asyncapi_document_is_served(stack: Stack) -> None:
    r = await stack.client.get("/asyncapi.json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert doc == build_asyncapi(load_contracts())
    assert doc["asyncapi"] == "3.0.0" and "bank.customer.v1" in doc["channels"]

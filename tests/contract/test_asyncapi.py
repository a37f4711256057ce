"""The AsyncAPI 3.0 document (gateway/asyncapi.py, served at /asyncapi.json) is valid, complete and
says exactly what the event registry and the kit's envelope do."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest

from devtools import contract_docs
from devtools.contract_tools import asyncapi_schema
from services.kit.events import CONTENT_TYPE, build_record, event_spec


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return contract_docs.documents()["asyncapi.json"]


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(asyncapi_schema())


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_document_is_valid_asyncapi_3(doc: dict[str, Any], validator: jsonschema.Draft7Validator) -> None:
    assert doc["asyncapi"] == "3.0.0"
    assert [e.message for e in validator.iter_errors(doc)] == []


def test_the_validator_rejects_an_invalid_document(doc: dict[str, Any], validator: jsonschema.Draft7Validator) -> None:
    broken = copy.deepcopy(doc)
    next(iter(broken["operations"].values()))["action"] = "publish"  # AsyncAPI 2 wording, not 3.0
    assert list(validator.iter_errors(broken))


def test_every_reference_resolves(doc: dict[str, Any]) -> None:
    for ref in _refs(doc):
        assert ref.startswith("#/"), ref
        _resolve(doc, ref)


def test_channels_keys_and_ce_types_are_the_registry(doc: dict[str, Any], contracts) -> None:
    registered = {m.full_name: m for m in contracts.messages if m.GetOptions().HasExtension(contracts.options.event)}
    seen = {}
    for topic, channel in doc["channels"].items():
        assert channel["address"] == topic
        for ref in channel["messages"].values():
            message = _resolve(doc, ref["$ref"])
            seen[message["x-ce-type"]] = (topic, message["x-key-field"])
            assert message["headers"]["properties"]["ce_type"]["const"] == message["x-ce-type"]
            assert message["contentType"] == CONTENT_TYPE
    expected = {name: (event_spec(m).topic, event_spec(m).key_field) for name, m in registered.items()}
    assert seen == expected


def test_headers_are_the_ones_the_kit_writes(doc: dict[str, Any]) -> None:
    from bank.customer.v1 import events_pb2

    record = build_record(
        events_pb2.CustomerCreated(customer_id="c1", version=1),
        source="/zhongtai/customer",
        aggregate_type="customer",
        aggregate_id="c1",
        version=1,
        traceparent=f"00-{'1' * 32}-{'2' * 16}-01",
    )
    headers = doc["components"]["messages"]["bank.customer.v1.CustomerCreated"]["headers"]
    written = {k for k, _ in record.headers}
    assert written == set(headers["properties"])
    assert set(headers["required"]) <= written
    validator = jsonschema.Draft202012Validator(headers)
    assert [e.message for e in validator.iter_errors({k: v.decode() for k, v in record.headers})] == []

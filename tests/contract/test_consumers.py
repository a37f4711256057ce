"""Consumers' declarations against their own code, and recorded events against the consumer.

- What the data hub's projection reads (observed by probing its pure fold with the recorded
  example events) and the foreign enum values its code names are all declared in
  contracts/consumers/data_hub.yaml; likewise the product service's reading of
  GetEligibilityProfile in contracts/consumers/product.yaml.
- Message-pact style: the example events in contracts/examples/events were written by the
  producers' own use cases (devtools/contract_examples.py); the data hub's projection accepts
  every one of them, and re-running the producers today still writes the same shapes.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from devtools import contract_consumers, contract_examples, contract_gates
from services.data_hub import fold as hub_fold
from services.kit.events import parse_record


def declaration(consumer: str) -> dict[str, Any]:
    return next(
        d for _, d in contract_gates.declarations([("c", contract_gates.CONSUMERS)]) if d["consumer"] == consumer
    )


def covered(path: str, declared: list[str]) -> bool:
    """A declared message field covers its sub-fields (``transaction.amount`` ⊇ ``.units``)."""
    return any(path == d or path.startswith(d + ".") for d in declared)


@pytest.fixture(scope="module")
def examples() -> list[dict[str, Any]]:
    found = contract_examples.load()
    assert found, "no recorded events: run `make contract-examples`"
    return found


def undeclared(events: dict[str, Any], observed: dict[str, set[str]]) -> dict[str, list[str]]:
    out = {
        ce_type: sorted(p for p in paths if not covered(p, events.get(ce_type, {}).get("fields", [])))
        for ce_type, paths in observed.items()
    }
    return {k: v for k, v in out.items() if v}


@pytest.fixture(scope="module")
def hub_reads(examples: list[dict[str, Any]]) -> dict[str, set[str]]:
    return contract_consumers.data_hub_reads(examples)


def test_every_field_the_data_hub_reads_is_declared(hub_reads: dict[str, set[str]]) -> None:
    events = declaration("data_hub")["events"]
    assert undeclared(events, hub_reads) == {}, "declare these in contracts/consumers/data_hub.yaml"
    assert set(hub_reads) == set(events), "declared event types vs event types the fold reads"


def test_a_declaration_missing_a_read_field_is_caught_and_an_extra_one_is_not(hub_reads: dict[str, set[str]]) -> None:
    events = copy.deepcopy(declaration("data_hub")["events"])
    posted = events["bank.product.v1.TransactionPosted"]
    posted["fields"].remove("transaction.amount")
    missing = undeclared(events, hub_reads)
    assert list(missing) == ["bank.product.v1.TransactionPosted"]
    assert "transaction.amount.units" in missing["bank.product.v1.TransactionPosted"]
    posted["fields"] += ["transaction.amount", "transaction.description"]  # declared, never read: fine
    assert undeclared(events, hub_reads) == {}


def test_every_foreign_enum_value_a_consumer_names_is_declared() -> None:
    for consumer in contract_consumers.CONSUMER_PACKAGES:
        enums = declaration(consumer).get("enums") or {}
        for value, candidates in contract_consumers.enum_reads(consumer).items():
            assert any(value in enums.get(e, {}) for e in candidates), f"{consumer}: declare {value} (of {candidates})"


def test_every_response_field_the_product_service_reads_is_declared() -> None:
    rpcs = declaration("product")["rpcs"]
    for rpc, paths in contract_consumers.product_reads().items():
        declared = rpcs[rpc]["fields"]
        assert sorted(p for p in paths if not covered(p, declared)) == [], f"declare them under {rpc}"


def test_every_field_the_product_replica_reads_is_declared(examples: list[dict[str, Any]]) -> None:
    """The product's eligibility replica (ADR 0054) probed like the hub's fold: its projection's
    ``fold`` over every recorded customer event, each set field cleared in turn."""
    import dataclasses

    from services.product.replica import EligibilityReplica

    replica = EligibilityReplica()
    reads: dict[str, set[str]] = {}
    for example in examples:
        event = contract_examples.to_event(example)
        if event.topic != "bank.customer.v1":
            continue

        def read(message: Any, _event: Any = event) -> Any:
            return replica.fold([dataclasses.replace(_event, message=message)])

        reads.setdefault(event.type, set()).update(contract_consumers.probe(read, event.message))
    events = declaration("product")["events"]
    assert reads and undeclared(events, reads) == {}, "declare these in contracts/consumers/product.yaml"
    assert set(reads) == set(events), "declared event types vs the customer event types recorded"
    assert "customer.birth_year" in reads["bank.customer.v1.CustomerCreated"]
    assert all("national_id" not in p and "masked" not in p for paths in reads.values() for p in paths)


def test_the_probe_sees_a_field_the_fold_reads_and_not_one_it_ignores(hub_reads: dict[str, set[str]]) -> None:
    """The probe itself: the transaction amount changes the fold's result, the blind index does not."""
    reads = hub_reads
    assert "transaction.amount.units" in reads["bank.product.v1.TransactionPosted"]
    assert all("national_id_blind_index" not in p for paths in reads.values() for p in paths)


def test_the_data_hub_projection_accepts_every_recorded_event(examples: list[dict[str, Any]]) -> None:
    events = [contract_examples.to_event(e, offset=n) for n, e in enumerate(examples)]
    patches = hub_fold.fold(events)
    assert patches.events == len(events)  # none ignored as unknown
    changes = hub_fold.changes(patches, hub_fold.Current())
    by_id = {row["customer_id"]: row for row in changes.customer_inserts}
    last_status = {e.subject: e.message.customer.status for e in events if e.topic == "bank.customer.v1"}
    assert {cid: by_id[cid]["status"] for cid in last_status} == last_status
    direction = hub_fold.TRANSACTION_COLUMNS.index("direction")
    directions = sorted(t[direction] for t in changes.transaction_inserts)
    assert len(directions) == sum(e.type.endswith("TransactionPosted") for e in events)
    assert [p["state"] for p in changes.product_inserts] == [events[-1].message.product.state]
    (holding,) = changes.holding_inserts
    assert holding["close_us"] is not None  # the recorded subscription was closed


def test_every_declared_event_type_has_a_recorded_example(examples: list[dict[str, Any]]) -> None:
    recorded = {e["headers"]["ce_type"] for e in examples}
    assert set(declaration("data_hub")["events"]) <= recorded


def _shape(example: dict[str, Any]) -> tuple[Any, ...]:
    event = parse_record([(k, v.encode()) for k, v in example["headers"].items()], b"")
    message = contract_examples.to_event(example).message
    return (
        example["topic"],
        event.type,
        event.source,
        event.aggregate_type,
        tuple(sorted(example["headers"])),
        example["key"] == event.subject,
        tuple(sorted(contract_consumers.leaf_paths(message))),
    )


def test_recordings_match_what_the_producers_write_today(examples: list[dict[str, Any]]) -> None:
    fresh = contract_examples.record()
    assert [_shape(e) for e in fresh] == [_shape(e) for e in examples], (
        "the producers now write other events: re-record them with `make contract-examples` and review the diff"
    )

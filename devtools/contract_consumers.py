"""What each consumer really reads, observed from its own code (to verify its declaration).

A consumer declares what it reads in ``contracts/consumers/<consumer>.yaml`` (events with their
topic, key and field paths; enum values by name and number; RPC response fields). This module
finds what the code reads, so the declaration can be checked (``tests/contract/
test_consumers.py``) and drafted (``python -m devtools.contract_consumers data_hub``):

- **fields, by probing**: the consumer's pure reading function runs on a recorded example
  (``contracts/examples/events``, written by the producers' own code), then again once per set
  leaf field with that field cleared; a field whose clearing changes the result (or makes it
  raise) is read. The data hub's is ``services.data_hub.fold.fold`` (the projection's whole
  reading of an event); the product service's is the conversion of ``GetEligibilityProfile``'s
  response (``services.product.customers._profile``). A field read only as a fallback of
  another (``msg.customer_id or snap.customer_id``) is not observed alone: declare it anyway.
- **enum values, by reading the source**: every ``X.VALUE`` attribute in the consumer's
  package (and the shared ``services/policy`` it imports) naming a value of another
  capability's enum.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from devtools import contract_examples, contract_gates

REPO = Path(__file__).resolve().parents[1]
# Well-known messages read as one value (a time), not field by field.
_ATOMIC = {"google.protobuf.Timestamp", "google.protobuf.Duration"}
CONSUMER_PACKAGES = {"data_hub": "bank.datahub.v1", "product": "bank.product.v1"}
# The code of each consumer: its package and the shared policies it imports (services/policy).
CONSUMER_SOURCES = {
    "data_hub": ("services/data_hub", "services/policy"),
    "product": ("services/product", "services/policy"),
}


def leaf_paths(message: Message, prefix: str = "") -> Iterator[str]:
    """Dotted paths of the set leaves of ``message`` (repeated fields and times count as leaves)."""
    for fd, value in message.ListFields():
        path = f"{prefix}{fd.name}"
        atomic = fd.message_type is None or fd.message_type.full_name in _ATOMIC
        if fd.type == FieldDescriptor.TYPE_MESSAGE and not fd.is_repeated and not atomic:
            yield from leaf_paths(value, path + ".")
        else:
            yield path


def without(message: Message, path: str) -> Message:
    """A copy of ``message`` with the field at ``path`` cleared."""
    out = copy.deepcopy(message)
    *parents, last = path.split(".")
    target: Any = out
    for part in parents:
        target = getattr(target, part)
    target.ClearField(last)
    return out


def _outcome(read: Callable[[Message], Any], message: Message) -> Any:
    try:
        return ("ok", read(message))
    except Exception as exc:  # a refusal is an observable read too
        return ("raised", type(exc).__name__)


def probe(read: Callable[[Message], Any], message: Message) -> set[str]:
    """The leaf paths of ``message`` whose clearing changes what ``read`` returns."""
    base = _outcome(read, message)
    return {path for path in leaf_paths(message) if _outcome(read, without(message, path)) != base}


def data_hub_reads(examples: Iterable[dict[str, Any]]) -> dict[str, set[str]]:
    """ce_type → field paths the data hub's fold reads, over every recorded example."""
    from services.data_hub.fold import fold

    reads: dict[str, set[str]] = {}
    for example in examples:
        event = contract_examples.to_event(example)

        def read(message: Message, _event: Any = event) -> Any:
            return fold([dataclasses.replace(_event, message=message)])

        reads.setdefault(event.type, set()).update(probe(read, event.message))
    return reads


def product_reads() -> dict[str, set[str]]:
    """RPC → response field paths the product service reads of the customer service."""
    from google.protobuf import timestamp_pb2

    from bank.customer.v1 import customer_pb2
    from services.product.customers import _profile, _profiles

    full = customer_pb2.EligibilityProfile(
        customer_id="C-1",
        status=customer_pb2.Customer.STATUS_ACTIVE,
        kyc_verified=True,
        age_years=40,
        risk_tolerance=customer_pb2.RISK_TOLERANCE_C3,
        risk_tolerance_expire_time=timestamp_pb2.Timestamp(seconds=2_000_000_000),
        version=7,
    )
    read: Callable[[Any], Any] = _profile
    read_batch: Callable[[Any], Any] = _profiles
    batch = customer_pb2.BatchGetEligibilityProfilesResponse(profiles=[full], missing_customer_ids=["C-2"])
    return {
        "bank.customer.v1.CustomerService.GetEligibilityProfile": probe(read, full),
        "bank.customer.v1.CustomerService.BatchGetEligibilityProfiles": probe(read_batch, batch),
    }


def _foreign_enums(own_package: str) -> dict[str, list[EnumDescriptor]]:
    """value name → the enums of *other* capabilities that have a value of that name."""
    import bank.customer.v1.customer_pb2
    import bank.product.v1.product_pb2  # noqa: F401

    pool = descriptor_pool.Default()
    out: dict[str, list[EnumDescriptor]] = {}
    for package in contract_gates.OWNERS:
        if package == own_package:
            continue
        for file_name in ("customer", "events", "product", "datahub"):
            path = f"{package.replace('.', '/')}/{file_name}.proto"
            try:
                file = pool.FindFileByName(path)
            except KeyError:
                continue
            enums = list(file.enum_types_by_name.values())
            stack = list(file.message_types_by_name.values())
            while stack:
                message = stack.pop()
                enums.extend(message.enum_types)
                stack.extend(message.nested_types)
            for enum in enums:
                for value in enum.values:
                    if value.number != 0:
                        out.setdefault(value.name, []).append(enum)
    return out


def enum_reads(consumer: str) -> dict[str, set[str]]:
    """value name → names of the candidate enums, for each foreign enum value the code names."""
    foreign = _foreign_enums(CONSUMER_PACKAGES[consumer])
    found: dict[str, set[str]] = {}
    for path in sorted(p for root in CONSUMER_SOURCES[consumer] for p in (REPO / root).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in foreign:
                found.setdefault(node.attr, set()).update(e.full_name for e in foreign[node.attr])
    return found


def suggest(consumer: str) -> dict[str, Any]:
    """A draft declaration from what the code is observed to read (review before committing)."""
    from services.kit.events import event_spec

    pool = descriptor_pool.Default()
    decl: dict[str, Any] = {"consumer": consumer}
    if consumer == "data_hub":
        events = {}
        for ce_type, paths in sorted(data_hub_reads(contract_examples.load()).items()):
            spec = event_spec(pool.FindMessageTypeByName(ce_type))
            events[ce_type] = {"topic": spec.topic, "key": spec.key_field, "fields": sorted(paths)}
        decl["events"] = events
    else:
        decl["rpcs"] = {rpc: {"fields": sorted(paths)} for rpc, paths in product_reads().items()}
    enums: dict[str, dict[str, int]] = {}
    for value, candidates in sorted(enum_reads(consumer).items()):
        for enum_name in sorted(candidates):
            enum = pool.FindEnumTypeByName(enum_name)
            enums.setdefault(enum_name, {})[value] = enum.values_by_name[value].number
    decl["enums"] = enums
    return decl


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0] not in CONSUMER_PACKAGES:
        print(f"usage: python -m devtools.contract_consumers {{{','.join(CONSUMER_PACKAGES)}}}", file=sys.stderr)
        return 2
    print(yaml.safe_dump(suggest(args[0]), sort_keys=False, allow_unicode=True), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

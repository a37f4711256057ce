"""protovalidate (buf.validate) constraints from the contract, enforced on every request.

The rules are evaluated by protovalidate 2.x, a native extension: the first validation of a message
type compiles its rules (milliseconds), later ones cost microseconds (docs/perf/validation.md).
One validator is shared by the process; it validates ``google.protobuf`` messages in place.

What channel apps see is each violation's field path (``customer.full_name``, ``items[2]``,
``labels['k']``; the message's own name for a message-level rule) and the library's message.
Rule errors (a rule that does not compile, or fails while evaluated) are raised, not reported as
violations: they are contract bugs, not bad requests.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import protovalidate
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message

from services.kit.errors import FieldViolation, InvalidArgument

_VALIDATOR = protovalidate.Validator()


def _path(violation: Any) -> str:
    """A protovalidate violation's field path: ``customer.full_name``, ``items[2]``, ``m['k']``."""
    field = violation.proto.field
    if field is None:
        return ""
    parts: list[str] = []
    for element in field.elements:
        name = element.field_name
        subscript = element.subscript  # a protobuf-py Oneof(field, value), or None
        if subscript is not None:
            name += f"[{subscript.value}]" if subscript.field == "index" else f"[{subscript.value!r}]"
        parts.append(name)
    return ".".join(parts)


def collect(message: Message) -> list[tuple[str, str, str]]:
    """Every violation of ``message`` as (field path, rule id, message), in protovalidate's order."""
    return [(_path(v), v.proto.rule_id, v.proto.message) for v in _VALIDATOR.collect_violations(message)]


def violations_of(message: Message) -> list[FieldViolation]:
    """Every constraint the message breaks, as (field path, description)."""
    name = message.DESCRIPTOR.name
    return [FieldViolation(path or name, text) for path, _rule_id, text in collect(message)]


def validate_request(message: Message) -> None:
    """Raise INVALID_ARGUMENT naming every offending field."""
    found = violations_of(message)
    if found:
        summary = "; ".join(f"{v.field}: {v.description}" for v in found[:5])
        raise InvalidArgument(f"invalid request: {summary}", reason="INVALID_FIELDS", violations=found)


def warm_up(service_names: Iterable[str]) -> int:
    """Compile the rules of every request type of these gRPC services now (at start-up), so the
    first request of each method does not pay it (~10-15 ms each, blocking the event loop).
    Returns how many request types were compiled."""
    pool = descriptor_pool.Default()
    seen: set[str] = set()
    for name in service_names:
        for method in pool.FindServiceByName(name).methods:
            if method.input_type.full_name not in seen:
                seen.add(method.input_type.full_name)
                _VALIDATOR.collect_violations(message_factory.GetMessageClass(method.input_type)())
    return len(seen)

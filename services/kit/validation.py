"""protovalidate (buf.validate) constraints from the contract, enforced on every request.

The rules are evaluated by protovalidate 2.x, a native extension: the first validation of a message
type compiles its rules (milliseconds), later ones cost microseconds (docs/perf/validation.md).
One validator is shared by the process; it validates ``google.protobuf`` messages in place.

What callers see (:func:`violations_of`, AIP-193) is each violation's field path in proto names
(``customer.full_name``, ``items[2]``, ``labels['k']``; the message's own name for a message-level
rule), a description, and the rule id as the violation's ``reason`` in UPPER_SNAKE_CASE
(``string.min_len`` → ``STRING_MIN_LEN``). Two conventions make them usable by a form:

- A CEL rule that checks a *child* field (presence on create, "cannot be cleared" on update) is
  given the id ``<field path from the request>.<rule>``, e.g. ``customer.full_name.required`` on
  the ``customer`` field or on the request message: the violation is reported on that field
  (``customer.full_name``) with the last part as its reason (``REQUIRED``).
- An enum left unset where ``not_in: [0]`` makes it required says so and lists the allowed
  values (``is required: one of OUTCOME_APPROVED, OUTCOME_REJECTED``, reason ``REQUIRED``);
  other enum set rules list the allowed names instead of numbers.

:func:`collect` keeps the library's raw answer (path, rule id, message).
Rule errors (a rule that does not compile, or fails while evaluated) are raised, not reported as
violations: they are contract bugs, not bad requests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import protovalidate
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
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
    """Every constraint the message breaks, as (field path, description, reason)."""
    desc: Any = message.DESCRIPTOR  # protobuf's upb descriptor type; read like descriptor.Descriptor
    return [_describe(desc, v) for v in _VALIDATOR.collect_violations(message)]


def _reason(rule_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", rule_id).strip("_").upper()[:63]


def _field_at(desc: Descriptor, dotted: str) -> FieldDescriptor | None:
    """The field a dotted proto path (subscripts allowed) ends on, or None."""
    current: Descriptor | None = desc
    fd: FieldDescriptor | None = None
    for part in dotted.split("."):
        if current is None:
            return None
        fd = current.fields_by_name.get(part.split("[", 1)[0])
        if fd is None:
            return None
        current = fd.message_type
        if current is not None and current.GetOptions().map_entry and "[" in part:
            current = current.fields_by_name["value"].message_type
    return fd


def _describe(desc: Descriptor, violation: Any) -> FieldViolation:
    path = _path(violation)
    proto = violation.proto
    rule_id: str = proto.rule_id
    rule = proto.rule.elements if proto.rule is not None else ()  # None: a message-level rule
    if (not rule or rule[0].field_name == "cel") and "." in rule_id:
        target, _, last = rule_id.rpartition(".")
        below = not path or target.startswith(path + ".")
        if below and target != path and _field_at(desc, target) is not None:
            return FieldViolation(target, proto.message, _reason(last))
    if rule_id in ("enum.not_in", "enum.in", "enum.defined_only"):
        fd = _field_at(desc, path)
        if fd is not None and fd.enum_type is not None:
            return _enum_violation(path, fd, rule_id, violation)
    if rule_id == "required":
        return FieldViolation(path, "is required", "REQUIRED")
    return FieldViolation(path or desc.name, proto.message, _reason(rule_id))


def _enum_violation(path: str, fd: FieldDescriptor, rule_id: str, violation: Any) -> FieldViolation:
    """ "is required: one of A, B" instead of "must not be in list [0]"."""
    numbers = set(violation.rule_value) if isinstance(violation.rule_value, Iterable) else set()
    values = [v for v in fd.enum_type.values if v.number != 0] if fd.enum_type is not None else []
    if rule_id == "enum.not_in":
        values = [v for v in values if v.number not in numbers]
    elif rule_id == "enum.in":
        values = [v for v in values if v.number in numbers]
    allowed = ", ".join(v.name for v in values)
    if violation.field_value in (0, None) and rule_id != "enum.defined_only":
        return FieldViolation(path, f"is required: one of {allowed}", "REQUIRED")
    return FieldViolation(path, f"must be one of {allowed}", _reason(rule_id))


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

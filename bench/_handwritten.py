"""Hand-written code the platform replaced with well-kept libraries, kept here only so that
``bench/libraries.py`` can re-measure the decision (docs/perf/libraries.md). Not used at runtime.

- ``handwritten_record``: the CloudEvents binary-mode headers written directly (the kit's
  ``build_record`` until 2026-12-06; it now goes through the cloudevents SDK).
- ``plan_to_dict``: the gateway's response printing plan (``gateway.transcode`` until
  2026-12-06; it now calls ``json_format.MessageToDict``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from functools import partial
from typing import Any

from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from gateway.transcode import _INT_TYPES, _WKT_PREFIX, _is_map  # the gateway's own type tables
from services.kit.events import KafkaRecord, event_spec, value_at


def _ce_time(when: datetime) -> bytes:
    text = when.isoformat()
    return (text[:-6] + "Z" if text.endswith("+00:00") else text).encode()


def handwritten_record(
    payload: Message, *, source: str, aggregate_type: str, aggregate_id: str, version: int,
    event_id: str | None = None, time: datetime | None = None, traceparent: str | None = None,
) -> KafkaRecord:  # fmt: skip
    spec = event_spec(payload.DESCRIPTOR)
    key = str(value_at(payload, spec.key_field))
    event_id = event_id or str(uuid.uuid4())
    event_type = payload.DESCRIPTOR.full_name
    when = time or datetime.now(UTC)
    if not source or not key or not event_type:
        raise ValueError("CloudEvents attributes must not be empty")
    if when.tzinfo is None:
        raise ValueError("CloudEvents attribute 'time' must be timezone aware")
    headers = [
        ("ce_id", event_id.encode()), ("ce_source", source.encode()), ("ce_type", event_type.encode()),
        ("ce_subject", key.encode()), ("ce_time", _ce_time(when)), ("content-type", b"application/protobuf"),
        ("ce_aggregatetype", aggregate_type.encode()), ("ce_aggregateid", aggregate_id.encode()),
        ("ce_aggregateversion", str(version).encode()), ("ce_specversion", b"1.0"),
    ]  # fmt: skip
    if traceparent:
        headers.append(("traceparent", traceparent.encode()))
    return KafkaRecord(spec.topic, key.encode(), payload.SerializeToString(), headers, event_id, event_type)


# ``json_format.MessageToDict`` walks descriptors in pure Python on every call (~50-80 µs for a
# small message). Responses are printed with a plan per message type instead, built once from
# the descriptor, that reproduces MessageToDict(always_print_fields_with_no_presence=True)
# exactly (same values, same key order; tests/unit/gateway/test_transcode.py compares the two
# over every response type of the contracts). The plan covers strings, bools, integers
# (64-bit ones as strings), open enums, nested messages and repeated fields of those; a message
# type with any other kind of field (bytes, floats, maps, closed enums, NullValue), and every
# well-known type, is printed by json_format itself.

_PRINT_OPTIONS: dict[str, Any] = {"always_print_fields_with_no_presence": True}
_SIMPLE_SCALARS = _INT_TYPES | {FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BOOL, FieldDescriptor.TYPE_ENUM}
_INT64_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64,
    }
)  # fmt: skip
_NEW_LIST = object()


def _json_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, **_PRINT_OPTIONS)


class _Plan:
    """How to print one message type: per field (json name, value converter, repeated), and
    the values printed for unset fields without presence (in descriptor order)."""

    __slots__ = ("defaults", "fields")

    def __init__(self) -> None:
        self.fields: dict[FieldDescriptor, tuple[str, Any, bool]] = {}
        self.defaults: tuple[tuple[str, Any], ...] = ()


def _print(plan: _Plan, message: Message) -> dict[str, Any]:
    js: dict[str, Any] = {}
    fields = plan.fields
    for fd, value in message.ListFields():
        entry = fields.get(fd)
        if entry is None:  # an extension, or anything the plan did not foresee
            return _json_dict(message)
        name, convert, repeated = entry
        if repeated:
            js[name] = [convert(v) for v in value] if convert is not None else list(value)
        else:
            js[name] = convert(value) if convert is not None else value
    for name, default in plan.defaults:
        if name not in js:
            js[name] = [] if default is _NEW_LIST else default
    return js


def _enum_names(desc: Descriptor, fd: FieldDescriptor, enum: EnumDescriptor) -> dict[int, Any]:
    """What json_format prints for each defined value of an enum field (honours JSON names)."""
    cls = message_factory.GetMessageClass(desc)
    names: dict[int, Any] = {}
    for value in enum.values:
        sample = cls()
        if fd.is_repeated:
            getattr(sample, fd.name).append(value.number)
        else:
            setattr(sample, fd.name, value.number)
        printed = _json_dict(sample)[fd.json_name]
        names[value.number] = printed[0] if fd.is_repeated else printed
    return names


def _build_plan(desc: Descriptor, plans: dict[Descriptor, _Plan | None]) -> _Plan | None:
    if desc in plans:
        return plans[desc]
    if desc.full_name.startswith(_WKT_PREFIX) or desc.GetOptions().map_entry:
        plans[desc] = None
        return None
    plan = _Plan()
    plans[desc] = plan  # before the fields: recursive message types refer to it
    for fd in desc.fields:
        convert: Any = None
        message, enum = fd.message_type, fd.enum_type
        if fd.type == FieldDescriptor.TYPE_MESSAGE and message is not None:
            if _is_map(fd):
                plans[desc] = None
                return None
            sub = _build_plan(message, plans)
            convert = _json_dict if sub is None else partial(_print, sub)
        elif fd.type not in _SIMPLE_SCALARS:
            plans[desc] = None
            return None
        elif fd.type == FieldDescriptor.TYPE_ENUM:
            if enum is None or enum.is_closed or enum.full_name == "google.protobuf.NullValue":
                plans[desc] = None
                return None
            names = _enum_names(desc, fd, enum)
            convert = partial(_enum_name, names)
        elif fd.type in _INT64_TYPES:
            convert = str
        plan.fields[fd] = (fd.json_name, convert, fd.is_repeated)
    empty = _json_dict(message_factory.GetMessageClass(desc)())
    plan.defaults = tuple(
        (fd.json_name, _NEW_LIST if fd.is_repeated else empty[fd.json_name])
        for fd in desc.fields
        if not fd.has_presence
    )
    return plan


def _enum_name(names: dict[int, Any], number: int) -> Any:
    return names.get(number, number)  # an open enum's unknown number prints as the number


_PLANS: dict[Any, _Plan | None] = {}  # by Descriptor


def plan_to_dict(message: Message) -> dict[str, Any]:
    """``json_format.MessageToDict(message, always_print_fields_with_no_presence=True)``, faster."""
    desc: Any = message.DESCRIPTOR
    try:
        plan = _PLANS[desc]
    except KeyError:
        plan = _build_plan(desc, _PLANS)
    return _json_dict(message) if plan is None else _print(plan, message)

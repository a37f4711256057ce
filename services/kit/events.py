"""The event envelope: CloudEvents 1.0 in Kafka binary mode with a protobuf payload.

Headers: ``ce_specversion``, ``ce_id``, ``ce_source``, ``ce_type`` (the full proto message name),
``ce_subject`` (the customer id), ``ce_time``, the extensions ``ce_aggregatetype``,
``ce_aggregateid`` and ``ce_aggregateversion`` (a per-aggregate version), ``content-type:
application/protobuf`` and the W3C ``traceparent``. Which topic and key an event goes to is
read from the ``(bank.api.v1.event)`` option of its message: the one registry.
"""

from __future__ import annotations

import importlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.exceptions import CloudEventValidationError
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import DecodeError, Message

CONTENT_TYPE = "application/protobuf"
_CONTENT_TYPE_BYTES = CONTENT_TYPE.encode()
_FORMAT = JSONFormat()  # (binary mode: it passes bytes data through unchanged)

#: Topics of the platform (ARCHITECTURE §5); the view topic is compacted.
TOPIC_CUSTOMER = "bank.customer.v1"
TOPIC_PRODUCT = "bank.product.v1"
TOPIC_SUBSCRIPTION = "bank.subscription.v1"
TOPIC_CUSTOMER_VIEW = "bank.customer-view.v1"
TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    TOPIC_CUSTOMER: {},
    TOPIC_PRODUCT: {},
    TOPIC_SUBSCRIPTION: {},
    TOPIC_CUSTOMER_VIEW: {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"},
}


class PoisonEvent(Exception):
    """A record that can never be applied (bad envelope or undecodable payload)."""


@dataclass(frozen=True)
class EventSpec:
    """Where an event goes: its topic, and the dotted path of its key in the payload."""

    topic: str
    key_field: str


def source_of(service: str) -> str:
    """The CloudEvents ``source`` of everything a service publishes: one format for every
    capability, a URI-reference ``/zhongtai/<service>`` (e.g. ``/zhongtai/customer``)."""
    if not service or "/" in service:
        raise ValueError(f"a service name, not {service!r}")
    return f"/zhongtai/{service}"


@lru_cache(maxsize=256)
def event_spec(descriptor: Descriptor) -> EventSpec:
    options_pb2 = importlib.import_module("bank.api.v1.options_pb2")
    opts = descriptor.GetOptions()
    if not opts.HasExtension(options_pb2.event):
        raise ValueError(f"{descriptor.full_name} has no (bank.api.v1.event) option")
    spec = opts.Extensions[options_pb2.event]
    return EventSpec(spec.topic, spec.key_field)


def value_at(message: Message, dotted: str) -> Any:
    value: Any = message
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


@dataclass(frozen=True)
class KafkaRecord:
    """What a producer sends: topic, key, value and binary-mode headers."""

    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    event_id: str
    event_type: str


@dataclass(frozen=True, slots=True)
class EncodedPayload:
    """A payload the caller holds encoded, for :func:`build_record` to wrap as it is, without
    parsing and serializing it again: ``data``, a message of type ``descriptor`` whose key field
    (the contract's ``key_field``) is ``key`` — e.g. a document stored encoded with fields
    appended to it (protobuf parses concatenated encodings as one message)."""

    descriptor: Descriptor
    key: str
    data: bytes


def build_record(
    payload: Message | EncodedPayload,
    *,
    source: str,
    aggregate_type: str,
    aggregate_id: str,
    version: int,
    subject: str | None = None,
    event_id: str | None = None,
    time: datetime | None = None,
    traceparent: str | None = None,
) -> KafkaRecord:
    """Wrap a payload message (or :class:`EncodedPayload`) in the envelope; topic and key come
    from the contract.

    The CloudEvents attributes go through the cloudevents SDK (its ``CloudEvent`` checks them:
    non-empty id, source, type and subject, a timezone-aware time; its Kafka binding writes the
    ``ce_*`` headers): ~13 µs more than writing the headers by hand, under 1 % of a write RPC
    (``bench/libraries.py``, docs/perf/libraries.md). The W3C ``traceparent`` is a plain header,
    not a CloudEvents attribute.
    """
    if isinstance(payload, EncodedPayload):
        descriptor, spec = payload.descriptor, event_spec(payload.descriptor)
        key, data = payload.key, payload.data
    else:
        descriptor = payload.DESCRIPTOR  # type: ignore[assignment]  # (upb's Descriptor: the same API)
        spec = event_spec(descriptor)
        key, data = str(value_at(payload, spec.key_field)), payload.SerializeToString()
    event_id = event_id or str(uuid.uuid4())
    event_type = descriptor.full_name
    attributes = {
        "id": event_id,
        "source": source,
        "type": event_type,
        "subject": subject or key,
        "time": time or datetime.now(UTC),
        "datacontenttype": CONTENT_TYPE,
        "aggregatetype": aggregate_type,
        "aggregateid": aggregate_id,
        "aggregateversion": str(version),
    }
    try:
        message = ce_kafka.to_binary(CloudEvent(attributes=attributes, data=data), _FORMAT)
    except CloudEventValidationError as exc:
        raise ValueError(f"invalid CloudEvents attributes for {event_type}: {exc}") from exc
    headers = list(message.headers.items())
    if traceparent:
        headers.append(("traceparent", traceparent.encode()))
    return KafkaRecord(spec.topic, key.encode(), message.value, headers, event_id, event_type)


@dataclass(slots=True)
class ReceivedEvent:
    """A decoded record: envelope attributes plus the payload message.

    Treat it as read-only. (Not ``frozen``: a frozen dataclass's ``__init__`` sets each field
    through ``object.__setattr__``, which doubled the decode cost on every consumer's hot path.)
    """

    id: str
    type: str
    source: str
    subject: str
    time: datetime
    aggregate_type: str
    aggregate_id: str
    version: int
    message: Message
    topic: str = ""
    partition: int = 0
    offset: int = 0
    headers: dict[str, bytes] = field(default_factory=dict)

    @property
    def traceparent(self) -> str | None:
        raw = self.headers.get("traceparent")
        return raw.decode() if raw else None


_MESSAGE_CLASSES: dict[str, type[Message]] = {}


def _message_class(type_name: str) -> type[Message]:
    """The generated class of a full proto message name (KeyError when unknown), cached."""
    cls = _MESSAGE_CLASSES.get(type_name)
    if cls is None:
        cls = message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(type_name))
        _MESSAGE_CLASSES[type_name] = cls
    return cls


def parse_record(
    headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...],
    value: bytes | None,
    *,
    key: bytes | None = None,
    topic: str = "",
    partition: int = 0,
    offset: int = 0,
) -> ReceivedEvent:
    """Decode a binary-mode record; raise :class:`PoisonEvent` when it can never be applied.

    Like :func:`build_record` on the writing side, reading is on a hot path (every consumer's),
    so it decodes the few binary-mode headers directly (the SDK's generic
    parser cost ~130 µs an event) and checks what the SDK would: spec version 1.0, the required
    attributes, the content type, a parsable time.
    """
    header_map = dict(headers)
    get = header_map.get
    try:
        spec = get("ce_specversion")
        if spec != b"1.0":
            shown = spec.decode() if spec is not None else None
            raise PoisonEvent(f"not a CloudEvents 1.0 record (ce_specversion={shown!r})")
        raw_id, raw_source, raw_type = get("ce_id"), get("ce_source"), get("ce_type")
        if not (raw_id and raw_source and raw_type):
            missing = [f"ce_{n}" for n, v in (("id", raw_id), ("source", raw_source), ("type", raw_type)) if not v]
            raise PoisonEvent(f"missing CloudEvents attributes: {', '.join(missing)}")
        content_type = get("content-type")
        if content_type is not None and content_type != _CONTENT_TYPE_BYTES:
            raise PoisonEvent(f"unsupported content-type {content_type.decode()!r}")
        type_name = raw_type.decode()
        message = _message_class(type_name).FromString(value or b"")
        raw_version = get("ce_aggregateversion")
        version = int(raw_version) if raw_version else 0
        raw_time = get("ce_time")
        when = datetime.fromisoformat(raw_time.decode()) if raw_time else datetime.now(UTC)
        event_id, source = raw_id.decode(), raw_source.decode()
        subject, agg_type, agg_id = get("ce_subject"), get("ce_aggregatetype"), get("ce_aggregateid")
        subject_s = subject.decode() if subject else ""
        agg_type_s = agg_type.decode() if agg_type else ""
        agg_id_s = agg_id.decode() if agg_id else ""
    except PoisonEvent:
        raise
    except (KeyError, ValueError, TypeError, DecodeError, AttributeError, UnicodeDecodeError) as exc:
        raise PoisonEvent(f"undecodable event: {type(exc).__name__}: {exc}") from exc
    # (positional: a slots dataclass's __init__ took ~0.9 µs by keyword, ~0.35 so)
    return ReceivedEvent(
        event_id, type_name, source, subject_s, when, agg_type_s, agg_id_s, version, message, topic, partition,
        offset, header_map,
    )  # fmt: skip

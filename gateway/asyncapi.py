"""AsyncAPI 3.0 from the event registry: the ``(bank.api.v1.event)`` option of each event message.

One channel per Kafka topic (its address, the topic configuration of ``services.kit``), one
message per event type with its CloudEvents binary-mode headers (``ce_type`` pinned to the full
proto message name), its Kafka key (the option's ``key_field``) and a payload schema derived
from the proto like the OpenAPI schemas are (proto3 JSON names and types; on the wire the
payload is binary protobuf, ``contentType: application/protobuf``, and ``x-proto-message``
names the message to decode it with). One ``send`` operation per topic, by its producer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf.descriptor import Descriptor, FileDescriptor

from bank.api.v1 import options_pb2
from gateway.openapi import _Schemas
from services.kit.events import CONTENT_TYPE, TOPIC_CONFIGS

ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING_VERSION = "0.5.0"
# Producers of each proto package (the CloudEvents ``source`` is ``/zhongtai/<service>``).
PRODUCERS = {"bank.customer.v1": "customer", "bank.product.v1": "product", "bank.datahub.v1": "data_hub"}

_HEADER_DOCS = {
    "ce_specversion": ("CloudEvents spec version", {"const": "1.0"}),
    "ce_id": ("unique event id (UUID); consumers deduplicate on it", {}),
    "ce_source": ("producing service, /zhongtai/<service>", {"pattern": "^/zhongtai/[a-z_]+$"}),
    "ce_subject": ("the aggregate the event is about (the Kafka key)", {}),
    "ce_time": ("when the event was written, RFC 3339", {"format": "date-time"}),
    "content-type": ("payload encoding", {"const": CONTENT_TYPE}),
    "ce_aggregatetype": ("aggregate type (e.g. customer, subscription)", {}),
    "ce_aggregateid": ("aggregate id", {}),
    "ce_aggregateversion": ("per-aggregate version; stale versions are no-ops", {"pattern": "^[0-9]+$"}),
}
_REQUIRED_HEADERS = ["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_subject", "ce_time", "content-type"]


def event_messages(files: Iterable[FileDescriptor]) -> list[Descriptor]:
    """Every message carrying the ``(bank.api.v1.event)`` option (top-level, in file order)."""
    unique = {file.name: file for file in files}
    return [
        message
        for file in unique.values()
        for message in file.message_types_by_name.values()
        if message.GetOptions().HasExtension(options_pb2.event)
    ]


def _headers(event_type: str) -> dict[str, Any]:
    properties: dict[str, Any] = {
        name: {"type": "string", "description": text, **extra} for name, (text, extra) in _HEADER_DOCS.items()
    }
    properties["ce_type"] = {"type": "string", "const": event_type, "description": "the full proto message name"}
    properties["traceparent"] = {"type": "string", "description": "W3C trace context of the write"}
    return {"type": "object", "properties": dict(sorted(properties.items())), "required": _REQUIRED_HEADERS}


def _message(schemas: _Schemas, desc: Descriptor) -> dict[str, Any]:
    spec = desc.GetOptions().Extensions[options_pb2.event]
    return {
        "name": desc.name,
        "title": desc.full_name,
        "summary": f"{desc.full_name} on {spec.topic}, keyed by {spec.key_field}",
        "contentType": CONTENT_TYPE,
        "headers": _headers(desc.full_name),
        "payload": schemas.message(desc),
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": f"payload field {spec.key_field}"},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
        "x-ce-type": desc.full_name,
        "x-key-field": spec.key_field,
        "x-proto-message": desc.full_name,
    }


def _channel(topic: str, message_ids: list[str]) -> dict[str, Any]:
    config = TOPIC_CONFIGS.get(topic, {})
    topic_config: dict[str, Any] = {}
    if "cleanup.policy" in config:
        topic_config["cleanup.policy"] = config["cleanup.policy"].split(",")
    kafka: dict[str, Any] = {"topic": topic, "bindingVersion": KAFKA_BINDING_VERSION}
    if topic_config:
        kafka["topicConfiguration"] = topic_config
    return {
        "address": topic,
        "title": topic,
        "messages": {mid: {"$ref": f"#/components/messages/{mid}"} for mid in message_ids},
        "bindings": {"kafka": kafka},
    }


def build_asyncapi(files: Iterable[FileDescriptor], *, title: str = "Zhongtai events", version: str = "v1") -> dict:
    """The AsyncAPI 3.0 document of every registered event in ``files``."""
    schemas = _Schemas()
    messages: dict[str, Any] = {}
    by_topic: dict[str, list[str]] = {}
    producers: dict[str, set[str]] = {}
    for desc in event_messages(files):
        spec = desc.GetOptions().Extensions[options_pb2.event]
        messages[desc.full_name] = _message(schemas, desc)
        by_topic.setdefault(spec.topic, []).append(desc.full_name)
        producers.setdefault(spec.topic, set()).add(PRODUCERS.get(desc.file.package, desc.file.package))
    channels = {topic: _channel(topic, sorted(ids)) for topic, ids in sorted(by_topic.items())}
    operations = {
        f"publish.{topic}": {
            "action": "send",
            "title": f"{', '.join(sorted(producers[topic]))} publishes to {topic}",
            "channel": {"$ref": f"#/channels/{topic}"},
            "messages": [{"$ref": f"#/channels/{topic}/messages/{mid}"} for mid in sorted(ids)],
        }
        for topic, ids in sorted(by_topic.items())
    }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": title,
            "version": version,
            "description": "Business events of the platform: CloudEvents 1.0 in Kafka binary mode, protobuf "
            "payloads, one registry (the (bank.api.v1.event) option). Generated from the contracts.",
        },
        "defaultContentType": CONTENT_TYPE,
        "channels": channels,
        "operations": operations,
        "components": {"messages": dict(sorted(messages.items())), "schemas": dict(sorted(schemas.schemas.items()))},
    }

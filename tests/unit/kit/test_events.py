from datetime import UTC, datetime, timedelta, timezone

import pytest

from bank.customer.v1 import events_pb2
from services.kit.events import EncodedPayload, PoisonEvent, build_record, parse_record


def make_event() -> events_pb2.CustomerCreated:
    event = events_pb2.CustomerCreated(customer_id="c-1", version=1)
    event.customer.customer_id = "c-1"
    event.customer.mobile_masked = "138****5678"
    return event


def test_envelope_is_cloudevents_binary_mode_with_topic_and_key_from_the_contract() -> None:
    record = build_record(
        make_event(), source="/zhongtai/customer", aggregate_type="customer", aggregate_id="c-1", version=1,
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )  # fmt: skip
    headers = dict(record.headers)
    assert record.topic == "bank.customer.v1"
    assert record.key == b"c-1"
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_type"] == b"bank.customer.v1.CustomerCreated"
    assert headers["ce_subject"] == b"c-1"
    assert headers["content-type"] == b"application/protobuf"
    assert headers["ce_aggregateversion"] == b"1"
    assert headers["traceparent"].startswith(b"00-0af765")


def test_parse_round_trips_the_payload() -> None:
    record = build_record(make_event(), source="/s", aggregate_type="customer", aggregate_id="c-1", version=7)
    event = parse_record(record.headers, record.value, key=record.key, topic=record.topic)
    assert event.type == "bank.customer.v1.CustomerCreated"
    assert event.version == 7
    assert event.message == make_event()


@pytest.mark.parametrize(
    ("headers", "value"),
    [
        ([], b"x"),
        ([("ce_specversion", b"1.0"), ("ce_id", b"1"), ("ce_source", b"/s"), ("ce_type", b"no.such.Type")], b""),
        (
            [("ce_specversion", b"1.0"), ("ce_id", b"1"), ("ce_source", b"/s"),
             ("ce_type", b"bank.customer.v1.CustomerCreated")],
            b"\xff\xff\xff",
        ),
    ],
)  # fmt: skip
def test_undecodable_records_are_poison(headers: list, value: bytes) -> None:
    with pytest.raises(PoisonEvent):
        parse_record(headers, value)


def test_parse_keeps_the_event_time_and_envelope_attributes() -> None:
    record = build_record(make_event(), source="/s", aggregate_type="customer", aggregate_id="c-1", version=3)
    event = parse_record(record.headers, record.value)
    assert event.time.tzinfo is not None
    assert (event.source, event.subject, event.aggregate_type, event.aggregate_id) == ("/s", "c-1", "customer", "c-1")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"ce_specversion": b"0.3"}, "CloudEvents 1.0"),
        ({"content-type": b"application/json"}, "content-type"),
        ({"ce_time": b"yesterday"}, "undecodable"),
        ({"ce_aggregateversion": b"seven"}, "undecodable"),
    ],
)
def test_envelopes_that_break_the_contract_are_poison(change: dict, reason: str) -> None:
    record = build_record(make_event(), source="/s", aggregate_type="customer", aggregate_id="c-1", version=1)
    headers = [(k, change.get(k, v)) for k, v in record.headers]
    with pytest.raises(PoisonEvent, match=reason):
        parse_record(headers, record.value)


def sdk_headers(**kw) -> tuple[bytes, dict[str, bytes]]:  # type: ignore[no-untyped-def]
    """What the cloudevents SDK's Kafka binding writes for the same attributes (the reference)."""
    from cloudevents.core.bindings import kafka as ce_kafka
    from cloudevents.core.formats.json import JSONFormat
    from cloudevents.core.v1.event import CloudEvent

    message = ce_kafka.to_binary(CloudEvent(attributes=kw["attributes"], data=kw["data"]), JSONFormat())
    return message.value, message.headers


@pytest.mark.parametrize(
    "when",
    [
        datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
        datetime(2024, 1, 2, 3, 4, 5, 120000, tzinfo=timezone(timedelta(hours=8))),
    ],
)
def test_headers_are_byte_identical_to_the_cloudevents_sdk(when: datetime) -> None:
    event = make_event()
    record = build_record(
        event, source="/zhongtai/customer", aggregate_type="customer", aggregate_id="c-1", version=42,
        event_id="e-1", time=when, subject="subj-ü",
    )  # fmt: skip
    attributes = {
        "id": "e-1", "source": "/zhongtai/customer", "type": "bank.customer.v1.CustomerCreated", "subject": "subj-ü",
        "time": when, "datacontenttype": "application/protobuf", "aggregatetype": "customer",
        "aggregateid": "c-1", "aggregateversion": "42",
    }  # fmt: skip
    # JSONFormat writes bytes data unchanged: the reference value is the serialized payload
    value, headers = sdk_headers(attributes=attributes, data=event.SerializeToString())
    assert record.headers == list(headers.items())  # same names, bytes and order
    assert record.value == value == event.SerializeToString()


def test_a_payload_held_encoded_is_wrapped_as_the_message_would_be() -> None:
    event = make_event()
    args = {"source": "/zhongtai/customer", "aggregate_type": "customer", "aggregate_id": "c-1", "version": 7,
            "event_id": "e-1", "time": datetime(2024, 1, 2, tzinfo=UTC)}  # fmt: skip
    encoded = EncodedPayload(event.DESCRIPTOR, event.customer_id, event.SerializeToString())  # type: ignore[arg-type]
    assert build_record(encoded, **args) == build_record(event, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [{"source": ""}, {"time": datetime(2024, 1, 2)}],  # the SDK refuses these too
)
def test_an_envelope_the_sdk_would_refuse_is_refused(kwargs: dict) -> None:  # type: ignore[type-arg]
    args = {"source": "/s", "aggregate_type": "customer", "aggregate_id": "c-1", "version": 1} | kwargs
    with pytest.raises(ValueError):
        build_record(make_event(), **args)


def test_every_service_names_its_events_source_one_way() -> None:
    from services.kit.events import source_of

    assert source_of("customer") == "/zhongtai/customer"
    assert source_of("data_hub") == "/zhongtai/data_hub"
    with pytest.raises(ValueError):
        source_of("//zhongtai/product")

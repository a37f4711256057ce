import pytest

from bank.customer.v1 import events_pb2
from services.kit.events import PoisonEvent, build_record, parse_record


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

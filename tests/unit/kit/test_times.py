"""services.kit.times: epoch microseconds, exact both ways."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from google.protobuf.timestamp_pb2 import Timestamp

from services.kit.times import EPOCH, epoch_us, from_epoch_us, timestamp_us


def test_epoch_us_is_exact_where_a_float_is_not() -> None:
    moment = datetime(2286, 11, 20, 17, 46, 39, 999_999, tzinfo=UTC)
    assert epoch_us(moment) == 9_999_999_999_999_999
    assert int(moment.timestamp() * 1_000_000) != 9_999_999_999_999_999  # (the float rounds)
    assert from_epoch_us(9_999_999_999_999_999) == moment


def test_round_trips_and_offsets() -> None:
    assert epoch_us(EPOCH) == 0
    assert epoch_us(datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)) == -1
    shanghai = datetime(2026, 12, 7, 8, 0, tzinfo=timezone(timedelta(hours=8)))
    assert epoch_us(shanghai) == epoch_us(datetime(2026, 12, 7, 0, 0, tzinfo=UTC))
    for us in (0, 1, -1, 1_765_065_600_123_456):
        assert epoch_us(from_epoch_us(us)) == us
        assert from_epoch_us(us).tzinfo is UTC


def test_timestamp_us_truncates_the_nanoseconds() -> None:
    assert timestamp_us(Timestamp(seconds=1_765_065_600, nanos=123_456_789)) == 1_765_065_600_123_456
    assert timestamp_us(Timestamp()) == 0

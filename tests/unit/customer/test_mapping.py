from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf import timestamp_pb2

from services.customer.mapping import timestamp

SHANGHAI = timezone(timedelta(hours=8))


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 12, 6, 19, 0, 0, 123456, tzinfo=UTC),
        datetime(2026, 12, 7, 3, 0, 0, 999999, tzinfo=SHANGHAI),
        datetime(1969, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
        datetime(1960, 1, 1, tzinfo=SHANGHAI),
        datetime(2026, 12, 6, 19, 0, 0),  # naive: local time, as astimezone reads it
    ],
)
def test_a_timestamp_carries_what_protobufs_own_conversion_gives(value: datetime) -> None:
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(value.astimezone(UTC))
    assert timestamp(value) == expected

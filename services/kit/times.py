"""Epoch microseconds: the platform's exact integer time (stored, compared, sent in page tokens
and audit records), and its conversions. Integer arithmetic on ``timedelta`` only — never a
float, so a round trip is exact to the microsecond. Pure: no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def epoch_us(moment: datetime) -> int:
    """Microseconds since the epoch of an aware datetime, exactly."""
    return (moment - EPOCH) // _MICROSECOND


def from_epoch_us(us: int) -> datetime:
    """The aware UTC datetime ``us`` microseconds after the epoch."""
    return EPOCH + timedelta(microseconds=us)


def timestamp_us(stamp: Any) -> int:
    """Microseconds since the epoch of a ``google.protobuf.Timestamp`` (nanoseconds truncated)."""
    return int(stamp.seconds) * 1_000_000 + int(stamp.nanos) // 1000

"""Conversions between the events' and views' protobuf values and the hub's columns (pure).

Times are epoch microseconds (``*_us`` columns), amounts micro-units of their currency
(``*_micros``): integers, never floats.
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from google.type import money_pb2

from services.data_hub.domain import MICROS


def ts_us(ts: Timestamp) -> int | None:
    """Epoch microseconds of a Timestamp (None when unset)."""
    seconds, nanos = ts.seconds, ts.nanos  # (each field read once: the fold calls this per event)
    if seconds == 0 and nanos == 0:
        return None
    return seconds * MICROS + nanos // 1000


def us_ts(us: int | None) -> Timestamp | None:
    if us is None:
        return None
    return Timestamp(seconds=us // MICROS, nanos=(us % MICROS) * 1000)


def money_micros(m: money_pb2.Money) -> int:
    return m.units * MICROS + m.nanos // 1000  # (protobuf's int64/int32 fields are ints already)


def micros_money(micros: int, currency: str) -> money_pb2.Money:
    units, rest = divmod(abs(micros), MICROS)
    sign = -1 if micros < 0 else 1
    return money_pb2.Money(currency_code=currency, units=sign * units, nanos=sign * rest * 1000)


def set_money(m: money_pb2.Money, micros: int, currency: str) -> None:
    """:func:`micros_money` written into ``m`` (a field of a message being built: no copy)."""
    units, rest = divmod(abs(micros), MICROS)
    sign = -1 if micros < 0 else 1
    m.currency_code, m.units, m.nanos = currency, sign * units, sign * rest * 1000


def set_ts(ts: Timestamp, us: int) -> None:
    """:func:`us_ts` written into ``ts``."""
    ts.seconds, ts.nanos = us // MICROS, (us % MICROS) * 1000


def now_us() -> int:
    return int(datetime.now(UTC).timestamp() * MICROS)

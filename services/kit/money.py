"""Money without floats: ``google.type.Money`` ↔ integer minor units per ISO-4217 exponent.

A bank amount is an ``int`` of minor units (fen, cents; yen have none) plus a currency code.
:class:`Amount` does the arithmetic (same currency only, never a float, ``int`` is unbounded
but :func:`to_minor` refuses values outside int64 so they fit a ``BIGINT`` column). Conversion
from ``google.type.Money`` is exact or refused: ``nanos`` finer than the currency's minor unit
(e.g. CNY 1.005) raise :class:`MoneyError` instead of being rounded.

Pure: the standard library and the generated ``google.type.money_pb2`` only.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.type import money_pb2

NANOS_PER_UNIT = 1_000_000_000
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)

#: ISO-4217 minor-unit exponents of the currencies the platform accepts. A currency that is
#: not listed is refused (better than guessing an exponent and mis-scaling an amount).
_TWO = ("AED", "AUD", "BRL", "CAD", "CHF", "CNY", "CZK", "DKK", "EGP", "EUR", "GBP", "HKD", "IDR", "ILS", "INR",
        "MOP", "MXN", "MYR", "NOK", "NZD", "PHP", "PLN", "RUB", "SAR", "SEK", "SGD", "THB", "TRY", "TWD", "USD",
        "ZAR")  # fmt: skip
_ZERO = ("CLP", "ISK", "JPY", "KRW", "VND")
_THREE = ("BHD", "JOD", "KWD", "OMR", "TND")
EXPONENTS: dict[str, int] = {**dict.fromkeys(_TWO, 2), **dict.fromkeys(_ZERO, 0), **dict.fromkeys(_THREE, 3)}


class MoneyError(ValueError):
    """An amount that cannot be represented exactly (unknown currency, sub-minor precision, overflow)."""


def exponent(currency_code: str) -> int:
    """The number of minor-unit digits of a currency (CNY 2, JPY 0, KWD 3)."""
    try:
        return EXPONENTS[currency_code]
    except KeyError:
        raise MoneyError(f"unsupported currency {currency_code!r}") from None


def is_supported(currency_code: str) -> bool:
    return currency_code in EXPONENTS


def _check_int64(minor: int) -> int:
    if not INT64_MIN <= minor <= INT64_MAX:
        raise MoneyError("amount out of range")
    return minor


def to_minor(money: money_pb2.Money) -> int:
    """Exact minor units of a Money (refuses mixed signs and sub-minor nanos)."""
    exp = exponent(money.currency_code)
    units, nanos = int(money.units), int(money.nanos)
    if not -NANOS_PER_UNIT < nanos < NANOS_PER_UNIT:
        raise MoneyError("nanos must be within ±999,999,999")
    if (units > 0 and nanos < 0) or (units < 0 and nanos > 0):
        raise MoneyError("units and nanos must have the same sign")
    step = 10 ** (9 - exp)
    if nanos % step:
        raise MoneyError(f"{money.currency_code} has {exp} decimal places; the amount is more precise")
    # nanos is an exact multiple of step here, so floor division is exact for either sign
    return _check_int64(units * 10**exp + nanos // step)


def to_money(minor: int, currency_code: str) -> money_pb2.Money:
    """The Money for ``minor`` units (units and nanos share the sign, as the type requires)."""
    exp = exponent(currency_code)
    _check_int64(minor)
    scale = 10**exp
    sign = -1 if minor < 0 else 1
    whole, frac = divmod(abs(minor), scale)
    return money_pb2.Money(currency_code=currency_code, units=sign * whole, nanos=sign * frac * 10 ** (9 - exp))


def format_minor(minor: int, currency_code: str) -> str:
    """``"CNY 1234.50"``: for messages and logs, never for arithmetic."""
    exp = exponent(currency_code)
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 10**exp)
    return f"{currency_code} {sign}{whole}" + (f".{frac:0{exp}d}" if exp else "")


@dataclass(frozen=True, order=False)
class Amount:
    """An exact amount: integer minor units of one currency."""

    minor: int
    currency: str

    def __post_init__(self) -> None:
        if isinstance(self.minor, bool) or not isinstance(self.minor, int):
            raise MoneyError("minor units must be an int")  # floats never get in
        exponent(self.currency)
        _check_int64(self.minor)

    @classmethod
    def of(cls, money: money_pb2.Money) -> Amount:
        return cls(to_minor(money), money.currency_code)

    @classmethod
    def zero(cls, currency: str) -> Amount:
        return cls(0, currency)

    def to_proto(self) -> money_pb2.Money:
        return to_money(self.minor, self.currency)

    def _same(self, other: Amount) -> None:
        if not isinstance(other, Amount):
            raise TypeError(f"cannot combine Amount with {type(other).__name__}")
        if other.currency != self.currency:
            raise MoneyError(f"currency mismatch: {self.currency} vs {other.currency}")

    def __add__(self, other: Amount) -> Amount:
        self._same(other)
        return Amount(self.minor + other.minor, self.currency)

    def __sub__(self, other: Amount) -> Amount:
        self._same(other)
        return Amount(self.minor - other.minor, self.currency)

    def __neg__(self) -> Amount:
        return Amount(-self.minor, self.currency)

    def __lt__(self, other: Amount) -> bool:
        self._same(other)
        return self.minor < other.minor

    def __le__(self, other: Amount) -> bool:
        self._same(other)
        return self.minor <= other.minor

    def __gt__(self, other: Amount) -> bool:
        self._same(other)
        return self.minor > other.minor

    def __ge__(self, other: Amount) -> bool:
        self._same(other)
        return self.minor >= other.minor

    @property
    def is_positive(self) -> bool:
        return self.minor > 0

    @property
    def is_negative(self) -> bool:
        return self.minor < 0

    def __str__(self) -> str:
        return format_minor(self.minor, self.currency)

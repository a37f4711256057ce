"""Money ↔ minor units, exact or refused; arithmetic never touches a float."""

import pytest
from google.type import money_pb2
from hypothesis import given
from hypothesis import strategies as st

from services.kit.money import INT64_MAX, Amount, MoneyError, exponent, format_minor, to_minor, to_money


def money(code: str, units: int, nanos: int = 0) -> money_pb2.Money:
    return money_pb2.Money(currency_code=code, units=units, nanos=nanos)


@pytest.mark.parametrize(
    ("m", "minor"),
    [
        (money("CNY", 12, 340_000_000), 1234),
        (money("CNY", 0, 10_000_000), 1),
        (money("JPY", 1500), 1500),
        (money("KWD", 1, 5_000_000), 1005),
        (money("USD", -3, -250_000_000), -325),
    ],
)
def test_money_converts_to_exact_minor_units(m: money_pb2.Money, minor: int) -> None:
    assert to_minor(m) == minor
    assert to_money(minor, m.currency_code) == m


def test_sub_minor_precision_is_refused_not_rounded() -> None:
    with pytest.raises(MoneyError, match="2 decimal places"):
        to_minor(money("CNY", 1, 5_000_000))  # CNY 1.005
    with pytest.raises(MoneyError):
        to_minor(money("JPY", 1, 500_000_000))


def test_mixed_signs_are_refused() -> None:
    with pytest.raises(MoneyError, match="same sign"):
        to_minor(money("CNY", 1, -10_000_000))


def test_unknown_currency_is_refused() -> None:
    with pytest.raises(MoneyError, match="unsupported currency"):
        to_minor(money("XYZ", 1))
    with pytest.raises(MoneyError):
        exponent("cny")


def test_values_beyond_int64_are_refused() -> None:
    with pytest.raises(MoneyError, match="out of range"):
        to_minor(money("CNY", INT64_MAX))


def test_amount_arithmetic_is_exact_and_currency_checked() -> None:
    a, b = Amount(10, "CNY"), Amount(20, "CNY")
    # 0.1 + 0.2 is exactly 0.3 in minor units, unlike floats
    assert (a + b) == Amount(30, "CNY")
    assert (a - b).minor == -10 and (a - b).is_negative
    assert a < b and b >= a and (-a).minor == -10
    with pytest.raises(MoneyError, match="currency mismatch"):
        _ = a + Amount(1, "USD")
    with pytest.raises(MoneyError, match="currency mismatch"):
        _ = a < Amount(1, "USD")


def test_floats_cannot_become_amounts() -> None:
    with pytest.raises(MoneyError):
        Amount(1.5, "CNY")  # type: ignore[arg-type]
    with pytest.raises(MoneyError):
        Amount(True, "CNY")


def test_format_for_messages() -> None:
    assert format_minor(123450, "CNY") == "CNY 1234.50"
    assert format_minor(-5, "CNY") == "CNY -0.05"
    assert format_minor(700, "JPY") == "JPY 700"
    assert str(Amount(1005, "KWD")) == "KWD 1.005"


@given(st.integers(min_value=-(10**15), max_value=10**15), st.sampled_from(["CNY", "JPY", "KWD", "USD"]))
def test_round_trip_is_lossless(minor: int, code: str) -> None:
    m = to_money(minor, code)
    assert to_minor(m) == minor
    assert (m.units >= 0 and m.nanos >= 0) or (m.units <= 0 and m.nanos <= 0)

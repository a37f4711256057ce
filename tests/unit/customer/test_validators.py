from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.customer.domain import (
    PersonalData,
    RiskTolerance,
    ValidationFailed,
    age_on,
    risk_tolerance_for,
    validate_email,
    validate_full_name,
    validate_mobile,
    validate_national_id,
    validate_personal,
)
from tests.unit.customer.ids import make_id, valid_ids

TODAY = date(2025, 6, 1)
ID_CHARS = "0123456789X"


def test_known_good_id_passes() -> None:
    # The GB 11643 worked example: 11010519491231002X.
    assert validate_national_id("11010519491231002X", today=TODAY) == []


@given(valid_ids())
def test_generated_valid_ids_pass(pair: tuple[str, date]) -> None:
    national_id, _ = pair
    assert validate_national_id(national_id, today=TODAY) == []


@given(valid_ids(), st.integers(0, 17), st.sampled_from([*ID_CHARS, "x", "A", " ", "-"]))
def test_any_single_changed_character_fails(pair: tuple[str, date], position: int, char: str) -> None:
    national_id, _ = pair
    if national_id[position] == char:
        char = "0" if char != "0" else "1"
    changed = national_id[:position] + char + national_id[position + 1 :]
    assert validate_national_id(changed, today=TODAY) != []


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "17 digits"),
        ("11010519491231002", "17 digits"),
        ("11010519491231002XX", "17 digits"),
        ("11010519491231002x", "17 digits"),
        ("99010519491231002X", "province"),
        ("110105" + "20250230" + "0011", "birth date"),
        (make_id(date(2030, 1, 1)), "birth date"),
        ("110105194912310021", "check digit"),
    ],
)
def test_bad_ids_say_why(value: str, why: str) -> None:
    [violation] = validate_national_id(value, today=TODAY)
    assert violation.field == "national_id" and why in violation.description
    assert value not in violation.description or not value


def test_birth_date_must_match_the_id() -> None:
    data = PersonalData("张三", date(1990, 3, 8), make_id(date(1990, 3, 7)), "13812345678")
    assert [v.field for v in validate_personal(data, today=TODAY)] == ["birth_date"]


@pytest.mark.parametrize("name", ["张三", "欧阳娜娜", "John Smith", "Jean-Luc O'Neil", "阿卜杜·热西提", "José Ñúñez"])
def test_good_names(name: str) -> None:
    assert validate_full_name(name) == []


@pytest.mark.parametrize("name", ["", "   ", " 张三", "张三 ", "R2D2", "a\nb", "x" * 101, "...", "<script>"])
def test_bad_names(name: str) -> None:
    assert validate_full_name(name) != []


@pytest.mark.parametrize("mobile", ["13812345678", "19900000000", "15012345678"])
def test_good_mobiles(mobile: str) -> None:
    assert validate_mobile(mobile) == []


@pytest.mark.parametrize("mobile", ["", "12812345678", "1381234567", "138123456789", "+8613812345678", "1381234567a"])
def test_bad_mobiles(mobile: str) -> None:
    assert validate_mobile(mobile) != []


@pytest.mark.parametrize("email", ["", "a@b.cn", "zhang.san+bank@example.com.cn"])
def test_good_emails(email: str) -> None:
    assert validate_email(email) == []


@pytest.mark.parametrize("email", ["a", "a@", "@b.cn", "a@b", "a b@c.cn", "a@-b.cn", "a@b..cn", "x" * 65 + "@b.cn"])
def test_bad_emails(email: str) -> None:
    assert validate_email(email) != []


def test_future_and_ancient_birth_dates_are_refused() -> None:
    for born in (date(2025, 6, 2), date(1899, 12, 31)):
        data = PersonalData("张三", born, make_id(date(1990, 1, 1)), "13812345678")
        assert "birth_date" in [v.field for v in validate_personal(data, today=TODAY)]


def test_age_counts_whole_years() -> None:
    assert age_on(date(2007, 6, 1), TODAY) == 18
    assert age_on(date(2007, 6, 2), TODAY) == 17
    assert age_on(date(2000, 2, 29), date(2025, 2, 28)) == 24


@pytest.mark.parametrize(
    ("score", "tolerance"),
    [(0, 1), (20, 1), (21, 2), (40, 2), (41, 3), (60, 3), (61, 4), (80, 4), (81, 5), (100, 5)],
)
def test_risk_bands(score: int, tolerance: int) -> None:
    assert risk_tolerance_for(score) == RiskTolerance(tolerance)


@given(st.integers(0, 100))
def test_risk_band_is_monotonic(score: int) -> None:
    assert risk_tolerance_for(score) <= risk_tolerance_for(min(score + 1, 100))


@pytest.mark.parametrize("score", [-1, 101])
def test_risk_score_out_of_range(score: int) -> None:
    with pytest.raises(ValidationFailed) as err:
        risk_tolerance_for(score)
    assert err.value.violations[0].field == "questionnaire_score"

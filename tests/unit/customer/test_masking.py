"""kit.masking is driven by the contract's sensitivity/mask options, not by field names."""

from __future__ import annotations

from google.type import date_pb2

from bank.customer.v1 import customer_pb2
from services.kit.masking import can_read_pii, mask_message, mask_string, masked_copy


def customer() -> customer_pb2.Customer:
    return customer_pb2.Customer(
        customer_id="c-1",
        full_name="张三丰",
        birth_date=date_pb2.Date(year=1990, month=3, day=7),
        national_id="110101199003071234",
        mobile="13812345678",
        email="zhang@example.com",
        status=customer_pb2.Customer.STATUS_ACTIVE,
    )


def test_masks_every_pii_field_by_its_style() -> None:
    c = customer()
    assert mask_message(c, reveal_pii=False) == []
    assert c.national_id == "110101********1234"
    assert c.mobile == "138****5678"
    assert c.email == "z***@example.com"
    assert c.full_name == "张**"
    assert (c.birth_date.year, c.birth_date.month, c.birth_date.day) == (1990, 0, 0)
    assert c.customer_id == "c-1" and c.status == customer_pb2.Customer.STATUS_ACTIVE


def test_reveal_returns_the_clear_fields_for_the_audit() -> None:
    c = customer()
    c.email = ""
    assert mask_message(c, reveal_pii=True) == ["full_name", "birth_date", "national_id", "mobile"]
    assert c.mobile == "13812345678"


def test_walks_repeated_messages() -> None:
    response = customer_pb2.ListCustomersResponse(customers=[customer(), customer()])
    assert mask_message(response, reveal_pii=True) == [
        f"customers[{i}].{f}" for i in (0, 1) for f in ("full_name", "birth_date", "national_id", "mobile", "email")
    ]
    mask_message(response, reveal_pii=False)
    assert all(c.mobile == "138****5678" for c in response.customers)


def test_masked_copy_leaves_the_original() -> None:
    c = customer()
    copy = masked_copy(c)
    assert copy.mobile == "138****5678" and c.mobile == "13812345678"


def test_mask_string_edge_cases() -> None:
    assert mask_string("", 2) == ""
    assert mask_string("123", 2) == "***"  # shorter than what would be kept
    assert mask_string("John Smith", 5) == "J***"
    assert mask_string("no-at-sign", 4) == "***"


def test_pii_read_scope() -> None:
    assert can_read_pii({"customers:read", "pii:read"})
    assert not can_read_pii({"customers:read"})

"""Sensitivity options drive masking generically, so they must be complete: every field whose
name suggests personal data is marked PII, and fields that merely *look* like PII but hold a
derived value (masked strings, blind indexes, birth year) say so explicitly (INTERNAL).
Events and views never carry clear PII."""

from __future__ import annotations

import re

from google.protobuf import descriptor as _descriptor

# Names that suggest a person's name, an ID number, a phone number, an e-mail, an address or a
# birth date. Product.display_name is a product's name, hence the explicit person-name list.
PII_NAME = re.compile(
    r"(^|_)("
    r"full_name|first_name|last_name|given_name|family_name|middle_name|legal_name|person_name|customer_name"
    r"|national_id|id_number|id_card|passport(_number)?|ssn|tax_id"
    r"|mobile|phone|phone_number|telephone"
    r"|e_?mail"
    r"|address|street|postal_code|zip_code"
    r"|birth_date|date_of_birth|birthday|dob|birth_year"
    r")($|_)"
)
# Derived values: not PII themselves (already masked / keyed hash / coarse), but must be explicit.
DERIVED_SUFFIXES = ("_masked", "_blind_index")
DERIVED_NAMES = {"birth_year"}


def _sensitivity(field: _descriptor.FieldDescriptor, contracts) -> int:
    return int(field.GetOptions().Extensions[contracts.options.sensitivity])


def test_pii_looking_fields_are_marked(message: _descriptor.Descriptor, contracts) -> None:
    opts = contracts.options
    problems = []
    for field in message.fields:
        if not PII_NAME.search(field.name):
            continue
        level = _sensitivity(field, contracts)
        derived = field.name.endswith(DERIVED_SUFFIXES) or field.name in DERIVED_NAMES
        if derived:
            if level == opts.SENSITIVITY_UNSPECIFIED:
                problems.append(f"{field.full_name}: derived identity field needs an explicit sensitivity")
        elif level != opts.SENSITIVITY_PII:
            problems.append(f"{field.full_name}: looks like personal data but is not SENSITIVITY_PII")
    assert not problems, "\n".join(problems)


def test_pii_fields_have_a_mask_style(message: _descriptor.Descriptor, contracts) -> None:
    opts = contracts.options
    for field in message.fields:
        if _sensitivity(field, contracts) == opts.SENSITIVITY_PII:
            mask = field.GetOptions().Extensions[opts.mask]
            assert mask != opts.MASK_STYLE_UNSPECIFIED, f"{field.full_name}: PII without a (bank.api.v1.mask)"


def test_customer_pii_fields_exactly(contracts) -> None:
    from bank.customer.v1 import customer_pb2

    pii = sorted(
        f.name
        for f in customer_pb2.Customer.DESCRIPTOR.fields
        if _sensitivity(f, contracts) == contracts.options.SENSITIVITY_PII
    )
    assert pii == ["birth_date", "email", "full_name", "mobile", "national_id"]


def _reachable_pii(
    message: _descriptor.Descriptor, contracts, path: str = "", seen: frozenset[str] = frozenset()
) -> list[str]:
    if message.full_name in seen:
        return []
    found = []
    for field in message.fields:
        where = f"{path}{field.name}"
        if _sensitivity(field, contracts) in (
            contracts.options.SENSITIVITY_PII,
            contracts.options.SENSITIVITY_SECRET,
        ):
            found.append(where)
        if field.message_type is not None:
            found += _reachable_pii(field.message_type, contracts, where + ".", seen | {message.full_name})
    return found


def test_events_carry_no_clear_pii(contracts) -> None:
    events = [m for m in contracts.messages if m.GetOptions().HasExtension(contracts.options.event)]
    assert events
    problems = {m.full_name: _reachable_pii(m, contracts) for m in events}
    assert not {k: v for k, v in problems.items() if v}, problems


def test_eligibility_profile_has_no_pii(contracts) -> None:
    from bank.customer.v1 import customer_pb2

    assert _reachable_pii(customer_pb2.EligibilityProfile.DESCRIPTOR, contracts) == []


def test_pii_name_heuristic() -> None:
    hits = ["full_name", "national_id", "mobile", "email", "home_address", "birth_date", "mobile_masked"]
    misses = ["display_name", "product_id", "customer_id", "segment", "emailer"]
    assert all(PII_NAME.search(n) for n in hits)
    assert not any(PII_NAME.search(n) for n in misses)

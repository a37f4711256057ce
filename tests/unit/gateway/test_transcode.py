"""JSON/path/query → request message, in one parse; errors name the field."""

import pytest
from google.protobuf import json_format

from gateway.routing import Router, discover_routes, load_contracts
from gateway.transcode import build_request, render_response
from services.kit.errors import InvalidArgument

ROUTER = Router(discover_routes(load_contracts()))


def _build(method: str, path: str, body: bytes = b"", query: list[tuple[str, str]] | None = None):  # type: ignore[no-untyped-def]
    match = ROUTER.match(method, path)
    assert match is not None
    return build_request(match.route, match.params, query or [], body)


def _violation(exc: InvalidArgument) -> tuple[str, str]:
    return exc.violations[0].field, exc.violations[0].description


def test_body_field_mapping_with_path_variable_winning() -> None:
    req = _build(
        "PATCH", "/v1/customers/c1", b'{"customerId": "other", "fullName": "Li Lei"}', [("updateMask", "full_name")]
    )
    assert req.customer.customer_id == "c1"
    assert req.customer.full_name == "Li Lei"
    assert list(req.update_mask.paths) == ["full_name"]


def test_original_proto_names_are_accepted() -> None:
    req = _build(
        "POST", "/v1/customers", b'{"full_name": "Li Lei", "birth_date": {"year": 1990, "month": 1, "day": 2}}'
    )
    assert req.customer.full_name == "Li Lei"
    assert req.customer.birth_date.year == 1990


def test_body_star_takes_every_field() -> None:
    req = _build("POST", "/v1/customers/c1:assessRisk", b'{"questionnaireScore": 55, "etag": "e1"}')
    assert (req.customer_id, req.questionnaire_score, req.etag) == ("c1", 55, "e1")


def test_query_parameters_are_coerced_by_field_type() -> None:
    req = _build(
        "GET", "/v1/customers", query=[("pageSize", "10"), ("status", "STATUS_ACTIVE"), ("kyc_verified", "true")]
    )
    assert req.page_size == 10
    assert req.status == 2
    assert req.HasField("kyc_verified") and req.kyc_verified is True


def test_enum_number_in_query() -> None:
    assert _build("GET", "/v1/customers", query=[("status", "2")]).status == 2


@pytest.mark.parametrize(
    ("body", "query", "field", "reason"),
    [
        (b'{"fullName": "x", "nickname": "y"}', [], "customer.nickname", "UNKNOWN_FIELD"),
        (b'{"birthDate": {"year": 1990, "era": 1}}', [], "customer.birth_date.era", "UNKNOWN_FIELD"),
        (b'{"fullName": "x", "full_name": "y"}', [], "customer.full_name", "DUPLICATE_FIELD"),
        (b'{"fullName": 5}', [], "customer.full_name", "INVALID_FIELD"),
        (b'{"birthDate": {"year": "nineteen"}}', [], "customer.birth_date.year", "INVALID_FIELD"),
        (b"[1, 2]", [], "customer", "INVALID_FIELD"),
    ],
)
def test_bad_bodies_name_the_field(body: bytes, query: list, field: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        _build("POST", "/v1/customers", body, query)
    assert info.value.reason == reason
    assert _violation(info.value)[0] == field


def test_malformed_json() -> None:
    with pytest.raises(InvalidArgument) as info:
        _build("POST", "/v1/customers", b'{"fullName": ')
    assert info.value.reason == "MALFORMED_JSON"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ([("colour", "red")], "colour"),
        ([("pageSize", "ten")], "page_size"),
        ([("kycVerified", "maybe")], "kycVerified"),
        ([("status", "STATUS_NOPE")], "status"),
        ([("pageSize", "1"), ("page_size", "2")], "page_size"),
    ],
)
def test_bad_query_parameters_are_400s(query: list, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        _build("GET", "/v1/customers", query=query)
    assert _violation(info.value)[0] == field


def test_query_is_refused_when_body_is_star() -> None:
    with pytest.raises(InvalidArgument):
        _build("POST", "/v1/customers/c1:verify", b"{}", [("outcome", "OUTCOME_APPROVED")])


def test_path_bound_fields_cannot_come_from_the_query() -> None:
    with pytest.raises(InvalidArgument):
        _build("GET", "/v1/customers/c1", query=[("customer_id", "c2")])


def test_int64_and_repeated_and_nested_query_parameters() -> None:
    # ListTransactions has no repeated field; use the generic machinery through a nested Money field instead.
    req = _build(
        "POST", "/v1/customers/c1/subscriptions/s1/transactions", b'{"amount": {"currencyCode": "CNY", "units": "100"}}'
    )
    assert req.transaction.amount.units == 100


def test_get_with_a_body_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        _build("GET", "/v1/customers/c1", b'{"x": 1}')


def test_response_prints_zero_values_in_camel_case() -> None:
    match = ROUTER.match("POST", "/v1/products/p1:checkEligibility")
    assert match is not None
    body = render_response(match.route, match.route.output_class())
    assert b'"eligible":false' in body
    assert json_format  # imported for parity with the gateway

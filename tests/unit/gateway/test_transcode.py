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


# ------------------------------------------------------------------------------ response printing


def _reachable_messages() -> list:  # type: ignore[type-arg]
    """Every message type a route can answer with (or send), and the types nested in them."""
    seen: dict[str, object] = {}
    stack = [r.method.output_type for r in ROUTER.routes] + [r.method.input_type for r in ROUTER.routes]
    while stack:
        desc = stack.pop()
        if desc.full_name in seen:
            continue
        seen[desc.full_name] = desc
        stack.extend(fd.message_type for fd in desc.fields if fd.message_type is not None)
    return list(seen.values())


def _populate(message, depth: int = 0, salt: int = 1) -> None:  # type: ignore[no-untyped-def]
    """Set every field (first oneof member only) to a non-default value, nested two levels."""
    from google.protobuf.descriptor import FieldDescriptor as F

    done_oneofs: set[str] = set()
    for fd in message.DESCRIPTOR.fields:
        if fd.containing_oneof is not None:
            if fd.containing_oneof.name in done_oneofs:
                continue
            done_oneofs.add(fd.containing_oneof.name)
        if fd.message_type is not None:
            if fd.message_type.GetOptions().map_entry:
                container = getattr(message, fd.name)
                key_fd, value_fd = fd.message_type.fields_by_name["key"], fd.message_type.fields_by_name["value"]
                key = "k" if key_fd.type == F.TYPE_STRING else (True if key_fd.type == F.TYPE_BOOL else 3)
                if value_fd.message_type is not None:
                    if depth < 2:
                        _populate(container[key], depth + 1, salt)
                else:
                    container[key] = _scalar(value_fd, salt)
                continue
            full = fd.message_type.full_name
            if depth >= 2 and not full.startswith("google.protobuf."):
                continue
            sub = getattr(message, fd.name).add() if fd.is_repeated else getattr(message, fd.name)
            if full == "google.protobuf.Timestamp":
                sub.FromSeconds(1_700_000_000 + salt)
            elif full == "google.protobuf.Duration":
                sub.FromSeconds(salt)
            elif full == "google.protobuf.FieldMask":
                sub.paths.append("a_b")
            elif full.startswith("google.protobuf.") and "value" in sub.DESCRIPTOR.fields_by_name:
                sub.value = _scalar(sub.DESCRIPTOR.fields_by_name["value"], salt)
            elif not full.startswith("google.protobuf."):
                _populate(sub, depth + 1, salt)
            if not fd.is_repeated and not sub.ListFields():
                sub.SetInParent()
            continue
        value = _scalar(fd, salt)
        if fd.is_repeated:
            getattr(message, fd.name).extend([value, value])
        else:
            setattr(message, fd.name, value)


def _scalar(fd, salt: int):  # type: ignore[no-untyped-def]
    from google.protobuf.descriptor import FieldDescriptor as F

    if fd.type == F.TYPE_STRING:
        return f"s{salt}"
    if fd.type == F.TYPE_BYTES:
        return b"\x00b"
    if fd.type == F.TYPE_BOOL:
        return True
    if fd.type == F.TYPE_ENUM:
        numbers = [v.number for v in fd.enum_type.values]
        return numbers[salt % len(numbers)] if salt < 3 else 99  # 99: an unknown number (open enum)
    if fd.type in (F.TYPE_FLOAT, F.TYPE_DOUBLE):
        return 1.5
    if fd.type in (F.TYPE_UINT32, F.TYPE_UINT64, F.TYPE_FIXED32, F.TYPE_FIXED64):
        return 7 * salt
    return -7 * salt


@pytest.mark.parametrize("salt", [0, 1, 2, 3])
def test_the_benchmarked_handwritten_printer_matches_json_format_for_every_contract_message(salt: int) -> None:
    import orjson
    from google.protobuf import message_factory

    from bench._handwritten import plan_to_dict as message_to_dict  # the reference bench/libraries.py measures

    messages = _reachable_messages()
    assert len(messages) > 10
    for desc in messages:
        cls = message_factory.GetMessageClass(desc)
        for message in (cls(),):
            if salt and not desc.full_name.startswith("google.protobuf."):  # WKTs: only as fields
                _populate(message, salt=salt)
            expected = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
            # Same values and the same key order (byte-identical JSON).
            assert orjson.dumps(message_to_dict(message)) == orjson.dumps(expected), desc.full_name

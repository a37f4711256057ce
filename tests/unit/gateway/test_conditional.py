"""Conditional requests (gateway/conditional.py): which routes take which header, and the
RFC 9110 comparisons."""

from __future__ import annotations

import pytest

from gateway import conditional
from gateway.routing import discover_routes, load_contracts
from services.kit import etag_of
from services.kit.errors import InvalidArgument, negotiate_locale

ROUTES = {(r.http_method, r.template.raw): r for r in discover_routes(load_contracts())}
GET_CUSTOMER = ROUTES[("GET", "/v1/customers/{customer_id}")]
UPDATE = ROUTES[("PATCH", "/v1/customers/{customer.customer_id}")]
CREATE = ROUTES[("POST", "/v1/customers")]
VERIFY = ROUTES[("POST", "/v1/customers/{customer_id}:verify")]


def test_the_etag_format_is_one_strong_entity_tag() -> None:
    tag = etag_of("C-1", 3)
    assert conditional.is_entity_tag(tag) and not tag.startswith("W/")
    assert tag != etag_of("C-2", 3) and tag != etag_of("C-1", 4)


def test_which_routes_take_which_header() -> None:
    assert conditional.response_has_etag(GET_CUSTOMER) and conditional.response_has_etag(UPDATE)
    assert conditional.request_etag_path(UPDATE) == ("customer", "etag")
    assert conditional.request_etag_path(VERIFY) == ("etag",)
    assert conditional.request_etag_path(CREATE) is None  # a create changes no existing resource
    with pytest.raises(InvalidArgument) as info:
        conditional.check_headers(CREATE, '"a"', None)
    assert info.value.reason == "CONDITION_NOT_SUPPORTED"
    with pytest.raises(InvalidArgument):
        conditional.check_headers(VERIFY, None, '"a"')


def test_if_match_is_copied_into_the_request() -> None:
    request = UPDATE.input_class()
    assert conditional.apply_if_match(UPDATE, request, '"abc"') and request.customer.etag == '"abc"'
    assert not conditional.apply_if_match(VERIFY, VERIFY.input_class(), "*")
    with pytest.raises(InvalidArgument) as info:
        conditional.apply_if_match(VERIFY, VERIFY.input_class(etag='"x"'), '"y"')
    assert info.value.reason == "ETAG_CONFLICT"
    with pytest.raises(InvalidArgument):
        conditional.apply_if_match(VERIFY, VERIFY.input_class(), "abc")  # not quoted


@pytest.mark.parametrize(
    ("header", "matches"),
    [('"a"', True), ('W/"a"', True), ('"b", "a"', True), ("*", True), ('"b"', False), ('"ab"', False)],
)
def test_if_none_match_uses_the_weak_comparison(header: str, matches: bool) -> None:
    assert conditional.none_match(header, '"a"') is matches


@pytest.mark.parametrize(
    ("accept", "locale"),
    [
        (None, "en"),
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh-CN"),
        ("zh-TW", "zh-CN"),
        ("fr, en;q=0.5", "en"),
        ("en;q=0.2, zh;q=0.9", "zh-CN"),
        ("zh-CN;q=0", "en"),
        ("*", "en"),
        ("garbage;;", "en"),
    ],
)
def test_the_locale_of_a_localized_message_follows_accept_language(accept: str | None, locale: str) -> None:
    assert negotiate_locale(accept, ["en", "zh-CN"]) == locale

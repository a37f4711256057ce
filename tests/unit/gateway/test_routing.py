"""Path templates and route discovery from the google.api.http annotations."""

import pytest

from gateway.routing import Router, TemplateError, discover_routes, load_contracts, parse_template

ROUTES = discover_routes(load_contracts())
CS = {"customer_id": "c1", "subscription_id": "s1"}


def test_simple_variable_and_verb() -> None:
    t = parse_template("/v1/customers/{customer_id}:verify")
    assert t.verb == "verify"
    assert t.match("/v1/customers/c-1") == {"customer_id": "c-1"}
    assert t.openapi_path == "/v1/customers/{customer_id}:verify"


def test_variable_with_sub_template_and_double_wildcard() -> None:
    t = parse_template("/v1/{name=projects/*/books/**}")
    assert t.match("/v1/projects/p1/books/a/b") == {"name": "projects/p1/books/a/b"}
    assert t.match("/v1/shelves/p1/books/a") is None


def test_nested_field_path_and_percent_decoding() -> None:
    t = parse_template("/v1/customers/{customer.customer_id}")
    assert t.match("/v1/customers/a%20b") == {"customer.customer_id": "a b"}


@pytest.mark.parametrize("bad", ["v1/x", "/v1/{x", "/v1/**/x", "/v1/{1x}", "/v1/x:"])
def test_malformed_templates_are_refused(bad: str) -> None:
    with pytest.raises(TemplateError):
        parse_template(bad)


def test_every_http_rule_of_every_service_becomes_a_route() -> None:
    from google.api import annotations_pb2

    from bank.api.v1 import options_pb2

    expected = set()
    for file in load_contracts():
        for service in file.services_by_name.values():
            for method in service.methods:
                options = method.GetOptions()
                if not options.HasExtension(annotations_pb2.http) or options.Extensions[options_pb2.internal]:
                    continue
                rule = options.Extensions[annotations_pb2.http]
                for binding in [rule, *rule.additional_bindings]:
                    kind = binding.WhichOneof("pattern")
                    expected.add((kind.upper(), getattr(binding, kind), method.full_name))
    got = {(r.http_method, r.template.raw, r.method.full_name) for r in ROUTES}
    assert expected and got == expected


def test_internal_methods_are_not_exposed() -> None:
    assert "GetEligibilityProfile" not in {r.method.name for r in ROUTES}


@pytest.mark.parametrize(
    ("method", "path", "rpc", "params"),
    [
        ("GET", "/v1/customers/c1", "GetCustomer", {"customer_id": "c1"}),
        ("GET", "/v1/customers", "ListCustomers", {}),
        ("PATCH", "/v1/customers/c1", "UpdateCustomer", {"customer.customer_id": "c1"}),
        ("POST", "/v1/customers/c1:verify", "VerifyCustomer", {"customer_id": "c1"}),
        ("POST", "/v1/customers/c1:assessRisk", "AssessRisk", {"customer_id": "c1"}),
        ("GET", "/v1/customers/c1/view", "GetCustomerView", {"customer_id": "c1"}),
        ("POST", "/v1/segments:refresh", "RefreshSegments", {}),
        ("GET", "/v1/segments/SEGMENT_NEW/customers", "ListSegmentMembers", {"segment": "SEGMENT_NEW"}),
        ("POST", "/v1/customers/c1/subscriptions/s1:close", "CloseSubscription", CS),
        ("POST", "/v1/customers/c1/subscriptions/s1/transactions", "PostTransaction", CS),
    ],
)  # fmt: skip
def test_router_matches_the_rest_table(method: str, path: str, rpc: str, params: dict) -> None:
    match = Router(ROUTES).match(method, path)
    assert match is not None
    assert match.route.method.name == rpc
    assert match.params == params


def test_unknown_paths_and_verbs_do_not_match() -> None:
    router = Router(ROUTES)
    assert router.match("GET", "/v1/nothing") is None
    assert router.match("POST", "/v1/customers/c1:explode") is None
    assert router.allowed_methods("/v1/customers/c1") == ["GET", "PATCH"]


def test_route_groups_follow_scopes_and_methods() -> None:
    groups = {r.method.name: r.group for r in ROUTES}
    assert groups["GetCustomer"] == "reads"
    assert groups["CreateCustomer"] == "writes"
    assert groups["CreateProduct"] == "admin"
    assert groups["RefreshSegments"] == "admin"

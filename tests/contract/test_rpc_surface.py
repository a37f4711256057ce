"""Every RPC is either reachable from channels through a google.api.http rule or marked
internal, carries the scopes of ARCHITECTURE §6, and the HTTP surface matches the REST table
of ARCHITECTURE §3 exactly (method + path template), row by row."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor as _descriptor

# ARCHITECTURE §6 (scopes). Internal RPCs are listed too: services enforce scopes on them.
EXPECTED_SCOPES: dict[str, list[str]] = {
    "bank.customer.v1.CustomerService.CreateCustomer": ["customers:write"],
    "bank.customer.v1.CustomerService.GetCustomer": ["customers:read"],
    "bank.customer.v1.CustomerService.UpdateCustomer": ["customers:write"],
    "bank.customer.v1.CustomerService.ListCustomers": ["customers:read"],
    "bank.customer.v1.CustomerService.VerifyCustomer": ["customers:write"],
    "bank.customer.v1.CustomerService.AssessRisk": ["customers:write"],
    "bank.customer.v1.CustomerService.CloseCustomer": ["customers:write"],
    "bank.customer.v1.CustomerService.GetEligibilityProfile": ["customers:read"],
    "bank.customer.v1.CustomerService.BatchGetEligibilityProfiles": ["customers:read"],
    "bank.product.v1.ProductService.CreateProduct": ["products:admin"],
    "bank.product.v1.ProductService.PublishProduct": ["products:admin"],
    "bank.product.v1.ProductService.RetireProduct": ["products:admin"],
    "bank.product.v1.ProductService.GetProduct": ["products:read"],
    "bank.product.v1.ProductService.ListProducts": ["products:read"],
    "bank.product.v1.ProductService.CheckEligibility": ["products:read"],
    "bank.product.v1.ProductService.CreateSubscription": ["subscriptions:write"],
    "bank.product.v1.ProductService.ListSubscriptions": ["subscriptions:read"],
    "bank.product.v1.ProductService.CloseSubscription": ["subscriptions:write"],
    "bank.product.v1.ProductService.PostTransaction": ["subscriptions:write"],
    "bank.product.v1.ProductService.ListTransactions": ["subscriptions:read"],
    "bank.datahub.v1.CustomerViewService.GetCustomerView": ["views:read"],
    "bank.datahub.v1.CustomerViewService.ListSegments": ["views:read"],
    "bank.datahub.v1.CustomerViewService.ListSegmentMembers": ["views:read"],
    "bank.datahub.v1.CustomerViewService.RefreshSegments": ["segments:admin"],
    # Added after ARCHITECTURE §6 was written (docs/contracts.md, "Routes added since ARCHITECTURE §3").
    "bank.datahub.v1.CustomerViewService.ListChurnRisks": ["views:read"],
    "bank.datahub.v1.OperationsService.GetPipelineStatus": ["ops:admin"],
    "bank.datahub.v1.OperationsService.ListDeadLetters": ["ops:admin"],
    "bank.datahub.v1.OperationsService.GetDeadLetter": ["ops:admin"],
    "bank.datahub.v1.OperationsService.ReplayDeadLetter": ["ops:admin"],
    "bank.datahub.v1.OperationsService.QuarantineDeadLetter": ["ops:admin"],
    "bank.datahub.v1.OperationsService.GetOutboxStatus": ["ops:admin"],
    "bank.datahub.v1.CustomerViewService.ListCustomerEvents": ["views:read"],
    "bank.customer.v1.CustomerOperationsService.GetOutboxStatus": ["ops:admin"],
    "bank.product.v1.ProductOperationsService.GetOutboxStatus": ["ops:admin"],
}
KNOWN_SCOPES = {
    "customers:read",
    "customers:write",
    "pii:read",
    "products:read",
    "products:admin",
    "subscriptions:read",
    "subscriptions:write",
    "views:read",
    "segments:admin",
    "ops:admin",
}
HTTP_METHODS = ("get", "put", "post", "delete", "patch")


def http_rule(method: _descriptor.MethodDescriptor) -> http_pb2.HttpRule | None:
    opts = method.GetOptions()
    if not opts.HasExtension(annotations_pb2.http):
        return None
    rule: http_pb2.HttpRule = opts.Extensions[annotations_pb2.http]
    return rule


def verb_and_path(rule: http_pb2.HttpRule) -> tuple[str, str]:
    kind = rule.WhichOneof("pattern")
    assert kind in HTTP_METHODS, f"unsupported http pattern {kind!r}"
    return kind.upper(), getattr(rule, kind)


def normalize_template(path: str) -> str:
    """`{customer.customer_id}` and `{customer_id=*}` → `{customer_id}`: the table names URL
    variables by the resource field, the proto binds them to (possibly nested) request fields."""
    return re.sub(r"\{([\w.]+)(=[^}]*)?\}", lambda m: "{" + m.group(1).rsplit(".", 1)[-1] + "}", path)


# --------------------------------------------------------------------------- per method


def test_every_rpc_is_routed_or_internal(method: _descriptor.MethodDescriptor, contracts) -> None:
    internal = method.GetOptions().Extensions[contracts.options.internal]
    rule = http_rule(method)
    if internal:
        assert rule is None, f"{method.full_name} is internal but has a google.api.http rule"
    else:
        assert rule is not None, f"{method.full_name}: no google.api.http rule and not marked internal"


def test_every_rpc_has_required_scopes(method: _descriptor.MethodDescriptor, contracts) -> None:
    scopes = list(method.GetOptions().Extensions[contracts.options.required_scopes])
    assert scopes, f"{method.full_name} has no (bank.api.v1.required_scopes)"
    assert set(scopes) <= KNOWN_SCOPES, f"{method.full_name}: unknown scopes {set(scopes) - KNOWN_SCOPES}"
    assert method.full_name in EXPECTED_SCOPES, f"{method.full_name}: add it to EXPECTED_SCOPES (ARCH §6)"
    assert scopes == EXPECTED_SCOPES[method.full_name]


def test_body_mapping_follows_aips(method: _descriptor.MethodDescriptor) -> None:
    rule = http_rule(method)
    if rule is None:
        return
    verb, path = verb_and_path(rule)
    name = method.name
    if verb == "GET":
        assert rule.body == "", f"{method.full_name}: GET must not have a body"
    elif ":" in path.rsplit("/", 1)[-1]:
        assert rule.body == "*", f"{method.full_name}: custom methods take body '*'"
    else:
        assert name.startswith(("Create", "Update", "Post")), f"{method.full_name}: unexpected standard method"
        resource = method.input_type.fields_by_name.get(rule.body)
        assert resource is not None, f"{method.full_name}: body {rule.body!r} is not a request field"
        assert resource.message_type is not None and resource.message_type == method.output_type, (
            f"{method.full_name}: body must be the resource the method returns"
        )
    assert not rule.additional_bindings, f"{method.full_name}: additional_bindings are not part of the surface"
    # Every path variable binds a (possibly nested) string/enum field of the request.
    for var in re.findall(r"\{([\w.]+)", path):
        desc: _descriptor.Descriptor | None = method.input_type
        fd: _descriptor.FieldDescriptor | None = None
        for part in var.split("."):
            assert desc is not None, f"{method.full_name}: path variable {var} walks into a scalar"
            fd = desc.fields_by_name.get(part)
            assert fd is not None, f"{method.full_name}: path variable {var} is not a request field"
            desc = fd.message_type
        assert fd is not None
        assert fd.type in (fd.TYPE_STRING, fd.TYPE_ENUM), f"{method.full_name}: {var} must be a string or enum"


def test_internal_rpcs_are_the_known_ones(contracts) -> None:
    internal = sorted(m.full_name for m in contracts.methods if m.GetOptions().Extensions[contracts.options.internal])
    assert internal == [
        "bank.customer.v1.CustomerService.BatchGetEligibilityProfiles",
        "bank.customer.v1.CustomerService.GetEligibilityProfile",
    ]


# --------------------------------------------------------------------------- REST table


@dataclass(frozen=True)
class Route:
    rpc: str  # Service.Method
    verb: str
    path: str


_VERB = r"(GET|POST|PUT|PATCH|DELETE)"


def parse_rest_table(markdown: str) -> list[Route]:
    """Parse the `| RPC | HTTP |` table of ARCHITECTURE §3 into one route per RPC.

    Cells compress several RPCs, e.g. `GetCustomer / UpdateCustomer (...) / ListCustomers` with
    `GET, PATCH /v1/customers/{customer_id}; GET /v1/customers`. Understood shorthands: a verb
    list applying to the next path, a bare path reusing the previous verb, `:verb` suffixes on
    the previous path, and `.../x/...` continuing the previous path at its `/x` segment.
    """
    lines = markdown.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if re.match(r"^\|\s*RPC\s*\|\s*HTTP\s*\|", line))
    except StopIteration as exc:
        raise AssertionError("REST table (| RPC | HTTP |) not found in ARCHITECTURE.md") from exc
    routes: list[Route] = []
    service = ""
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 2, f"unexpected REST table row: {line}"
        rpc_cell, http_cell = cells
        rpcs: list[str] = []
        for raw in rpc_cell.split("/"):
            name = re.sub(r"\(.*?\)", "", raw).strip()
            if "." in name:
                service, name = name.split(".", 1)
            assert service, f"row without a service: {line}"
            rpcs.append(f"{service}.{name}")
        pairs = _expand_http_cell(http_cell)
        assert len(pairs) == len(rpcs), f"cannot pair RPCs {rpcs} with routes {pairs} in row: {line}"
        routes += [Route(rpc, verb, path) for rpc, (verb, path) in zip(rpcs, pairs, strict=True)]
    return routes


def _expand_http_cell(cell: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pending: list[str] = []
    last_verb = ""
    last_path = ""
    for part in (p.strip() for p in re.split(r"[;,]", cell)):
        if not part:
            continue
        m = re.fullmatch(rf"(?:{_VERB}\s*)?(\S+)?", part)
        assert m, f"cannot parse {part!r} in {cell!r}"
        verb, path = m.group(1), m.group(2)
        if verb and not path:
            pending.append(verb)
            continue
        assert path, f"cannot parse {part!r} in {cell!r}"
        if path.startswith(":"):
            path = last_path.split(":", 1)[0] + path
        elif path.startswith("..."):
            rest = path[3:]
            anchor = "/" + rest.strip("/").split("/", 1)[0]
            idx = last_path.rfind(anchor)
            assert idx >= 0, f"cannot resolve {path!r} against {last_path!r}"
            path = last_path[:idx] + rest
        verbs = [*pending, verb] if verb else [*pending] or [last_verb]
        assert all(verbs), f"no HTTP verb for {part!r} in {cell!r}"
        out += [(v, path) for v in verbs]
        pending = []
        last_verb, last_path = verbs[-1], path
    assert not pending, f"dangling verbs {pending} in {cell!r}"
    return out


def test_rest_table_parser_understands_the_shorthands() -> None:
    table = (
        "| RPC | HTTP |\n|---|---|\n"
        "| S.A / B (x, y) / C | GET, PATCH /v1/a/{id}; GET /v1/a |\n"
        "| D / E | POST /v1/a/{id}:d, :e |\n"
        "| F / G / H | POST, GET /v1/a/{id}/s; POST .../s/{s_id}:close |\n"
        "| T.I / J | POST /v1/b, /v1/b/{id}:j |\n"
    )
    assert [(r.rpc, r.verb, r.path) for r in parse_rest_table(table)] == [
        ("S.A", "GET", "/v1/a/{id}"),
        ("S.B", "PATCH", "/v1/a/{id}"),
        ("S.C", "GET", "/v1/a"),
        ("S.D", "POST", "/v1/a/{id}:d"),
        ("S.E", "POST", "/v1/a/{id}:e"),
        ("S.F", "POST", "/v1/a/{id}/s"),
        ("S.G", "GET", "/v1/a/{id}/s"),
        ("S.H", "POST", "/v1/a/{id}/s/{s_id}:close"),
        ("T.I", "POST", "/v1/b"),
        ("T.J", "POST", "/v1/b/{id}:j"),
    ]


def _routes_by_rpc(contracts) -> dict[str, tuple[str, str]]:
    out = {}
    for method in contracts.methods:
        rule = http_rule(method)
        if rule is not None:
            verb, path = verb_and_path(rule)
            out[f"{method.containing_service.name}.{method.name}"] = (verb, normalize_template(path))
    return out


def test_rest_table_matches_annotations(architecture_md: str, contracts) -> None:
    table = parse_rest_table(architecture_md)
    assert len(table) >= 20, f"parsed only {len(table)} routes from the REST table"
    # Routes added after the (read-only) architecture was written, in the same form.
    added = Path(__file__).resolve().parents[2] / "docs" / "contracts.md"
    table += parse_rest_table(added.read_text(encoding="utf-8"))
    annotated = _routes_by_rpc(contracts)
    problems = []
    for route in table:
        got = annotated.get(route.rpc)
        if got is None:
            problems.append(f"{route.rpc}: in the REST table but no such RPC with an http rule")
        elif got != (route.verb, route.path):
            problems.append(f"{route.rpc}: table says {route.verb} {route.path}, proto says {got[0]} {got[1]}")
    extra = sorted(set(annotated) - {r.rpc for r in table})
    problems += [f"{rpc}: has an http rule but is not in the REST table" for rpc in extra]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("/v1/customers/{customer.customer_id}", "/v1/customers/{customer_id}"),
        ("/v1/x/{name=shelves/*}", "/v1/x/{name}"),
        ("/v1/segments:refresh", "/v1/segments:refresh"),
    ],
)
def test_normalize_template(template: str, expected: str) -> None:
    assert normalize_template(template) == expected

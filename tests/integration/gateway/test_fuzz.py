"""Property-based fuzzing of every route (hypothesis; schemathesis is not installed here).

Arbitrary JSON bodies, path values and query strings go through the gateway to validating
backends (the kit interceptor runs protovalidate): the gateway must never answer 5xx, and
every answer is either the route's 200 response or a google.rpc.Status matching the OpenAPI
error schema.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.routing import discover_routes, load_contracts
from tests.integration.gateway.conftest import Stack, auth

ROUTES = discover_routes(load_contracts())
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def _field_names(route: Any) -> list[str]:
    names = []
    for fd in route.method.input_type.fields:
        names += [fd.name, fd.json_name]
        if fd.message_type is not None:
            names += [f"{fd.json_name}.{sub.json_name}" for sub in fd.message_type.fields]
    return names


BODIES = st.one_of(
    JSON,
    st.dictionaries(st.sampled_from(sorted({n for r in ROUTES for n in _field_names(r)})), JSON, max_size=5),
)
SEGMENT = st.text(min_size=1, max_size=12).map(lambda s: quote(s, safe=""))
QUERY = st.lists(
    st.tuples(
        st.sampled_from(["pageSize", "page_size", "status", "kycVerified", "x", "pageToken"]), st.text(max_size=8)
    ),
    max_size=3,
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
async def test_no_input_yields_a_5xx_and_errors_match_the_schema(stack: Stack, data: st.DataObject) -> None:
    route = data.draw(st.sampled_from(ROUTES))
    path = route.template.openapi_path
    for var in route.template.variables:
        path = path.replace("{" + ".".join(var.field_path) + "}", data.draw(SEGMENT))
    query = data.draw(QUERY)
    kwargs: dict[str, Any] = {"params": query, "headers": auth()}
    if route.body:
        kwargs["json"] = data.draw(BODIES)
    response = await stack.client.request(route.http_method, path, **kwargs)
    assert response.status_code < 500, (route.full_method, path, kwargs.get("json"), response.text)
    if response.status_code != 200:
        schema = {**stack.app.openapi, "$ref": "#/components/schemas/google.rpc.Status"}
        jsonschema.validate(response.json(), schema)

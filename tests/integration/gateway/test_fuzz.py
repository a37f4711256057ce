"""Property-based fuzzing of every route (hypothesis; schemathesis is not installed here).

Arbitrary JSON bodies, path values and query strings go through the gateway to validating
backends (the kit interceptor runs protovalidate): the gateway must never answer 5xx, and
every answer is either the route's 200 response or a google.rpc.Status matching the OpenAPI
error schema.
"""

from __future__ import annotations

from typing import Any

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.routing import discover_routes, load_contracts
from tests.integration.gateway.conftest import Stack, auth
from tests.support.fuzz import ANY_JSON, request_path

ROUTES = discover_routes(load_contracts())


def _field_names(route: Any) -> list[str]:
    names = []
    for fd in route.method.input_type.fields:
        names += [fd.name, fd.json_name]
        if fd.message_type is not None:
            names += [f"{fd.json_name}.{sub.json_name}" for sub in fd.message_type.fields]
    return names


BODIES = st.one_of(
    ANY_JSON,
    st.dictionaries(st.sampled_from(sorted({n for r in ROUTES for n in _field_names(r)})), ANY_JSON, max_size=5),
)
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
    path = request_path(route, data.draw)
    query = data.draw(QUERY)
    kwargs: dict[str, Any] = {"params": query, "headers": auth()}
    if route.body:
        kwargs["json"] = data.draw(BODIES)
    response = await stack.client.request(route.http_method, path, **kwargs)
    assert response.status_code < 500, (route.full_method, path, kwargs.get("json"), response.text)
    if response.status_code != 200:
        schema = {**stack.app.openapi, "$ref": "#/components/schemas/google.rpc.Status"}
        jsonschema.validate(response.json(), schema)

"""Hypothesis strategies shared by the gateway fuzz tests (in-process and against the platform)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

#: Any JSON value: scalars (integers beyond 64 bits included), lists and objects, nested.
ANY_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)

#: One URL-encoded path segment: any text, slashes and all.
PATH_SEGMENT = st.text(min_size=1, max_size=12).map(lambda s: quote(s, safe=""))


def request_path(route: Any, draw: Callable[[Any], Any]) -> str:
    """The route's path with every template variable replaced by a drawn segment."""
    path: str = route.template.openapi_path
    for var in route.template.variables:
        path = path.replace("{" + ".".join(var.field_path) + "}", draw(PATH_SEGMENT))
    return path

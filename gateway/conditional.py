"""Conditional requests (RFC 9110 §13) on resources that carry an AIP-154 ``etag`` (ADR 0016).

The services hold the version and compare etags inside the transaction that changes the
resource; the gateway only translates HTTP to the contract and back:

- a response whose message has a top-level ``etag`` gets it as the ``ETag`` header (reads and
  writes alike; the value is already an entity tag, ``"…"``, the one format of the kit);
- ``If-None-Match`` on a GET is compared with the fetched resource's etag (weak comparison,
  ``*`` and lists allowed): a match is ``304 Not Modified`` with the ``ETag`` and no body;
- ``If-Match`` on a method whose request carries an etag (``etag``, or ``<resource>.etag`` of a
  PATCH/PUT update) is copied
  into it; the service's ``ETAG_MISMATCH`` then answers ``412 Precondition Failed``. ``*`` asks
  for no check (the resource exists or the service says 404).
- Either header on a method that cannot honour it is a 400 (``CONDITION_NOT_SUPPORTED``):
  silently ignoring a precondition would let a lost update through.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from gateway.routing import Route
from services.kit.errors import InvalidArgument

#: One entity tag (RFC 9110 §8.8.3): optional ``W/``, then a quoted string without ``"``.
_ENTITY_TAG = re.compile(r'^(W/)?"[\x21\x23-\x7e\x80-\xff]*"$')
_TAG_IN_LIST = re.compile(r'\s*((?:W/)?"[^"]*")\s*(?:,|$)')


def _etag_field(fields: Any) -> FieldDescriptor | None:
    fd = fields.get("etag")
    return fd if fd is not None and fd.type == FieldDescriptor.TYPE_STRING and not fd.is_repeated else None


@lru_cache(maxsize=1024)
def response_has_etag(route: Route) -> bool:
    """The route answers with a resource that carries an etag."""
    return not route.response_body and _etag_field(route.method.output_type.fields_by_name) is not None


@lru_cache(maxsize=1024)
def request_etag_path(route: Route) -> tuple[str, ...] | None:
    """Where the request carries the etag to check: ``("etag",)``, ``("customer", "etag")``, or None."""
    desc = route.method.input_type
    if _etag_field(desc.fields_by_name) is not None:
        return ("etag",)
    if route.body and route.body != "*" and route.http_method in ("PATCH", "PUT"):  # Update, not Create
        body = desc.fields_by_name[route.body].message_type
        if body is not None and _etag_field(body.fields_by_name) is not None:
            return (route.body, "etag")
    return None


def is_entity_tag(value: str) -> bool:
    return bool(_ENTITY_TAG.match(value))


def _not_supported(header: str, route: Route, why: str) -> InvalidArgument:
    return InvalidArgument(
        f"{header} is not supported by {route.http_method} {route.template.raw}: {why}",
        reason="CONDITION_NOT_SUPPORTED",
    )


def check_headers(route: Route, if_match: str | None, if_none_match: str | None) -> None:
    """400 for a conditional header the route cannot honour (before anything is called)."""
    if if_none_match is not None and route.http_method != "GET":
        raise _not_supported("If-None-Match", route, "it applies to reads (GET)")
    if if_none_match is not None and not response_has_etag(route):
        raise _not_supported("If-None-Match", route, "this resource carries no etag")
    if if_match is not None and request_etag_path(route) is None:
        raise _not_supported("If-Match", route, "this method changes no existing resource with an etag")


def apply_if_match(route: Route, request: Any, if_match: str) -> bool:
    """Copy the If-Match entity tag into the request's etag; True when a check was asked for."""
    value = if_match.strip()
    if value == "*":
        return False
    if not is_entity_tag(value):
        raise InvalidArgument(
            'If-Match must be one entity tag, e.g. If-Match: "3f2a…" (the resource\'s ETag), or *',
            reason="BAD_IF_MATCH",
        )
    path = request_etag_path(route)
    assert path is not None  # check_headers refused the route otherwise
    target = request
    for name in path[:-1]:
        target = getattr(target, name)
    current = getattr(target, path[-1])
    if current and current != value:
        raise InvalidArgument("the If-Match header and the etag in the body differ", reason="ETAG_CONFLICT")
    setattr(target, path[-1], value)
    return True


def none_match(if_none_match: str, etag: str) -> bool:
    """True when ``If-None-Match`` matches ``etag`` (weak comparison): answer 304."""
    value = if_none_match.strip()
    if value == "*":
        return bool(etag)
    if not etag:
        return False
    opaque = etag.removeprefix("W/")
    return any(tag.removeprefix("W/") == opaque for tag in _TAG_IN_LIST.findall(value))

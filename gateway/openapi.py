"""OpenAPI 3.1 from the same descriptors the router uses (so the document cannot drift).

Schemas follow proto3 JSON: lowerCamelCase names, enums as value names, int64 as strings,
Timestamp/Duration/FieldMask as strings, google.protobuf.Struct/Value as any JSON. Every
operation lists its bearer scopes (``security``), its path and query parameters — named as the
JSON fields are, lowerCamelCase (``customerId``, ``pageSize``) — its conditional headers and
``ETag`` where the resource has an etag, and the error shape (``google.rpc.Status``) for every
documented status. It is checked with openapi-spec-validator and by generating Python and
TypeScript clients from it (tests/e2e/test_channel_edges.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from bank.api.v1 import options_pb2
from gateway import conditional
from gateway.routing import Route
from gateway.transcode import _is_map
from services.kit.auth import ALL_SCOPES
from services.kit.masking import PII_READ_SCOPE

_INT64 = {
    FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64,
}  # fmt: skip
_INT32 = {
    FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_SFIXED32,
}  # fmt: skip
_WKT: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {"type": "string", "description": "comma-separated field paths"},
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Any": {"type": "object", "properties": {"@type": {"type": "string"}}, "required": ["@type"]},
    "google.protobuf.StringValue": {"type": ["string", "null"]},
    "google.protobuf.BytesValue": {"type": ["string", "null"], "contentEncoding": "base64"},
    "google.protobuf.BoolValue": {"type": ["boolean", "null"]},
    "google.protobuf.Int32Value": {"type": ["integer", "null"], "format": "int32"},
    "google.protobuf.UInt32Value": {"type": ["integer", "null"], "format": "uint32"},
    "google.protobuf.Int64Value": {"type": ["string", "null"], "format": "int64"},
    "google.protobuf.UInt64Value": {"type": ["string", "null"], "format": "uint64"},
    "google.protobuf.FloatValue": {"type": ["number", "null"]},
    "google.protobuf.DoubleValue": {"type": ["number", "null"]},
}
ERROR_SCHEMA = "google.rpc.Status"
_KEY_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
ERROR_STATUSES = {
    "400": "Invalid request (malformed JSON, wrong types, unknown fields, failed validation or precondition)",
    "401": "Missing, invalid or expired bearer token",
    "403": "The token lacks a required scope",
    "404": "Not found",
    "409": "Conflict (already exists, stale etag, Idempotency-Key reused for another request)",
    "413": "Request body too large",
    "415": "The body is not JSON (send Content-Type: application/json)",
    "429": "Quota exceeded (see Retry-After)",
    "503": "A backend service is unavailable, or the resource is not ready yet (e.g. VIEW_NOT_BUILT); see Retry-After",
    "504": "Deadline exceeded",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


class _Schemas:
    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def enum(self, desc: EnumDescriptor) -> dict[str, Any]:
        if desc.full_name not in self.schemas:
            self.schemas[desc.full_name] = {
                "type": "string",
                "enum": [v.name for v in desc.values],
                "description": "Enum value name (the number is accepted on input too).",
            }
        return _ref(desc.full_name)

    def message(self, desc: Descriptor) -> dict[str, Any]:
        if desc.full_name in _WKT:
            return dict(_WKT[desc.full_name])
        if desc.full_name == "google.type.Date" and desc.full_name not in self.schemas:
            self.schemas[desc.full_name] = _DATE_SCHEMA
            return _ref(desc.full_name)
        if desc.full_name not in self.schemas:
            self.schemas[desc.full_name] = {}  # placeholder against recursion
            properties: dict[str, Any] = {}
            for fd in desc.fields:
                properties[fd.json_name] = self.field(fd)
            self.schemas[desc.full_name] = {"type": "object", "properties": properties, "additionalProperties": False}
        return _ref(desc.full_name)

    def scalar(self, fd: FieldDescriptor) -> dict[str, Any]:
        if fd.message_type is not None:
            return self.message(fd.message_type)
        if fd.enum_type is not None:
            return self.enum(fd.enum_type)
        t = fd.type
        if t == FieldDescriptor.TYPE_BOOL:
            return {"type": "boolean"}
        if t in _INT64:
            return {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"}
        if t in _INT32:
            return {"type": "integer", "format": "int32"}
        if t in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
            return {"type": "number"}
        if t == FieldDescriptor.TYPE_BYTES:
            return {"type": "string", "contentEncoding": "base64"}
        return {"type": "string"}

    def field(self, fd: FieldDescriptor) -> dict[str, Any]:
        if _is_map(fd) and fd.message_type is not None:
            value = fd.message_type.fields_by_name["value"]
            schema: dict[str, Any] = {"type": "object", "additionalProperties": self.scalar(value)}
        elif fd.is_repeated:
            schema = {"type": "array", "items": self.scalar(fd)}
        else:
            schema = self.scalar(fd)
        behaviors = set(fd.GetOptions().Extensions[field_behavior_pb2.field_behavior])
        if field_behavior_pb2.OUTPUT_ONLY in behaviors:
            schema = {**schema, "readOnly": True} if "$ref" not in schema else {"allOf": [schema], "readOnly": True}
        return schema


def _error_schemas(schemas: _Schemas) -> None:
    schemas.schemas[ERROR_SCHEMA] = {
        "type": "object",
        "description": "google.rpc.Status: gRPC code, message and typed details (ErrorInfo, BadRequest, ...).",
        "properties": {
            "code": {"type": "integer", "description": "canonical gRPC code (google.rpc.Code)"},
            "message": {"type": "string"},
            "details": {
                "type": "array",
                "items": {"type": "object", "properties": {"@type": {"type": "string"}}, "required": ["@type"]},
            },
        },
        "required": ["code", "message", "details"],
    }


_DATE_SCHEMA = {
    "type": "object",
    "description": "google.type.Date. Parts that are not specified are absent: a masked birth date is "
    'year only, {"year": 1974} (month and day absent); a full date has all three.',
    "properties": {
        "year": {"type": "integer", "format": "int32", "minimum": 0, "maximum": 9999},
        "month": {"type": "integer", "format": "int32", "minimum": 0, "maximum": 12},
        "day": {"type": "integer", "format": "int32", "minimum": 0, "maximum": 31},
    },
    "additionalProperties": False,
}


def _query_parameters(schemas: _Schemas, desc: Descriptor, bound: frozenset[str]) -> list[dict[str, Any]]:
    """Query parameters by their JSON names (``pageSize``, ``amount.currencyCode``); the gateway
    also accepts the proto names."""
    params: list[dict[str, Any]] = []

    def walk(message: Descriptor, prefix: str, json_prefix: str, depth: int) -> None:
        for fd in message.fields:
            name = f"{prefix}{fd.name}"
            json_name = f"{json_prefix}{fd.json_name}"
            if name in bound or _is_map(fd):
                continue
            target = fd.message_type
            if target is not None and target.full_name not in _WKT and not fd.is_repeated:
                if depth < 2:
                    walk(target, f"{name}.", f"{json_name}.", depth + 1)
                continue
            if target is not None and target.full_name not in _WKT:
                continue
            schema = schemas.field(fd)
            params.append({"name": json_name, "in": "query", "required": False, "schema": schema, "explode": True})

    walk(desc, "", "", 0)
    return params


def _path_names(route: Route) -> dict[str, str]:
    """Each path variable's parameter name: the JSON name of the field it sets (``customerId``
    for ``customer_id`` and for ``customer.customer_id``), the full JSON path if two would clash."""
    names: dict[str, str] = {}
    for var in route.template.variables:
        desc: Descriptor | None = route.method.input_type
        parts = []
        for name in var.field_path:
            fd = desc.fields_by_name[name] if desc is not None else None
            parts.append(fd.json_name if fd is not None else name)
            desc = fd.message_type if fd is not None else None
        names[".".join(var.field_path)] = parts[-1]
    if len(set(names.values())) < len(names):
        names = {k: k.replace(".", "_") for k in names}
    return names


def openapi_path(route: Route) -> str:
    """The route's key in ``paths``: its template with the parameter names of :func:`_path_names`."""
    path = route.template.openapi_path
    for field_path, name in _path_names(route).items():
        path = path.replace("{" + field_path + "}", "{" + name + "}")
    return path


def _holds_pii(desc: Descriptor, seen: frozenset[str] = frozenset()) -> bool:
    if desc.full_name in seen:
        return False
    for fd in desc.fields:
        if fd.GetOptions().Extensions[options_pb2.sensitivity] == options_pb2.SENSITIVITY_PII:
            return True
        if fd.message_type is not None and _holds_pii(fd.message_type, seen | {desc.full_name}):
            return True
    return False


_TIMEOUT_HEADER = {
    "name": "X-Timeout-Ms",
    "in": "header",
    "required": False,
    "schema": {"type": "integer", "minimum": 1},
    "description": "Deadline for this request in milliseconds (capped by the gateway).",
}


def _header(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "schema": {"type": "string"}, "description": description}


_ACCEPT_LANGUAGE_HEADER = _header(
    "Accept-Language", "Language of an error's LocalizedMessage detail (zh-CN or en; default en)."
)
_IF_MATCH_HEADER = _header(
    "If-Match", "The resource's ETag: the change is applied only if it still matches, else 412. * asks for no check."
)
_IF_NONE_MATCH_HEADER = _header(
    "If-None-Match", "ETag(s) of the copy you hold: 304 Not Modified (no body) while it is current."
)
_ETAG_RESPONSE_HEADER = {
    "ETag": {
        "description": "The resource's entity tag (the same string as its etag field).",
        "schema": {"type": "string"},
    }
}
_IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 8, "maxLength": 64, "pattern": _KEY_PATTERN},
    "description": "Makes retries safe: copied into request_id; a replay returns the first response.",
}


def _operation(schemas: _Schemas, route: Route) -> dict[str, Any]:
    """One route's OpenAPI operation: parameters (path, query, headers), body, responses."""
    desc = route.method.input_type
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _path_names(route).values()
    ]
    if route.body != "*":
        parameters.extend(_query_parameters(schemas, desc, route.bound_fields))
    if route.http_method != "GET":
        parameters.append(dict(_IDEMPOTENCY_HEADER))
    has_etag = conditional.response_has_etag(route)
    if route.http_method == "GET" and has_etag:
        parameters.append(dict(_IF_NONE_MATCH_HEADER))
    takes_if_match = conditional.request_etag_path(route) is not None
    if takes_if_match:
        parameters.append(dict(_IF_MATCH_HEADER))
    parameters.append(dict(_TIMEOUT_HEADER))
    parameters.append(dict(_ACCEPT_LANGUAGE_HEADER))
    errors = [c for c in ERROR_STATUSES if c != "415" or route.body]
    if takes_if_match:
        errors.append("412")
    ok: dict[str, Any] = {
        "description": "OK",
        "content": {"application/json": {"schema": schemas.message(route.method.output_type)}},
    }
    if has_etag:
        ok["headers"] = dict(_ETAG_RESPONSE_HEADER)
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": f"{route.method.containing_service.full_name}.{route.method.name}",
        "tags": [route.method.containing_service.name],
        "parameters": parameters,
        "security": [{"bearerAuth": list(route.scopes)}],
        "x-required-scopes": list(route.scopes),
        "x-grpc-method": route.full_method,
        "responses": {
            "200": ok,
            **({"304": {"description": "Not Modified: your copy is current", "headers": dict(_ETAG_RESPONSE_HEADER)}}
               if route.http_method == "GET" and has_etag else {}),
            **{code: {"$ref": f"#/components/responses/E{code}"} for code in sorted(errors)},
            "default": {"$ref": "#/components/responses/Error"},
        },
    }  # fmt: skip
    if _holds_pii(route.method.output_type):
        operation["x-optional-scopes"] = [PII_READ_SCOPE]
        operation["description"] = f"PII in the response is masked unless the token also holds {PII_READ_SCOPE}."
    if route.body:
        body_schema = schemas.message(desc) if route.body == "*" else schemas.field(desc.fields_by_name[route.body])
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body_schema}}}
    return operation


def build_openapi(routes: Iterable[Route], *, title: str = "Zhongtai API", version: str = "v1") -> dict[str, Any]:
    schemas = _Schemas()
    _error_schemas(schemas)
    paths: dict[str, dict[str, Any]] = {}
    all_scopes: set[str] = set()
    for route in routes:
        paths.setdefault(openapi_path(route), {})[route.http_method.lower()] = _operation(schemas, route)
        all_scopes.update(route.scopes)
    all_scopes.update(ALL_SCOPES)  # pii:read guards no method but unmasks responses
    statuses = {**ERROR_STATUSES, "412": "Precondition failed: the If-Match etag is not current (re-read, retry)"}
    responses = {
        f"E{code}": {"description": text, "content": {"application/json": {"schema": _ref(ERROR_SCHEMA)}}}
        for code, text in statuses.items()
    }
    responses["Error"] = {"description": "Error", "content": {"application/json": {"schema": _ref(ERROR_SCHEMA)}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "REST/JSON for channel apps, generated from the gRPC contracts (google.api.http).",
        },
        "servers": [{"url": "/"}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.schemas.items())),
            "responses": responses,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "OAuth2 access token (RFC 9068); scopes in the space-separated `scope` claim: "
                    + ", ".join(sorted(all_scopes)),
                }
            },
        },
    }

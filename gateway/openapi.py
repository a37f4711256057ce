"""OpenAPI 3.1 from the same descriptors the router uses (so the document cannot drift).

Schemas follow proto3 JSON: lowerCamelCase names, enums as value names, int64 as strings,
Timestamp/Duration/FieldMask as strings, google.protobuf.Struct/Value as any JSON. Every
operation lists its bearer scopes (``security``), its path and query parameters and the
error shape (``google.rpc.Status``) for every documented status.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from gateway.routing import Route
from gateway.transcode import _is_map

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


def _query_parameters(schemas: _Schemas, desc: Descriptor, bound: frozenset[str]) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []

    def walk(message: Descriptor, prefix: str, depth: int) -> None:
        for fd in message.fields:
            name = f"{prefix}{fd.name}"
            if name in bound or _is_map(fd):
                continue
            target = fd.message_type
            if target is not None and target.full_name not in _WKT and not fd.is_repeated:
                if depth < 2:
                    walk(target, f"{name}.", depth + 1)
                continue
            if target is not None and target.full_name not in _WKT:
                continue
            schema = schemas.field(fd)
            params.append({"name": name, "in": "query", "required": False, "schema": schema, "explode": True})

    walk(desc, "", 0)
    return params


_TIMEOUT_HEADER = {
    "name": "X-Timeout-Ms",
    "in": "header",
    "required": False,
    "schema": {"type": "integer", "minimum": 1},
    "description": "Deadline for this request in milliseconds (capped by the gateway).",
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
        {"name": ".".join(var.field_path), "in": "path", "required": True, "schema": {"type": "string"}}
        for var in route.template.variables
    ]
    if route.body != "*":
        parameters.extend(_query_parameters(schemas, desc, route.bound_fields))
    if route.http_method != "GET":
        parameters.append(dict(_IDEMPOTENCY_HEADER))
    parameters.append(dict(_TIMEOUT_HEADER))
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": f"{route.method.containing_service.full_name}.{route.method.name}",
        "tags": [route.method.containing_service.name],
        "parameters": parameters,
        "security": [{"bearerAuth": list(route.scopes)}],
        "x-required-scopes": list(route.scopes),
        "x-grpc-method": route.full_method,
        "responses": {
            "200": {
                "description": "OK",
                "content": {"application/json": {"schema": schemas.message(route.method.output_type)}},
            },
            **{code: {"$ref": f"#/components/responses/E{code}"} for code in ERROR_STATUSES},
            "default": {"$ref": "#/components/responses/Error"},
        },
    }
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
        paths.setdefault(route.template.openapi_path, {})[route.http_method.lower()] = _operation(schemas, route)
        all_scopes.update(route.scopes)
    responses = {
        f"E{code}": {"description": text, "content": {"application/json": {"schema": _ref(ERROR_SCHEMA)}}}
        for code, text in ERROR_STATUSES.items()
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

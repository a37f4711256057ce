"""The contract documents of whatever generated code is importable: OpenAPI and AsyncAPI.

``python -m devtools.contract_docs OUT_DIR`` writes ``openapi.json`` and ``asyncapi.json``.
The mutation tests run it with a mutated, freshly compiled ``bank`` package first on
``PYTHONPATH``; ``make contract`` and ``make contract-release`` call :func:`documents`.

- **OpenAPI**: the gateway's own builder (``gateway.openapi.build_openapi`` over
  ``gateway.routing.discover_routes``), exactly the document served at ``/openapi.json``, plus
  the request constraints the protos declare with protovalidate, so that the REST gate sees a
  tightened rule like any other breaking change: ``required``, string ``minLength``/
  ``maxLength``/``pattern``/``enum`` (``in``), integer bounds, ``minItems``/``maxItems``, an
  enum narrowed by ``in``/``not_in``; and per operation ``x-validation-rules``, the CEL rules
  (id and expression) reachable from its request message, which JSON Schema cannot express.
- **AsyncAPI**: ``gateway.asyncapi.build_asyncapi``, the document served at ``/asyncapi.json``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor

VALIDATION_VIEW = "served /openapi.json + protovalidate request constraints (devtools/contract_docs.py)"
_INTEGER_BOUNDS = {"gte": "minimum", "lte": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}
_INT_RULES = ("int32", "uint32", "sint32", "fixed32", "sfixed32")


def _field_rules(fd: FieldDescriptor) -> Any | None:
    from buf.validate import validate_pb2

    options = fd.GetOptions()
    return options.Extensions[validate_pb2.field] if options.HasExtension(validate_pb2.field) else None


def _string_constraints(rules: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for proto_name, schema_name in (("min_len", "minLength"), ("max_len", "maxLength"), ("pattern", "pattern")):
        if rules.HasField(proto_name):
            out[schema_name] = getattr(rules, proto_name)
    if rules.HasField("const"):
        out["const"] = rules.const
    if len(rules.__getattribute__("in")):
        out["enum"] = sorted(getattr(rules, "in"))
    return out


def _scalar_constraints(fd: FieldDescriptor, rules: Any) -> dict[str, Any]:
    kind = rules.WhichOneof("type")
    if kind == "string":
        return _string_constraints(rules.string)
    if kind in _INT_RULES:
        typed = getattr(rules, kind)
        return {name: getattr(typed, attr) for attr, name in _INTEGER_BOUNDS.items() if typed.HasField(attr)}
    if kind == "enum" and fd.enum_type is not None:
        typed = rules.enum
        allowed = [v for v in fd.enum_type.values if not len(getattr(typed, "in")) or v.number in getattr(typed, "in")]
        allowed = [v for v in allowed if v.number not in typed.not_in]
        if len(allowed) != len(fd.enum_type.values):
            return {"type": "string", "enum": [v.name for v in allowed]}
    return {}


def _property_constraints(fd: FieldDescriptor, rules: Any) -> dict[str, Any]:
    if fd.is_repeated and rules.WhichOneof("type") == "repeated":
        typed = rules.repeated
        out = {name: getattr(typed, attr) for attr, name in (("min_items", "minItems"), ("max_items", "maxItems"))
               if typed.HasField(attr)}  # fmt: skip
        if typed.HasField("items"):
            item = _scalar_constraints(fd, typed.items)
            if item:
                out["items"] = item
        return out
    return _scalar_constraints(fd, rules)


def _apply_field_rules(schema: dict[str, Any], message: Descriptor) -> None:
    properties = schema.get("properties", {})
    required: set[str] = set(schema.get("required", []))
    for fd in message.fields:
        rules = _field_rules(fd)
        if rules is None or fd.json_name not in properties:
            continue
        if rules.required:
            required.add(fd.json_name)
        extra = _property_constraints(fd, rules)
        if not extra:
            continue
        prop = properties[fd.json_name]
        if "enum" in extra and "$ref" in prop:
            properties[fd.json_name] = extra  # the enum narrowed for this field only
        elif "items" in extra and isinstance(prop.get("items"), dict):
            prop["items"] = {**prop["items"], **extra.pop("items")}
            prop.update(extra)
        else:
            prop.update(extra)
    if required:
        schema["required"] = sorted(required)


def _cel_rules(message: Descriptor, seen: set[str] | None = None) -> Iterator[str]:
    """``id: expression`` of every CEL rule on ``message``, its fields, and messages they hold."""
    from buf.validate import validate_pb2

    seen = seen if seen is not None else set()
    if message.full_name in seen or message.full_name.startswith("google."):
        return
    seen.add(message.full_name)
    options = message.GetOptions()
    if options.HasExtension(validate_pb2.message):
        for rule in options.Extensions[validate_pb2.message].cel:
            yield f"{message.full_name}: {rule.id}: {rule.expression}"
    for fd in message.fields:
        rules = _field_rules(fd)
        if rules is not None:
            for rule in rules.cel:
                yield f"{fd.full_name}: {rule.id}: {rule.expression}"
        if fd.message_type is not None:
            yield from _cel_rules(fd.message_type, seen)


def _messages(files: Sequence[FileDescriptor]) -> dict[str, Descriptor]:
    out: dict[str, Descriptor] = {}

    def walk(messages: Any) -> None:
        for m in messages:
            out[m.full_name] = m
            walk(m.nested_types)

    for file in files:
        walk(file.message_types_by_name.values())
    return out


def openapi_view(files: Sequence[FileDescriptor]) -> dict[str, Any]:
    """The gateway's OpenAPI document with the protos' request constraints added (see module doc)."""
    from gateway.openapi import build_openapi, openapi_path
    from gateway.routing import discover_routes

    routes = discover_routes(files)
    doc = build_openapi(routes)
    messages = _messages(files)
    for name, schema in doc["components"]["schemas"].items():
        if name in messages and isinstance(schema, dict) and "properties" in schema:
            _apply_field_rules(schema, messages[name])
    for route in routes:
        operation = doc["paths"][openapi_path(route)][route.http_method.lower()]
        rules = sorted(set(_cel_rules(route.method.input_type)))
        if rules:
            operation["x-validation-rules"] = rules
    doc["x-contract-view"] = VALIDATION_VIEW
    return doc


def documents() -> dict[str, dict[str, Any]]:
    """``{"openapi.json": ..., "asyncapi.json": ...}`` of the importable contracts."""
    from gateway.asyncapi import build_asyncapi
    from gateway.routing import load_contracts

    files = load_contracts()
    return {"openapi.json": openapi_view(files), "asyncapi.json": build_asyncapi(files)}


def dump(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1, ensure_ascii=False, sort_keys=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m devtools.contract_docs OUT_DIR", file=sys.stderr)
        return 2
    out = Path(args[0])
    out.mkdir(parents=True, exist_ok=True)
    for name, doc in documents().items():
        (out / name).write_text(dump(doc), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

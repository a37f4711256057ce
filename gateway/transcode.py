"""HTTP/JSON ↔ protobuf for one route: body, path variables and query parameters into ONE
``json_format.ParseDict`` call; the response back with ``MessageToDict`` + orjson.

Choices (documented in docs/api.md):
- JSON field names: proto3 lowerCamelCase or the original proto names; both spellings of one
  field in the same object is a 400.
- Unknown JSON fields and unknown query parameters are refused with 400 naming the field
  (a typo must not silently drop data in a bank).
- Path variables win over the same field in the body (the URL names the resource).
- Query parameters are accepted only when the rule's body is not ``*``; they address fields
  not bound by the path or the body, by (dotted) proto or JSON name, and are coerced by the
  field's type: bool (true/false/1/0), integers (int64 as decimal strings), floats, enums
  (value name or number), strings, bytes (base64), Timestamp/Duration/FieldMask (their JSON
  string forms; FieldMask paths may be snake_case or lowerCamelCase) and wrappers; repeated
  fields take the parameter several times (``?a=1&a=2``).
- Responses print fields that have no presence with their zero value (``"eligible": false``),
  so channel apps never have to know proto3's default-omission rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from gateway.routing import Route
from services.kit.errors import FieldViolation, InvalidArgument

# Well-known types whose JSON form is not an object of their fields: json_format handles them.
_WKT_PREFIX = "google.protobuf."
_STRING_WKTS = frozenset(
    f"google.protobuf.{n}"
    for n in ("Timestamp", "Duration", "FieldMask", "StringValue", "BytesValue", "Int64Value", "UInt64Value")
)
_NUMBER_WKTS = frozenset(f"google.protobuf.{n}" for n in ("Int32Value", "UInt32Value", "FloatValue", "DoubleValue"))
_INT_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
    }
)  # fmt: skip
_FLOAT_TYPES = frozenset({FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE})
_INT_RE = re.compile(r"^-?[0-9]+$")


def _invalid(field: str, description: str, reason: str = "INVALID_FIELD") -> InvalidArgument:
    return InvalidArgument(f"{field}: {description}", reason=reason, violations=[FieldViolation(field, description)])


@lru_cache(maxsize=4096)
def _fields(desc: Descriptor) -> dict[str, FieldDescriptor]:
    """Both spellings of every field name → its descriptor."""
    index: dict[str, FieldDescriptor] = {}
    for fd in desc.fields:
        index[fd.name] = fd
        index[fd.json_name] = fd
    return index


def _is_map(fd: FieldDescriptor) -> bool:
    return fd.message_type is not None and fd.message_type.GetOptions().map_entry


def type_name(fd: FieldDescriptor) -> str:
    """What a channel app should send for this field, in words."""
    if _is_map(fd):
        return "a JSON object (map)"
    if fd.is_repeated:
        return "a JSON array"
    if fd.message_type is not None:
        full = fd.message_type.full_name
        if full == "google.protobuf.Timestamp":
            return "an RFC 3339 timestamp string"
        if full == "google.protobuf.Duration":
            return "a duration string such as '1.5s'"
        if full == "google.protobuf.FieldMask":
            return "a comma-separated list of field paths"
        return "a JSON object"
    if fd.enum_type is not None:
        names = ", ".join(v.name for v in fd.enum_type.values[:8])
        return f"one of {names}"
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return "true or false"
    if fd.type in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
                   FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64):  # fmt: skip
        return "an integer (or a decimal string)"
    if fd.type in _INT_TYPES:
        return "an integer"
    if fd.type in _FLOAT_TYPES:
        return "a number"
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return "a base64 string"
    return "a string"


def _camel_mask(value: str) -> str:
    """FieldMask paths in either spelling → the lowerCamelCase json_format expects."""

    def camel(segment: str) -> str:
        head, *rest = segment.split("_")
        return head + "".join(p[:1].upper() + p[1:] for p in rest)

    return ",".join(".".join(camel(s) for s in p.strip().split(".")) for p in value.split(",") if p.strip())


def normalize_message(desc: Descriptor, value: Any, path: str) -> dict[str, Any]:
    """A JSON object for ``desc`` with proto field names; unknown or doubled fields are 400s."""
    if not isinstance(value, dict):
        raise _invalid(path or "body", "expected a JSON object")
    index = _fields(desc)
    out: dict[str, Any] = {}
    for key, item in value.items():
        fd = index.get(key)
        where = f"{path}.{key}" if path else key
        if fd is None:
            raise _invalid(where, "unknown field", reason="UNKNOWN_FIELD")
        if fd.name in out:
            raise _invalid(where, f"field given twice (as {fd.name!r} and {fd.json_name!r})", reason="DUPLICATE_FIELD")
        out[fd.name] = normalize_field(fd, item, f"{path}.{fd.name}" if path else fd.name)
    return out


def normalize_field(fd: FieldDescriptor, value: Any, path: str) -> Any:
    message = fd.message_type
    if message is None or value is None:
        return value
    if _is_map(fd):
        value_fd = message.fields_by_name["value"]
        if isinstance(value, dict) and value_fd.message_type is not None:
            return {k: normalize_field(value_fd, v, f"{path}[{k!r}]") for k, v in value.items()}
        return value
    if fd.is_repeated:
        if isinstance(value, list) and not message.full_name.startswith(_WKT_PREFIX):
            return [normalize_message(message, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value
    if message.full_name == "google.protobuf.FieldMask" and isinstance(value, str):
        return _camel_mask(value)
    if message.full_name.startswith(_WKT_PREFIX):
        return value
    return normalize_message(message, value, path)


def _resolve(desc: Descriptor, dotted: str) -> tuple[list[FieldDescriptor], str]:
    """Field descriptors along a dotted name (either spelling); the canonical proto path."""
    chain: list[FieldDescriptor] = []
    current: Descriptor | None = desc
    for part in dotted.split("."):
        fd = _fields(current).get(part) if current is not None else None
        if fd is None or (chain and (chain[-1].is_repeated or _is_map(chain[-1]))):
            raise _invalid(dotted, "unknown field", reason="UNKNOWN_FIELD")
        chain.append(fd)
        message = fd.message_type
        current = message if message is not None and not message.full_name.startswith(_WKT_PREFIX) else None
    return chain, ".".join(fd.name for fd in chain)


def _scalar_from_text(fd: FieldDescriptor, text: str, name: str) -> Any:
    """A query/path string as the JSON value json_format expects for this field."""
    message = fd.message_type
    if message is not None:
        full = message.full_name
        if full == "google.protobuf.FieldMask":
            return _camel_mask(text)
        if full in _STRING_WKTS or full in _NUMBER_WKTS:
            return text
        if full == "google.protobuf.BoolValue":
            return _bool(text, name)
        raise _invalid(name, "a message cannot be set from the URL; set its fields (e.g. name.field=...)")
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return _bool(text, name)
    if fd.enum_type is not None:
        return int(text) if _INT_RE.match(text) else text
    return text  # ints (incl. int64 as strings), floats, strings, bytes: json_format parses strings


def _bool(text: str, name: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise _invalid(name, "expected true or false")


def _set(data: dict[str, Any], chain: list[FieldDescriptor], value: Any, *, append: bool = False) -> None:
    target = data
    for fd in chain[:-1]:
        nxt = target.get(fd.name)
        if not isinstance(nxt, dict):
            nxt = {}
            target[fd.name] = nxt
        target = nxt
    leaf = chain[-1]
    if leaf.json_name != leaf.name:
        target.pop(leaf.json_name, None)
    if append:
        target.setdefault(leaf.name, []).append(value)
    else:
        target[leaf.name] = value


_PARSE_CHAIN = re.compile(r"Failed to parse (\S+) field")


def _violation_from_parse_error(desc: Descriptor, error: Exception) -> InvalidArgument:
    names = _PARSE_CHAIN.findall(str(error))
    if names:
        try:
            chain, path = _resolve(desc, ".".join(names))
        except InvalidArgument:
            return _invalid(".".join(names), "invalid value")
        return _invalid(path, f"invalid value: expected {type_name(chain[-1])}")
    return InvalidArgument("invalid request body", reason="INVALID_BODY")


def parse_json(raw: bytes) -> Any:
    """The request body as JSON (empty → {}); malformed JSON is a 400 naming the position."""
    if not raw.strip():
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(
            f"malformed JSON body: {exc.msg} at line {exc.lineno} column {exc.colno}",
            reason="MALFORMED_JSON",
        ) from None


def build_request(
    route: Route, path_params: dict[str, str], query: Iterable[tuple[str, str]], raw_body: bytes
) -> Message:
    """The request message of ``route``: body, then path variables, then query, parsed once."""
    direct = route.direct_path_fields
    if direct is not None and not query and not raw_body.strip():
        # Only top-level string fields from the path: json_format would just assign them.
        return route.input_class(**{name: path_params[var] for var, name in direct})  # type: ignore[no-any-return]
    desc = route.method.input_type
    data: dict[str, Any]
    if route.body == "*":
        data = normalize_message(desc, parse_json(raw_body), "")
    elif route.body:
        fd = desc.fields_by_name[route.body]
        body = parse_json(raw_body)
        data = {route.body: normalize_field(fd, body, route.body)} if body is not None else {}
    else:
        if raw_body.strip():
            raise InvalidArgument(f"{route.http_method} {route.template.raw} takes no request body", reason="NO_BODY")
        data = {}

    for dotted, text in path_params.items():
        chain, _ = _resolve(desc, dotted)
        _set(data, chain, _scalar_from_text(chain[-1], text, dotted))

    seen: set[str] = set()
    for name, text in query:
        if route.body == "*":
            raise _invalid(name, "unknown query parameter (this method takes all fields in the body)", "UNKNOWN_FIELD")
        try:
            chain, canonical = _resolve(desc, name)
        except InvalidArgument:
            raise _invalid(name, "unknown query parameter", reason="UNKNOWN_FIELD") from None
        if any(canonical == b or canonical.startswith(b + ".") for b in route.bound_fields):
            raise _invalid(name, "is set by the path or the body, not the query", reason="UNKNOWN_FIELD")
        leaf = chain[-1]
        if leaf.is_repeated and not _is_map(leaf):
            _set(data, chain, _scalar_from_text(leaf, text, name), append=True)
            continue
        if _is_map(leaf):
            raise _invalid(name, "a map cannot be set from the URL")
        if canonical in seen:
            raise _invalid(name, "given more than once but not repeated")
        seen.add(canonical)
        _set(data, chain, _scalar_from_text(leaf, text, name))

    message = route.input_class()
    try:
        json_format.ParseDict(data, message)
    except json_format.ParseError as exc:
        raise _violation_from_parse_error(desc, exc) from None
    return message  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------ responses

_PRINT_OPTIONS: dict[str, Any] = {"always_print_fields_with_no_presence": True}


def message_to_dict(message: Message) -> dict[str, Any]:
    """The response message as JSON data (lowerCamelCase, zero values printed), by json_format.

    (A hand-written printing plan saved ~47 µs a response, 7 % of the gateway's CPU per request:
    under the 20 % that would justify it — bench/libraries.py, docs/perf/libraries.md.)
    """
    return json_format.MessageToDict(message, **_PRINT_OPTIONS)


def render_response(route: Route, message: Message) -> bytes:
    """The response as JSON bytes (lowerCamelCase, zero values printed)."""
    if route.response_body:
        value = getattr(message, route.response_body)
        if isinstance(value, Message):
            message = value
        else:
            holder = message_to_dict(message)
            return orjson.dumps(holder.get(message.DESCRIPTOR.fields_by_name[route.response_body].json_name))
    return orjson.dumps(message_to_dict(message))

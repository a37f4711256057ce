"""protovalidate (buf.validate) constraints from the contract, enforced on every request."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from google.protobuf.message import Message

from services.kit.errors import FieldViolation, InvalidArgument


@lru_cache(maxsize=1)
def _validator() -> Any:
    import protovalidate

    return protovalidate.Validator()


def _path(violation: Any) -> str:
    parts: list[str] = []
    for element in violation.proto.field.elements:
        name = element.field_name
        which = element.WhichOneof("subscript")
        if which == "index":
            name = f"{name}[{element.index}]"
        elif which is not None:
            name = f"{name}[{getattr(element, which)!r}]"
        parts.append(name)
    return ".".join(parts)


def violations_of(message: Message) -> list[FieldViolation]:
    """Every constraint the message breaks, as (field path, description)."""
    result = _validator().collect_violations(message)
    return [FieldViolation(_path(v) or message.DESCRIPTOR.name, v.proto.message) for v in result]


def validate_request(message: Message) -> None:
    """Raise INVALID_ARGUMENT naming every offending field."""
    found = violations_of(message)
    if found:
        summary = "; ".join(f"{v.field}: {v.description}" for v in found[:5])
        raise InvalidArgument(f"invalid request: {summary}", reason="INVALID_FIELDS", violations=found)

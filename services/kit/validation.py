"""protovalidate (buf.validate) constraints from the contract, enforced on every request.

The rules are evaluated by :mod:`services.kit._fastvalidate`: a per-message plan of native
checks that yields exactly protovalidate's violations (path, rule id, message, order) and
falls back to protovalidate itself for any message using a rule it does not implement.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from services.kit import _fastvalidate
from services.kit.errors import FieldViolation, InvalidArgument


def _validator() -> Any:
    """The protovalidate validator (the fast path's fallback and reference)."""
    return _fastvalidate.protovalidate_validator()


_path = _fastvalidate.violation_path


def violations_of(message: Message) -> list[FieldViolation]:
    """Every constraint the message breaks, as (field path, description)."""
    name = message.DESCRIPTOR.name
    return [FieldViolation(path or name, text) for path, _rule_id, text in _fastvalidate.collect(message)]


def validate_request(message: Message) -> None:
    """Raise INVALID_ARGUMENT naming every offending field."""
    found = violations_of(message)
    if found:
        summary = "; ".join(f"{v.field}: {v.description}" for v in found[:5])
        raise InvalidArgument(f"invalid request: {summary}", reason="INVALID_FIELDS", violations=found)

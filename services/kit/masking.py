"""Masking driven by the contract: the ONE function that hides PII in any message.

Every field's ``(bank.api.v1.sensitivity)`` and ``(bank.api.v1.mask)`` options decide what
happens; no code here knows a field by name. :func:`mask_message` walks a message (nested
messages, repeated fields and maps included) in place:

- ``SENSITIVITY_SECRET``: always cleared, whoever asks.
- ``SENSITIVITY_PII``: masked by its mask style unless ``reveal_pii`` (the caller holds
  ``pii:read``); then left in clear and its path is returned, so the caller can audit the read.

Mask styles (values shorter than the kept parts are masked completely)::

    ID_NUMBER  110101199003071234 -> 110101********1234   (first 6 + last 4)
    MOBILE     13812345678        -> 138****5678          (first 3 + last 4)
    EMAIL      zhang@example.com  -> z***@example.com
    NAME       张三 / John         -> 张* / J***
    DATE       google.type.Date   -> year kept, month and day cleared
    FULL       anything           -> "***" (a message field: cleared)
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from functools import lru_cache
from typing import Any, NamedTuple

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

PII_READ_SCOPE = "pii:read"

# bank.api.v1 enum numbers (read from the generated module at first use, see _options()).
_PII = 3
_SECRET = 4


@lru_cache(maxsize=1)
def _options() -> Any:
    return importlib.import_module("bank.api.v1.options_pb2")


def can_read_pii(scopes: Iterable[str]) -> bool:
    """True when the caller's scopes include ``pii:read``."""
    return PII_READ_SCOPE in set(scopes)


def mask_string(value: str, style: int) -> str:
    """Mask one string value by a ``bank.api.v1.MaskStyle`` number ('' stays '')."""
    if not value:
        return value
    opts = _options()
    if style == opts.MASK_STYLE_ID_NUMBER:
        return _keep(value, 6, 4)
    if style == opts.MASK_STYLE_MOBILE:
        return _keep(value, 3, 4)
    if style == opts.MASK_STYLE_EMAIL:
        local, at, domain = value.rpartition("@")
        if not at or not local:
            return "***"
        return f"{local[0]}***@{domain}"
    if style == opts.MASK_STYLE_NAME:
        first = value.strip()[:1]
        if not first:
            return "***"
        # CJK names are short: one star per hidden character; Latin names get a fixed "***".
        hidden = len(value.strip()) - 1
        return first + ("*" * max(hidden, 1) if _is_cjk(first) else "***")
    return "***"


def _keep(value: str, head: int, tail: int) -> str:
    if len(value) <= head + tail:
        return "*" * len(value)
    return value[:head] + "*" * (len(value) - head - tail) + value[-tail:]


def _is_cjk(char: str) -> bool:
    return "\u3400" <= char <= "\u9fff" or "\uf900" <= char <= "\ufaff"


class _Field(NamedTuple):
    """What the walk needs of a field, read from its descriptor once (each descriptor attribute
    is a C call: a page of customers read them some 30 times per row)."""

    name: str
    sensitivity: int
    style: int
    repeated: bool
    message: bool  # a message field (presence by HasField)
    presence: bool  # a scalar with explicit presence
    string: bool
    map_entry: bool  # a map field
    map_of_messages: bool  # ... whose values are messages (walked per key)
    has_year: bool  # a message with a ``year`` field (DATE style keeps it)
    date_parts: tuple[str, ...]  # ... and the parts DATE style clears


@lru_cache(maxsize=512)
def _plan(descriptor: Descriptor) -> tuple[_Field, ...]:
    """The fields that are sensitive or may contain some, with what the walk needs of each."""
    opts = _options()
    plan = []
    for field in descriptor.fields:
        options = field.GetOptions()
        sensitivity = int(options.Extensions[opts.sensitivity])
        style = int(options.Extensions[opts.mask])
        kind = field.message_type
        if sensitivity in (_PII, _SECRET) or (kind is not None and _may_hold(kind)):
            by_name = kind.fields_by_name if kind is not None else {}
            map_entry = kind is not None and bool(kind.GetOptions().map_entry)
            plan.append(
                _Field(
                    name=field.name,
                    sensitivity=sensitivity,
                    style=style,
                    repeated=bool(field.is_repeated),
                    message=kind is not None,
                    presence=bool(field.has_presence),
                    string=field.type == FieldDescriptor.TYPE_STRING,
                    map_entry=map_entry,
                    map_of_messages=map_entry and by_name["value"].message_type is not None,
                    has_year="year" in by_name,
                    date_parts=tuple(part for part in ("month", "day") if part in by_name),
                )
            )
    return tuple(plan)


@lru_cache(maxsize=512)
def _may_hold(descriptor: Descriptor, _seen: frozenset[str] = frozenset()) -> bool:
    """Whether a message type can contain a PII/SECRET field anywhere below it."""
    if descriptor.full_name in _seen:
        return False
    opts = _options()
    seen = _seen | {descriptor.full_name}
    for field in descriptor.fields:
        if int(field.GetOptions().Extensions[opts.sensitivity]) in (_PII, _SECRET):
            return True
        if field.message_type is not None and _may_hold(field.message_type, seen):
            return True
    return False


def _is_set(message: Message, field: _Field) -> bool:
    if field.repeated:
        return len(getattr(message, field.name)) > 0
    if field.message or field.presence:
        return message.HasField(field.name)
    return bool(getattr(message, field.name))


def mask_message(message: Message, *, reveal_pii: bool, _prefix: str = "") -> list[str]:
    """Mask ``message`` in place; return the paths of PII fields left in clear (for the audit).

    With ``reveal_pii=False`` the returned list is empty. Paths use proto field names, with
    ``[i]`` for repeated elements and ``[key]`` for map entries.
    """
    revealed: list[str] = []
    for field in _plan(message.DESCRIPTOR):
        if not _is_set(message, field):
            continue
        if field.sensitivity == _SECRET:
            message.ClearField(field.name)
            continue
        if field.sensitivity == _PII:
            if reveal_pii:
                revealed.append(_prefix + field.name)
            else:
                _mask_field(message, field)
            if not field.message or not reveal_pii:
                continue
        if not field.message:
            continue
        path = _prefix + field.name
        value = getattr(message, field.name)
        if field.map_entry:
            if field.map_of_messages:
                for key in list(value):
                    revealed += mask_message(value[key], reveal_pii=reveal_pii, _prefix=f"{path}[{key}].")
        elif field.repeated:
            for i, item in enumerate(value):
                revealed += mask_message(item, reveal_pii=reveal_pii, _prefix=f"{path}[{i}].")
        else:
            revealed += mask_message(value, reveal_pii=reveal_pii, _prefix=f"{path}.")
    return revealed


def _mask_field(message: Message, field: _Field) -> None:
    name = field.name
    if field.message:
        if field.repeated or field.style != _options().MASK_STYLE_DATE or not field.has_year:
            message.ClearField(name)
            return
        date = getattr(message, name)
        for part in field.date_parts:
            date.ClearField(part)
        return
    if not field.string:
        message.ClearField(name)
        return
    if field.repeated:
        values = [mask_string(v, field.style) for v in getattr(message, name)]
        del getattr(message, name)[:]
        getattr(message, name).extend(values)
        return
    setattr(message, name, mask_string(getattr(message, name), field.style))


def masked_copy(message: Message) -> Message:
    """A masked copy (the original is untouched): for events, logs and span attributes."""
    copy = type(message)()
    copy.CopyFrom(message)
    mask_message(copy, reveal_pii=False)
    return copy

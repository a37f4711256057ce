"""Native evaluation of buf.validate rules: protovalidate's results at a fraction of its cost.

protovalidate 1.x (Python) evaluates every rule — including the standard ``string.max_len``
style rules — by interpreting CEL with cel-python: several milliseconds per request. This
module compiles, once per message descriptor, a *plan* of plain Python checks that produce the
same violations (field path as rendered by :func:`violation_path`, rule id and message, in the
same order) as ``protovalidate.Validator().collect_violations``.

What is native (everything else makes the plan of *that message* fall back to protovalidate,
so results stay identical; a nested message that falls back is validated by protovalidate and
its violations prefixed with the parent path, exactly as protovalidate's own recursion does):

* field ``required``, ``ignore`` (IGNORE_IF_ZERO_VALUE / IGNORE_ALWAYS / presence semantics);
* string ``const len min_len max_len len_bytes min_bytes max_bytes pattern prefix suffix
  contains not_contains in not_in email uuid example``;
* bytes ``len min_len max_len example``;
* all ten integer kinds ``const lt lte gt gte in not_in example`` (incl. the exclusive ranges);
* enum ``const defined_only in not_in example``;
* repeated ``min_items max_items unique items`` (items: any of the scalar rules above);
* field_mask ``const in not_in``;
* oneof ``required``, message ``oneof``; recursion into message, repeated and map-valued fields;
* ``cel`` / ``cel_expression`` rules (field and message level) whose expression is in a small,
  typed CEL subset: ``&& || !``, comparisons of int fields with int literals and of string
  fields with string literals, ``'lit' in this.repeated_string``, ``has(this.x)`` on fields with
  presence, ``.size() .matches('lit') .startsWith('lit') .endsWith('lit') .contains('lit')``.

Regex answers for short strings are memoised per pattern (google-re2 calls cost ~10 µs each).

Falls back: float/double/bool/timestamp/duration/any/map rules, wrapper-typed fields, rule
extensions (predefined custom rules), CEL outside the subset. The predefined CEL text of every
native rule is compared at plan time with what this module was written against, so a change of
validate.proto turns the affected rules into a fallback rather than a silent divergence.
"""

# The expected predefined-rule CEL below is verbatim validate.proto text: long lines on purpose.
# ruff: noqa: E501

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Any

import re2  # type: ignore[import-untyped]
from buf.validate import validate_pb2  # type: ignore[import-untyped]
from google.protobuf import descriptor as _d
from google.protobuf import unknown_fields
from google.protobuf.message import Message

Found = tuple[str, str, str]
"""One violation: (field path, rule id, message)."""

_Check = Callable[[Any, list[Found]], None]
_Fails = Callable[[Any], bool]
_Rule = tuple[_Fails, str, str]  # (value -> broken?, rule id, message)

_FD = _d.FieldDescriptor
_INT_TYPES = frozenset(
    {
        _FD.TYPE_INT32,
        _FD.TYPE_INT64,
        _FD.TYPE_SINT32,
        _FD.TYPE_SINT64,
        _FD.TYPE_SFIXED32,
        _FD.TYPE_SFIXED64,
        _FD.TYPE_ENUM,
    }
)
_UINT_TYPES = frozenset({_FD.TYPE_UINT32, _FD.TYPE_UINT64, _FD.TYPE_FIXED32, _FD.TYPE_FIXED64})
_INT_RULES = {
    "int32": _FD.TYPE_INT32,
    "int64": _FD.TYPE_INT64,
    "uint32": _FD.TYPE_UINT32,
    "uint64": _FD.TYPE_UINT64,
    "sint32": _FD.TYPE_SINT32,
    "sint64": _FD.TYPE_SINT64,
    "fixed32": _FD.TYPE_FIXED32,
    "fixed64": _FD.TYPE_FIXED64,
    "sfixed32": _FD.TYPE_SFIXED32,
    "sfixed64": _FD.TYPE_SFIXED64,
}
_IGNORE_IF_ZERO_VALUE = validate_pb2.IGNORE_IF_ZERO_VALUE


def _rule(fails: Callable[..., bool], rule_id: str, message: str) -> _Rule:
    return fails, rule_id, message


_IGNORE_ALWAYS = validate_pb2.IGNORE_ALWAYS


class _Unsupported(Exception):
    """A rule this module does not evaluate natively: the message falls back to protovalidate."""


# --------------------------------------------------------------------------------------------
# protovalidate glue (fallback, message formatting, path rendering)
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def protovalidate_validator() -> Any:
    import protovalidate

    return protovalidate.Validator()


def violation_path(violation: Any) -> str:
    """A protovalidate violation's field path: ``customer.full_name``, ``items[2]``, ``m['k']``."""
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


def _protovalidate_found(message: Message) -> list[Found]:
    return [
        (violation_path(v), v.proto.rule_id, v.proto.message)
        for v in protovalidate_validator().collect_violations(message)
    ]


@lru_cache(maxsize=1)
def _formatter() -> Any:
    from protovalidate.internal.string_format import StringFormat

    return StringFormat()


def _fmt(template: str, rules: Message, *names: str) -> str:
    """The message a predefined rule renders: protovalidate's own ``format`` of the rule values."""
    from celpy import celtypes
    from protovalidate.internal.rules import field_to_cel

    fields: Any = rules.DESCRIPTOR.fields_by_name
    args = celtypes.ListType([field_to_cel(rules, fields[name]) for name in names])
    result = _formatter().format(celtypes.StringType(template), args)
    if isinstance(result, Exception):
        raise _Unsupported(f"format {template!r}: {result}")
    return str(result)


def _search(pattern: str) -> Callable[[str], bool]:
    """CEL ``matches`` as protovalidate implements it: ``re2.search``."""
    try:
        compiled = re2.compile(pattern)
    except re2.error as exc:  # protovalidate raises at evaluation time: let it
        raise _Unsupported(f"pattern {pattern!r}: {exc}") from exc
    search = compiled.search

    # A google-re2 call costs ~10 µs of wrapper overhead; the values checked repeat a lot
    # (currency codes, ids of the same customers), so short texts' answers are memoised.
    @lru_cache(maxsize=4096)
    def cached(text: str) -> bool:
        return search(text) is not None

    def matches(text: str) -> bool:
        return cached(text) if len(text) <= 128 else search(text) is not None

    _MEMOS.append(cached)
    return matches


_MEMOS: list[Any] = []


def clear_memos() -> None:
    """Forget the memoised regex answers (benchmarks measure the cold cost with it)."""
    for memo in _MEMOS:
        memo.cache_clear()


# --------------------------------------------------------------------------------------------
# Predefined (standard) rules: the CEL text each native implementation mirrors
# --------------------------------------------------------------------------------------------

_R = "rules"
_INT_EXPR = {
    "const": [("const", "this != getField(rules, 'const') ? 'must equal %s'.format([getField(rules, 'const')]) : ''")],
    "lt": [
        ("lt", "!has(rules.gte) && !has(rules.gt) && this >= rules.lt? 'must be less than %s'.format([rules.lt]) : ''")
    ],
    "lte": [
        (
            "lte",
            "!has(rules.gte) && !has(rules.gt) && this > rules.lte? 'must be less than or equal to %s'.format([rules.lte]) : ''",
        )
    ],
    "gt": [
        (
            "gt",
            "!has(rules.lt) && !has(rules.lte) && this <= rules.gt? 'must be greater than %s'.format([rules.gt]) : ''",
        ),
        (
            "gt_lt",
            "has(rules.lt) && rules.lt >= rules.gt && (this >= rules.lt || this <= rules.gt)? 'must be greater than %s and less than %s'.format([rules.gt, rules.lt]) : ''",
        ),
        (
            "gt_lt_exclusive",
            "has(rules.lt) && rules.lt < rules.gt && (rules.lt <= this && this <= rules.gt)? 'must be greater than %s or less than %s'.format([rules.gt, rules.lt]) : ''",
        ),
        (
            "gt_lte",
            "has(rules.lte) && rules.lte >= rules.gt && (this > rules.lte || this <= rules.gt)? 'must be greater than %s and less than or equal to %s'.format([rules.gt, rules.lte]) : ''",
        ),
        (
            "gt_lte_exclusive",
            "has(rules.lte) && rules.lte < rules.gt && (rules.lte < this && this <= rules.gt)? 'must be greater than %s or less than or equal to %s'.format([rules.gt, rules.lte]) : ''",
        ),
    ],
    "gte": [
        (
            "gte",
            "!has(rules.lt) && !has(rules.lte) && this < rules.gte? 'must be greater than or equal to %s'.format([rules.gte]) : ''",
        ),
        (
            "gte_lt",
            "has(rules.lt) && rules.lt >= rules.gte && (this >= rules.lt || this < rules.gte)? 'must be greater than or equal to %s and less than %s'.format([rules.gte, rules.lt]) : ''",
        ),
        (
            "gte_lt_exclusive",
            "has(rules.lt) && rules.lt < rules.gte && (rules.lt <= this && this < rules.gte)? 'must be greater than or equal to %s or less than %s'.format([rules.gte, rules.lt]) : ''",
        ),
        (
            "gte_lte",
            "has(rules.lte) && rules.lte >= rules.gte && (this > rules.lte || this < rules.gte)? 'must be greater than or equal to %s and less than or equal to %s'.format([rules.gte, rules.lte]) : ''",
        ),
        (
            "gte_lte_exclusive",
            "has(rules.lte) && rules.lte < rules.gte && (rules.lte < this && this < rules.gte)? 'must be greater than or equal to %s or less than or equal to %s'.format([rules.gte, rules.lte]) : ''",
        ),
    ],
    "in": [("in", "!(this in getField(rules, 'in')) ? 'must be in list %s'.format([getField(rules, 'in')]) : ''")],
    "not_in": [("not_in", "this in rules.not_in ? 'must not be in list %s'.format([rules.not_in]) : ''")],
    "example": [("example", "true")],
}
_EXPECTED: dict[str, dict[str, list[tuple[str, str]]]] = {
    "string": {
        "const": [
            ("const", "this != getField(rules, 'const') ? 'must equal `%s`'.format([getField(rules, 'const')]) : ''")
        ],
        "len": [("len", "uint(this.size()) != rules.len ? 'must be %s characters'.format([rules.len]) : ''")],
        "min_len": [
            (
                "min_len",
                "uint(this.size()) < rules.min_len ? 'must be at least %s characters'.format([rules.min_len]) : ''",
            )
        ],
        "max_len": [
            (
                "max_len",
                "uint(this.size()) > rules.max_len ? 'must be at most %s characters'.format([rules.max_len]) : ''",
            )
        ],
        "len_bytes": [
            (
                "len_bytes",
                "uint(bytes(this).size()) != rules.len_bytes ? 'must be %s bytes'.format([rules.len_bytes]) : ''",
            )
        ],
        "min_bytes": [
            (
                "min_bytes",
                "uint(bytes(this).size()) < rules.min_bytes ? 'must be at least %s bytes'.format([rules.min_bytes]) : ''",
            )
        ],
        "max_bytes": [
            (
                "max_bytes",
                "uint(bytes(this).size()) > rules.max_bytes ? 'must be at most %s bytes'.format([rules.max_bytes]) : ''",
            )
        ],
        "pattern": [
            (
                "pattern",
                "!this.matches(rules.pattern) ? 'does not match regex pattern `%s`'.format([rules.pattern]) : ''",
            )
        ],
        "prefix": [
            ("prefix", "!this.startsWith(rules.prefix) ? 'does not have prefix `%s`'.format([rules.prefix]) : ''")
        ],
        "suffix": [
            ("suffix", "!this.endsWith(rules.suffix) ? 'does not have suffix `%s`'.format([rules.suffix]) : ''")
        ],
        "contains": [
            (
                "contains",
                "!this.contains(rules.contains) ? 'does not contain substring `%s`'.format([rules.contains]) : ''",
            )
        ],
        "not_contains": [
            (
                "not_contains",
                "this.contains(rules.not_contains) ? 'contains substring `%s`'.format([rules.not_contains]) : ''",
            )
        ],
        "in": _INT_EXPR["in"],
        "not_in": _INT_EXPR["not_in"],
        "email": [
            ("email", "!rules.email || this == '' || this.isEmail()"),
            ("email_empty", "!rules.email || this != ''"),
        ],
        "uuid": [
            (
                "uuid",
                "!rules.uuid || this == '' || this.matches('^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$')",
            ),
            ("uuid_empty", "!rules.uuid || this != ''"),
        ],
        "example": _INT_EXPR["example"],
    },
    "bytes": {
        "len": [("len", "uint(this.size()) != rules.len ? 'must be %s bytes'.format([rules.len]) : ''")],
        "min_len": [
            ("min_len", "uint(this.size()) < rules.min_len ? 'must be at least %s bytes'.format([rules.min_len]) : ''")
        ],
        "max_len": [
            ("max_len", "uint(this.size()) > rules.max_len ? 'must be at most %s bytes'.format([rules.max_len]) : ''")
        ],
        "example": _INT_EXPR["example"],
    },
    "enum": {
        "const": _INT_EXPR["const"],
        "defined_only": [],
        "in": _INT_EXPR["in"],
        "not_in": _INT_EXPR["not_in"],
        "example": _INT_EXPR["example"],
    },
    "repeated": {
        "min_items": [
            (
                "min_items",
                "uint(this.size()) < rules.min_items ? 'must contain at least %d item(s)'.format([rules.min_items]) : ''",
            )
        ],
        "max_items": [
            (
                "max_items",
                "uint(this.size()) > rules.max_items ? 'must contain no more than %s item(s)'.format([rules.max_items]) : ''",
            )
        ],
        "unique": [("unique", "!rules.unique || this.unique()")],
        "items": [],
    },
    "field_mask": {
        "const": [
            (
                "const",
                "this.paths != getField(rules, 'const').paths ? 'must equal paths %s'.format([getField(rules, 'const').paths]) : ''",
            )
        ],
        "in": [
            (
                "in",
                "!this.paths.all(p, p in getField(rules, 'in') || getField(rules, 'in').exists(f, p.startsWith(f+'.'))) ? 'must only contain paths in %s'.format([getField(rules, 'in')]) : ''",
            )
        ],
        "not_in": [
            (
                "not_in",
                "!this.paths.all(p, !(p in getField(rules, 'not_in') || getField(rules, 'not_in').exists(f, p.startsWith(f+'.')))) ? 'must not contain any paths in %s'.format([getField(rules, 'not_in')]) : ''",
            )
        ],
        "example": _INT_EXPR["example"],
    },
}
for _kind in _INT_RULES:
    _EXPECTED[_kind] = _INT_EXPR

_STATIC_MESSAGES = {
    "email": "must be a valid email address",
    "email_empty": "value is empty, which is not a valid email address",
    "uuid": "must be a valid UUID",
    "uuid_empty": "value is empty, which is not a valid UUID",
    "unique": "repeated value must contain unique items",
}


def _check_predefined(kind: str, rule_field: _d.FieldDescriptor) -> None:
    """The rule's CEL in validate.proto is the one the native code below was written against."""
    expected = _EXPECTED.get(kind, {}).get(rule_field.name)
    if expected is None or rule_field.is_extension:
        raise _Unsupported(f"{kind}.{rule_field.name}")
    actual = []
    options = rule_field.GetOptions()
    if validate_pb2.predefined in options.Extensions:
        actual = [
            (c.id.removeprefix(f"{kind}."), c.expression, c.message)
            for c in options.Extensions[validate_pb2.predefined].cel
        ]
    want = [(rule_id, expr, _STATIC_MESSAGES.get(rule_id, "")) for rule_id, expr in expected]
    if actual != want:
        raise _Unsupported(f"{kind}.{rule_field.name}: validate.proto changed")


def _int_rules(kind: str, rules: Message) -> list[_Rule]:
    out: list[_Rule] = []
    has = rules.HasField
    for rule_field, value in rules.ListFields():
        _check_predefined(kind, rule_field)
        name = rule_field.name
        rid = f"{kind}.{name}"
        if name == "const":
            out.append(_rule(lambda x, c=value: x != c, rid, _fmt("must equal %s", rules, "const")))
        elif name == "in":
            allowed = frozenset(value)
            out.append(_rule(lambda x, s=allowed: x not in s, rid, _fmt("must be in list %s", rules, "in")))
        elif name == "not_in":
            banned = frozenset(value)
            out.append(_rule(lambda x, s=banned: x in s, rid, _fmt("must not be in list %s", rules, "not_in")))
        elif name == "lt" and not has("gte") and not has("gt"):
            out.append(_rule(lambda x, b=value: x >= b, rid, _fmt("must be less than %s", rules, "lt")))
        elif name == "lte" and not has("gte") and not has("gt"):
            out.append(_rule(lambda x, b=value: x > b, rid, _fmt("must be less than or equal to %s", rules, "lte")))
        elif name in ("gt", "gte"):
            out.extend(_lower_bound_rules(kind, rules, name, value))
    return out


def _lower_bound_rules(kind: str, rules: Message, name: str, low: int) -> list[_Rule]:
    strict = name == "gt"
    text = "greater than" if strict else "greater than or equal to"

    def below(x: int) -> bool:
        return x <= low if strict else x < low

    if rules.HasField("lt"):
        up = rules.lt  # type: ignore[attr-defined]
        if up >= low:
            msg = _fmt(f"must be {text} %s and less than %s", rules, name, "lt")
            return [_rule(lambda x: x >= up or below(x), f"{kind}.{name}_lt", msg)]
        msg = _fmt(f"must be {text} %s or less than %s", rules, name, "lt")
        return [_rule(lambda x: up <= x and below(x), f"{kind}.{name}_lt_exclusive", msg)]
    if rules.HasField("lte"):
        up = rules.lte  # type: ignore[attr-defined]
        if up >= low:
            msg = _fmt(f"must be {text} %s and less than or equal to %s", rules, name, "lte")
            return [_rule(lambda x: x > up or below(x), f"{kind}.{name}_lte", msg)]
        msg = _fmt(f"must be {text} %s or less than or equal to %s", rules, name, "lte")
        return [_rule(lambda x: up < x and below(x), f"{kind}.{name}_lte_exclusive", msg)]
    return [_rule(below, f"{kind}.{name}", _fmt(f"must be {text} %s", rules, name))]


def _string_rules(rules: Message) -> list[_Rule]:
    out: list[_Rule] = []
    for rule_field, value in rules.ListFields():
        _check_predefined("string", rule_field)
        name = rule_field.name
        rid = f"string.{name}"
        if name == "const":
            out.append(_rule(lambda s, c=value: s != c, rid, _fmt("must equal `%s`", rules, "const")))
        elif name == "len":
            out.append(_rule(lambda s, n=value: len(s) != n, rid, _fmt("must be %s characters", rules, "len")))
        elif name == "min_len":
            out.append(
                _rule(lambda s, n=value: len(s) < n, rid, _fmt("must be at least %s characters", rules, "min_len"))
            )
        elif name == "max_len":
            out.append(
                _rule(lambda s, n=value: len(s) > n, rid, _fmt("must be at most %s characters", rules, "max_len"))
            )
        elif name == "len_bytes":
            msg = _fmt("must be %s bytes", rules, "len_bytes")
            out.append(_rule(lambda s, n=value: len(s.encode("utf-8")) != n, rid, msg))
        elif name == "min_bytes":
            msg = _fmt("must be at least %s bytes", rules, "min_bytes")
            out.append(_rule(lambda s, n=value: len(s.encode("utf-8")) < n, rid, msg))
        elif name == "max_bytes":
            msg = _fmt("must be at most %s bytes", rules, "max_bytes")
            out.append(_rule(lambda s, n=value: len(s.encode("utf-8")) > n, rid, msg))
        elif name == "pattern":
            matches = _search(value)
            msg = _fmt("does not match regex pattern `%s`", rules, "pattern")
            out.append(_rule(lambda s, m=matches: not m(s), rid, msg))
        elif name == "prefix":
            msg = _fmt("does not have prefix `%s`", rules, "prefix")
            out.append(_rule(lambda s, p=value: not s.startswith(p), rid, msg))
        elif name == "suffix":
            msg = _fmt("does not have suffix `%s`", rules, "suffix")
            out.append(_rule(lambda s, p=value: not s.endswith(p), rid, msg))
        elif name == "contains":
            msg = _fmt("does not contain substring `%s`", rules, "contains")
            out.append(_rule(lambda s, p=value: p not in s, rid, msg))
        elif name == "not_contains":
            msg = _fmt("contains substring `%s`", rules, "not_contains")
            out.append(_rule(lambda s, p=value: p in s, rid, msg))
        elif name == "in":
            allowed = frozenset(value)
            out.append(_rule(lambda s, a=allowed: s not in a, rid, _fmt("must be in list %s", rules, "in")))
        elif name == "not_in":
            banned = frozenset(value)
            out.append(_rule(lambda s, b=banned: s in b, rid, _fmt("must not be in list %s", rules, "not_in")))
        elif name in ("email", "uuid") and value:
            if name == "email":
                from protovalidate.internal.extra_func import _email_regex

                ok: _Fails = partial(_full_match, _email_regex)
            else:
                ok = _search("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
            out.append(_rule(lambda s, ok=ok: s != "" and not ok(s), rid, _STATIC_MESSAGES[name]))
            out.append(_rule(lambda s: s == "", f"{rid}_empty", _STATIC_MESSAGES[f"{name}_empty"]))
    return out


def _full_match(pattern: Any, text: str) -> bool:
    return pattern.fullmatch(text) is not None


def _bytes_rules(rules: Message) -> list[_Rule]:
    out: list[_Rule] = []
    for rule_field, value in rules.ListFields():
        _check_predefined("bytes", rule_field)
        name = rule_field.name
        rid = f"bytes.{name}"
        if name == "len":
            out.append(_rule(lambda b, n=value: len(b) != n, rid, _fmt("must be %s bytes", rules, "len")))
        elif name == "min_len":
            out.append(_rule(lambda b, n=value: len(b) < n, rid, _fmt("must be at least %s bytes", rules, "min_len")))
        elif name == "max_len":
            out.append(_rule(lambda b, n=value: len(b) > n, rid, _fmt("must be at most %s bytes", rules, "max_len")))
    return out


def _enum_rules(rules: Message) -> list[_Rule]:
    return _int_rules("enum", rules)


def _covered(path: str, listed: Sequence[str]) -> bool:
    return path in listed or any(path.startswith(f + ".") for f in listed)


def _field_mask_rules(rules: Message) -> list[_Rule]:
    out: list[_Rule] = []
    for rule_field, value in rules.ListFields():
        _check_predefined("field_mask", rule_field)
        name = rule_field.name
        rid = f"field_mask.{name}"
        if name == "const":
            want = list(value.paths)
            msg = _fmt("must equal paths %s", value, "paths")
            out.append(_rule(lambda m, w=want: list(m.paths) != w, rid, msg))
        elif name == "in":
            allowed = list(value)
            msg = _fmt("must only contain paths in %s", rules, "in")
            out.append(_rule(lambda m, a=allowed: not all(_covered(p, a) for p in m.paths), rid, msg))
        elif name == "not_in":
            banned = list(value)
            msg = _fmt("must not contain any paths in %s", rules, "not_in")
            out.append(_rule(lambda m, b=banned: not all(not _covered(p, b) for p in m.paths), rid, msg))
    return out


def _unique_ok(items: Any) -> bool:
    return len(items) == len(set(items))


def _repeated_rules(field: _d.FieldDescriptor, rules: Message) -> list[_Rule]:
    out: list[_Rule] = []
    for rule_field, value in rules.ListFields():
        _check_predefined("repeated", rule_field)
        name = rule_field.name
        rid = f"repeated.{name}"
        if name == "min_items":
            msg = _fmt("must contain at least %d item(s)", rules, "min_items")
            out.append(_rule(lambda v, n=value: len(v) < n, rid, msg))
        elif name == "max_items":
            msg = _fmt("must contain no more than %s item(s)", rules, "max_items")
            out.append(_rule(lambda v, n=value: len(v) > n, rid, msg))
        elif name == "unique" and value:
            if field.type in (_FD.TYPE_MESSAGE, _FD.TYPE_GROUP, _FD.TYPE_FLOAT, _FD.TYPE_DOUBLE):
                raise _Unsupported("repeated.unique on messages or floating point")
            out.append(_rule(lambda v: not _unique_ok(v), rid, _STATIC_MESSAGES["unique"]))
    return out


# --------------------------------------------------------------------------------------------
# A typed subset of CEL for custom `cel` rules
# --------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:(&&|\|\||==|!=|<=|>=|[<>!().,])|(\d+)(?![\w.])|'([^'\\\n]*)'|([A-Za-z_]\w*))")
_RELOPS = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
_Typ = Any  # "int" | "uint" | "string" | "bool" | "list_string" | message Descriptor
_Node = tuple[Callable[[Any], Any], _Typ]
_MAX_INT64 = 2**63 - 1


def _tokenize(expression: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    pos = 0
    stripped = expression.rstrip()
    while pos < len(stripped):
        m = _TOKEN.match(stripped, pos)
        if m is None:
            raise _Unsupported(f"CEL: cannot tokenize {expression!r} at {pos}")
        op, number, string, ident = m.groups()
        if op is not None:
            tokens.append(("op", op))
        elif number is not None:
            tokens.append(("int", int(number)))
        elif string is not None:
            tokens.append(("str", string))
        else:
            tokens.append(("id", ident))
        pos = m.end()
    return tokens


def _field_type(fd: _d.FieldDescriptor) -> _Typ:
    if _is_map(fd):
        raise _Unsupported("CEL: map fields")
    if _is_repeated(fd):
        if fd.type == _FD.TYPE_STRING:
            return "list_string"
        raise _Unsupported("CEL: repeated non-string fields")
    return _field_type_single(fd)


def _message_type(desc: _d.Descriptor) -> _d.Descriptor:
    # protovalidate turns well-known types into CEL timestamps, durations, wrappers... : not here.
    if desc.full_name.startswith("google.protobuf.") and desc.full_name != "google.protobuf.FieldMask":
        raise _Unsupported(f"CEL: {desc.full_name}")
    return desc


class _CelParser:
    """Recursive descent over the subset; every node is typed so nothing can error at run time."""

    def __init__(self, expression: str, this: _Typ) -> None:
        self.tokens = _tokenize(expression)
        self.pos = 0
        self.this = this

    def parse(self) -> Callable[[Any], bool]:
        fn, typ = self.or_()
        if self.pos != len(self.tokens) or typ != "bool":
            raise _Unsupported("CEL: not a boolean expression of the supported subset")
        return fn

    def peek(self, value: str) -> bool:
        return self.pos < len(self.tokens) and self.tokens[self.pos] == ("op", value)

    def expect(self, value: str) -> None:
        if not self.peek(value):
            raise _Unsupported(f"CEL: expected {value!r}")
        self.pos += 1

    def or_(self) -> _Node:
        return self._chain("||", self.and_, lambda a, b: lambda v: a(v) or b(v))

    def and_(self) -> _Node:
        return self._chain("&&", self.relation, lambda a, b: lambda v: a(v) and b(v))

    def _chain(
        self, op: str, operand: Callable[[], _Node], join: Callable[[Callable[[Any], Any], Callable[[Any], Any]], Any]
    ) -> _Node:
        """``operand (op operand)*`` over booleans, left-associative, short-circuiting."""
        fn, typ = operand()
        while self.peek(op):
            self.pos += 1
            rhs, rtyp = operand()
            if typ != "bool" or rtyp != "bool":
                raise _Unsupported(f"CEL: {op} needs booleans")
            fn = join(fn, rhs)
        return fn, typ

    def relation(self) -> _Node:
        lhs, ltyp = self.unary()
        if self.pos < len(self.tokens):
            kind, value = self.tokens[self.pos]
            if kind == "op" and value in _RELOPS:
                self.pos += 1
                rhs, rtyp = self.unary()
                if ltyp != rtyp or ltyp not in ("int", "uint", "string", "bool"):
                    raise _Unsupported("CEL: comparison of unsupported or mixed types")
                if ltyp in ("string", "bool") and value not in ("==", "!="):
                    raise _Unsupported("CEL: ordering of strings/bools")
                op = _RELOPS[value]
                return (lambda a, b: lambda v: op(a(v), b(v)))(lhs, rhs), "bool"
            if (kind, value) == ("id", "in"):
                self.pos += 1
                rhs, rtyp = self.unary()
                if ltyp != "string" or rtyp != "list_string":
                    raise _Unsupported("CEL: `in` needs a string and a repeated string")
                return (lambda a, b: lambda v: a(v) in b(v))(lhs, rhs), "bool"
        return lhs, ltyp

    def unary(self) -> _Node:
        if self.peek("!"):
            self.pos += 1
            fn, typ = self.unary()
            if typ != "bool":
                raise _Unsupported("CEL: ! needs a boolean")
            return (lambda a: lambda v: not a(v))(fn), "bool"
        return self.member()

    def member(self) -> _Node:
        fn, typ = self.primary()
        while self.peek("."):
            self.pos += 1
            name = self.ident()
            if self.peek("("):
                fn, typ = self.method(fn, typ, name)
                continue
            if not isinstance(typ, _d.Descriptor) or name not in typ.fields_by_name:
                raise _Unsupported(f"CEL: .{name}")
            fd = typ.fields_by_name[name]
            fn, typ = (lambda a, n: lambda v: getattr(a(v), n))(fn, name), _field_type(fd)
        return fn, typ

    def method(self, target: Callable[[Any], Any], typ: _Typ, name: str) -> _Node:
        self.expect("(")
        if name == "size" and typ == "string":
            self.expect(")")
            return (lambda a: lambda v: len(a(v)))(target), "int"
        if typ != "string" or self.pos >= len(self.tokens) or self.tokens[self.pos][0] != "str":
            raise _Unsupported(f"CEL: .{name}()")
        literal = self.tokens[self.pos][1]
        self.pos += 1
        self.expect(")")
        if name == "matches":
            matches = _search(literal)
            return (lambda a: lambda v: matches(a(v)))(target), "bool"
        if name == "startsWith":
            return (lambda a: lambda v: a(v).startswith(literal))(target), "bool"
        if name == "endsWith":
            return (lambda a: lambda v: a(v).endswith(literal))(target), "bool"
        if name == "contains":
            return (lambda a: lambda v: literal in a(v))(target), "bool"
        raise _Unsupported(f"CEL: .{name}()")

    def ident(self) -> str:
        if self.pos >= len(self.tokens) or self.tokens[self.pos][0] != "id":
            raise _Unsupported("CEL: expected an identifier")
        name = str(self.tokens[self.pos][1])
        self.pos += 1
        return name

    def primary(self) -> _Node:
        if self.pos >= len(self.tokens):
            raise _Unsupported("CEL: unexpected end")
        kind, value = self.tokens[self.pos]
        self.pos += 1
        if kind == "int":
            if value > _MAX_INT64:
                raise _Unsupported("CEL: int literal out of range")
            return (lambda v, c=value: c), "int"
        if kind == "str":
            return (lambda v, c=value: c), "string"
        if kind == "op" and value == "(":
            node = self.or_()
            self.expect(")")
            return node
        if kind == "id" and value in ("true", "false"):
            return (lambda v, c=(value == "true"): c), "bool"
        if kind == "id" and value == "this":
            return (lambda v: v), self.this
        if kind == "id" and value == "has":
            return self.has()
        raise _Unsupported(f"CEL: {value!r}")

    def has(self) -> _Node:
        self.expect("(")
        start = self.pos
        fn, typ = self.member()
        # Re-walk: has() needs the message holding the last field and that field's name.
        end = self.pos
        self.expect(")")
        if end - start < 3 or self.tokens[end - 2] != ("op", ".") or self.tokens[end - 1][0] != "id":
            raise _Unsupported("CEL: has() of something other than a field")
        name = str(self.tokens[end - 1][1])
        self.pos = start
        parent_tokens = self.tokens
        self.tokens = parent_tokens[: end - 2]
        owner, owner_typ = self.member()
        self.tokens = parent_tokens
        self.pos = end + 1
        if not isinstance(owner_typ, _d.Descriptor):
            raise _Unsupported("CEL: has() on a non-message")
        fd = owner_typ.fields_by_name[name]
        if not fd.has_presence or _is_repeated(fd):
            raise _Unsupported("CEL: has() on a field without presence")
        del fn, typ
        return (lambda a: lambda v: a(v).HasField(name))(owner), "bool"


def _cel_rule(rule: Any, this: _Typ) -> _Rule:
    """A `cel` / `cel_expression` rule (``rule`` is a buf.validate.Rule or a bare expression)."""
    if isinstance(rule, str):
        expression, rule_id, message = rule, rule, ""
    else:
        expression, rule_id, message = rule.expression, rule.id, rule.message
    holds = _CelParser(expression, this).parse()
    return (lambda v: not holds(v)), rule_id, message or f'"{expression}" returned false'


def _cel_rules(container: Any, this: _Typ) -> list[_Rule]:
    rules = [_cel_rule(expr, this) for expr in container.cel_expression]
    rules += [_cel_rule(rule, this) for rule in container.cel]
    return rules


# --------------------------------------------------------------------------------------------
# Plans
# --------------------------------------------------------------------------------------------


def _is_repeated(fd: _d.FieldDescriptor) -> bool:
    return bool(fd.is_repeated)


def _is_map(fd: _d.FieldDescriptor) -> bool:
    return fd.message_type is not None and fd.message_type.GetOptions().map_entry and _is_repeated(fd)


@dataclass(eq=False)
class _Plan:
    checks: list[_Check] = field(default_factory=list)
    fallback: bool = False
    reason: str = ""
    compiled: bool = False
    ready: bool = False


_PLANS: dict[_d.Descriptor, _Plan] = {}
_LOCK = threading.RLock()
_COMPILING: list[_Plan] = []


def plan_for(desc: _d.Descriptor) -> _Plan:
    """The (cached) plan of a message type, compiled on first use.

    A plan is published to other threads (``ready``) only when the outermost compilation it
    belongs to has finished, so a recursive type's plans are never run half-built.
    """
    plan = _PLANS.get(desc)
    if plan is not None and plan.ready:
        return plan
    with _LOCK:  # re-entrant: the compiling thread itself gets in-progress plans (recursion)
        plan = _PLANS.get(desc)
        if plan is None:
            plan = _Plan()
            _PLANS[desc] = plan  # before compiling: recursive types refer to it
            outermost = not _COMPILING
            _COMPILING.append(plan)
            try:
                plan.checks = _compile(desc)
            except Exception as exc:  # anything not understood: protovalidate decides (and raises)
                plan.checks = []
                plan.fallback = True
                plan.reason = f"{type(exc).__name__}: {exc}"
            plan.compiled = True
            if outermost:
                for done in _COMPILING:
                    done.ready = True
                _COMPILING.clear()
        return plan


def _run(plan: _Plan, message: Any, out: list[Found]) -> None:
    if plan.fallback:
        out.extend(_protovalidate_found(message))
        return
    for check in plan.checks:
        check(message, out)


def collect(message: Message) -> list[Found]:
    """Every violation of ``message``: exactly ``protovalidate.collect_violations`` (path, id, text)."""
    out: list[Found] = []
    desc: Any = message.DESCRIPTOR
    _run(plan_for(desc), message, out)
    return out


def _prefixed(prefix: str, found: Iterable[Found]) -> list[Found]:
    return [(f"{prefix}.{path}" if path else prefix, rule_id, text) for path, rule_id, text in found]


def _message_needs_checks(desc: _d.Descriptor) -> bool:
    plan = plan_for(desc)
    return not plan.compiled or plan.fallback or bool(plan.checks)


def _compile(desc: _d.Descriptor) -> list[_Check]:
    checks: list[_Check] = []
    oneof_fields: set[str] = set()
    options = desc.GetOptions()
    if validate_pb2.message in options.Extensions:
        message_rules = options.Extensions[validate_pb2.message]
        if len(unknown_fields.UnknownFieldSet(message_rules)) > 0:
            raise _Unsupported("unknown message rules")
        checks.extend(_message_level(desc, message_rules))
        for rule in message_rules.oneof:
            oneof_fields.update(rule.fields)
    for oneof in desc.oneofs:
        oneof_options = oneof.GetOptions()
        if validate_pb2.oneof in oneof_options.Extensions and oneof_options.Extensions[validate_pb2.oneof].required:
            checks.append(_oneof_required(oneof.name))
    for fd in desc.fields:
        if fd.is_extension:
            raise _Unsupported("extension fields")
        rules = None
        fd_options = fd.GetOptions()
        if validate_pb2.field in fd_options.Extensions:
            rules = fd_options.Extensions[validate_pb2.field]
            if not rules.HasField("ignore") and fd.name in oneof_fields:
                override = validate_pb2.FieldRules()
                override.CopyFrom(rules)
                override.ignore = _IGNORE_IF_ZERO_VALUE
                rules = override
            if rules.ignore == _IGNORE_ALWAYS:
                continue
            checks.append(_field_check(fd, rules))
            if rules.repeated.items.ignore == _IGNORE_ALWAYS:
                continue
        if fd.message_type is None:
            continue
        if _is_map(fd):
            value_fd = fd.message_type.fields_by_name["value"]
            if value_fd.message_type is not None and _message_needs_checks(value_fd.message_type):
                checks.append(_map_values(fd, plan_for(value_fd.message_type)))
        elif _message_needs_checks(fd.message_type):
            sub = plan_for(fd.message_type)
            checks.append(_repeated_messages(fd.name, sub) if _is_repeated(fd) else _sub_message(fd.name, sub))
    return checks


def _message_level(desc: _d.Descriptor, message_rules: Any) -> list[_Check]:
    checks: list[_Check] = []
    for fails, rule_id, text in _cel_rules(message_rules, _message_type(desc)):
        checks.append(_message_cel(fails, rule_id, text))
    for rule in message_rules.oneof:
        if len(rule.fields) == 0 or len(set(rule.fields)) != len(rule.fields):
            raise _Unsupported("invalid message oneof rule")
        fds = [desc.fields_by_name[name] for name in rule.fields if name in desc.fields_by_name]
        if len(fds) != len(rule.fields):
            raise _Unsupported("message oneof rule names an unknown field")
        checks.append(_message_oneof(fds, required=rule.required))
    return checks


def _message_cel(fails: _Fails, rule_id: str, text: str) -> _Check:
    def check(message: Any, out: list[Found]) -> None:
        if fails(message):
            out.append(("", rule_id, text))

    return check


def _is_empty(message: Any, fd: _d.FieldDescriptor) -> bool:
    if fd.has_presence:
        return not message.HasField(fd.name)
    value = getattr(message, fd.name)
    if _is_repeated(fd):
        return len(value) == 0
    return bool(value == fd.default_value)


def _message_oneof(fds: list[_d.FieldDescriptor], *, required: bool) -> _Check:
    names = ", ".join(fd.name for fd in fds)
    too_many = f"only one of {names} can be set"
    missing = f"one of {names} must be set"

    def check(message: Any, out: list[Found]) -> None:
        count = sum(1 for fd in fds if not _is_empty(message, fd))
        if count > 1:
            out.append(("", "message.oneof", too_many))
        if required and count == 0:
            out.append(("", "message.oneof", missing))

    return check


def _oneof_required(name: str) -> _Check:
    def check(message: Any, out: list[Found]) -> None:
        if not message.WhichOneof(name):
            out.append((name, "required", "exactly one field is required in oneof"))

    return check


def _type_rules(fd: _d.FieldDescriptor, rules: Any, *, element: bool) -> list[_Rule]:
    """The standard and CEL rules of a field (``element``: of one element of a repeated field)."""
    if len(unknown_fields.UnknownFieldSet(rules)) > 0:
        raise _Unsupported("unknown field rules")
    kind = rules.WhichOneof("type")
    out: list[_Rule] = []
    if kind is not None:
        typed = getattr(rules, kind)
        if len(unknown_fields.UnknownFieldSet(typed)) > 0:
            raise _Unsupported(f"unknown {kind} rules")
        if kind == "string" and fd.type == _FD.TYPE_STRING:
            out = _string_rules(typed)
        elif kind == "bytes" and fd.type == _FD.TYPE_BYTES:
            out = _bytes_rules(typed)
        elif kind in _INT_RULES and fd.type == _INT_RULES[kind]:
            out = _int_rules(kind, typed)
        elif kind == "enum" and fd.type == _FD.TYPE_ENUM:
            out = _enum_rules(typed)
        elif (
            kind == "field_mask"
            and fd.message_type is not None
            and fd.message_type.full_name == "google.protobuf.FieldMask"
        ):
            out = _field_mask_rules(typed)
        else:
            raise _Unsupported(f"{kind} rules on a field of type {fd.type}")
    if _is_repeated(fd) and not element:
        raise _Unsupported("CEL on a repeated field")
    this: _Typ = None
    if rules.cel_expression or rules.cel:
        this = _field_type_single(fd)
    return out + _cel_rules(rules, this)


def _field_type_single(fd: _d.FieldDescriptor) -> _Typ:
    """The CEL type of one value of ``fd`` (an element, for a repeated field)."""
    if fd.type in _INT_TYPES:
        return "int"
    if fd.type in _UINT_TYPES:
        return "uint"
    if fd.type == _FD.TYPE_STRING:
        return "string"
    if fd.type == _FD.TYPE_BOOL:
        return "bool"
    if fd.type == _FD.TYPE_MESSAGE and not _is_map(fd):
        return _message_type(fd.message_type)  # type: ignore[arg-type]
    raise _Unsupported(f"CEL on a field of type {fd.type}")


def _field_check(fd: _d.FieldDescriptor, rules: Any) -> _Check:
    if _is_map(fd):
        raise _Unsupported("map rules")
    if _is_repeated(fd):
        return _repeated_field_check(fd, rules)
    kind = rules.WhichOneof("type")
    if kind == "repeated":
        raise _Unsupported("repeated rules on a singular field")
    value_rules = _type_rules(fd, rules, element=False)
    name = fd.name
    required = rules.required
    ignore_empty = rules.ignore == _IGNORE_IF_ZERO_VALUE or fd.has_presence
    defined: frozenset[int] | None = None
    if kind == "enum" and rules.enum.defined_only:
        defined = frozenset(fd.enum_type.values_by_number)  # type: ignore[union-attr]
    presence = fd.has_presence
    default = fd.default_value

    def check(message: Any, out: list[Found]) -> None:
        value = getattr(message, name)
        if (not message.HasField(name)) if presence else (value == default):
            if required:
                out.append((name, "required", "value is required"))
                skip = True
            else:
                skip = ignore_empty
        else:
            skip = False
        if not skip:
            for fails, rule_id, text in value_rules:
                if fails(value):
                    out.append((name, rule_id, text))
        if defined is not None and value not in defined:
            out.append((name, "enum.defined_only", "value must be one of the defined enum values"))

    return check


def _repeated_field_check(fd: _d.FieldDescriptor, rules: Any) -> _Check:
    kind = rules.WhichOneof("type")
    if kind not in (None, "repeated"):
        raise _Unsupported(f"{kind} rules on a repeated field")
    list_rules = _repeated_rules(fd, rules.repeated) if kind == "repeated" else []
    if rules.cel_expression or rules.cel:
        raise _Unsupported("CEL on a repeated field")
    item_rules: list[_Rule] | None = None
    item_ignore_empty = False
    if kind == "repeated" and rules.repeated.HasField("items"):
        items = rules.repeated.items
        if items.ignore != _IGNORE_ALWAYS:
            if items.WhichOneof("type") in ("repeated", "map"):
                raise _Unsupported("nested repeated rules")
            # protovalidate: element rules ignore `required` and (for enums) `defined_only`.
            item_rules = _type_rules(fd, items, element=True)
            item_ignore_empty = items.ignore == _IGNORE_IF_ZERO_VALUE
    name = fd.name
    required = rules.required
    ignore_empty = rules.ignore == _IGNORE_IF_ZERO_VALUE

    def check(message: Any, out: list[Found]) -> None:
        values = getattr(message, name)
        if len(values) == 0 and (required or ignore_empty):
            if required:
                out.append((name, "required", "value is required"))
        else:
            for fails, rule_id, text in list_rules:
                if fails(values):
                    out.append((name, rule_id, text))
        if item_rules:
            for index, item in enumerate(values):
                if item_ignore_empty and not item:
                    continue
                for fails, rule_id, text in item_rules:
                    if fails(item):
                        out.append((f"{name}[{index}]", rule_id, text))

    return check


def _sub_message(name: str, plan: _Plan) -> _Check:
    def check(message: Any, out: list[Found]) -> None:
        if not message.HasField(name):
            return
        found: list[Found] = []
        _run(plan, getattr(message, name), found)
        if found:
            out.extend(_prefixed(name, found))

    return check


def _repeated_messages(name: str, plan: _Plan) -> _Check:
    def check(message: Any, out: list[Found]) -> None:
        for index, item in enumerate(getattr(message, name)):
            found: list[Found] = []
            _run(plan, item, found)
            if found:
                out.extend(_prefixed(f"{name}[{index}]", found))

    return check


def _map_values(fd: _d.FieldDescriptor, plan: _Plan) -> _Check:
    name = fd.name

    def check(message: Any, out: list[Found]) -> None:
        for key, value in getattr(message, name).items():
            found: list[Found] = []
            _run(plan, value, found)
            if found:
                out.extend(_prefixed(f"{name}[{key!r}]", found))

    return check

"""Golden JSON examples (tests/contract/examples/{valid,invalid}/*.json) parse with
json_format.ParseDict and pass or fail protovalidate exactly as recorded.

Each file: {"message": "<full proto name>", "json": {...}, "violations": ["<field path>", ...],
            "rule_ids": [...] (optional)}
`violations` is the sorted list of violated field paths (dotted proto field names, "" for a
message-level rule); `rule_ids`, when present, the sorted list of rule ids. Valid examples have
`"violations": []`. The examples double as documentation of the request shapes for channel apps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import protovalidate
import pytest
from google.protobuf import json_format

EXAMPLES = Path(__file__).resolve().parent / "examples"
FILES = sorted(EXAMPLES.glob("*/*.json"))


def field_path(violation: Any) -> str:
    # protovalidate 2.x: violation.proto is a protobuf-py message (unset fields are None; a oneof
    # is a protobuf.Oneof(field, value)).
    field = violation.proto.field
    parts = []
    for element in field.elements if field is not None else []:
        name = element.field_name
        if element.subscript is not None:
            name += f"[{element.subscript.value}]"
        parts.append(name)
    return ".".join(parts)


@pytest.fixture(scope="module")
def validator() -> protovalidate.Validator:
    return protovalidate.Validator()


def test_there_are_examples() -> None:
    kinds = {p.parent.name for p in FILES}
    assert kinds == {"valid", "invalid"}, f"expected valid/ and invalid/ examples, got {kinds}"


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.stem}" for p in FILES])
def test_example(path: Path, contracts, validator: protovalidate.Validator) -> None:
    spec = json.loads(path.read_text(encoding="utf-8"))
    assert set(spec) <= {"message", "json", "violations", "rule_ids"}, f"{path.name}: unknown keys"
    cls = contracts.message_class(spec["message"])
    message = json_format.ParseDict(spec["json"], cls())
    violations = validator.collect_violations(message)
    got = sorted(field_path(v) for v in violations)
    expected = sorted(spec["violations"])
    detail = [(field_path(v), v.proto.rule_id, v.proto.message) for v in violations]
    if path.parent.name == "valid":
        assert expected == [], f"{path.name}: a valid example must not list violations"
    else:
        assert expected, f"{path.name}: an invalid example must list its violations"
    assert got == expected, f"{path.name}: {detail}"
    if "rule_ids" in spec:
        assert sorted(v.proto.rule_id for v in violations) == sorted(spec["rule_ids"]), detail


def test_every_message_rule_compiles(message, validator: protovalidate.Validator, contracts) -> None:
    """Every CEL expression and rule of every message compiles (CompilationError otherwise)."""
    validator.collect_violations(contracts.message_class(message.full_name)())

"""Request validation (services.kit.validation) yields the contract's violations: field path, rule id, message.

The reference is the corpus (tests/unit/kit/validation_corpus.json, see validation_cases.py):
every request message of our services (empty), every golden example under tests/contract/examples,
hypothesis-generated requests, and a synthetic "kitchen sink" contract exercising the rules our
protos do not use yet, with the violations protovalidate 1.2 reported for them — the answers the
kit gave before it moved to protovalidate 2.x. Where 2.x answers differently the entry says so
(``protovalidate_1_2``, ``why``): only in the kitchen sink, never for our contracts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import protovalidate
import pytest
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool, json_format
from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st

from devtools.protogen import library_validate_proto, validate_proto_drift
from services.kit import validation
from services.kit.errors import InvalidArgument
from tests.unit.kit.validation_cases import (
    EXAMPLES,
    FUZZ,
    REQUESTS,
    SINK,
    corpus_message,
    fill,
    load_corpus,
    new,
)

CORPUS = load_corpus()
SINK_FILE = "zhongtai_test/validation_sink.proto"
BY_CASE = {entry["case"]: entry for entry in CORPUS}


def collect(message: Message) -> list[list[str]]:
    return [list(found) for found in validation.collect(message)]


# ----------------------------------------------------------------------------------------------
# The corpus: same answers as before the move to protovalidate 2.x
# ----------------------------------------------------------------------------------------------


def test_the_corpus_covers_every_request_type_and_example() -> None:
    assert len(CORPUS) == len(BY_CASE), "case names must be unique"
    assert {f"empty/{d.full_name}" for d in REQUESTS} <= BY_CASE.keys()
    assert {f"example/{p.parent.name}/{p.stem}" for p in EXAMPLES} <= BY_CASE.keys()
    assert sum(1 for case in BY_CASE if case.startswith("random/bank.")) >= 10 * len(REQUESTS)


@pytest.mark.parametrize("entry", CORPUS, ids=[entry["case"] for entry in CORPUS])
def test_corpus(entry: dict[str, Any]) -> None:
    assert collect(corpus_message(entry)) == entry["violations"]


def test_answers_differ_from_protovalidate_1_2_only_in_the_kitchen_sink() -> None:
    changed = [entry for entry in CORPUS if "protovalidate_1_2" in entry]
    assert all(entry["message"].startswith("zhongtai.test.") and entry["why"] for entry in changed)
    for entry in changed:
        before = {tuple(v) for v in entry["protovalidate_1_2"]}
        after = {tuple(v) for v in entry["violations"]}
        assert before <= after
        assert {rule for _path, rule, _text in after - before} <= {"enum.defined_only"}


@pytest.mark.parametrize("path", EXAMPLES, ids=[f"{p.parent.name}/{p.stem}" for p in EXAMPLES])
def test_golden_examples_match_the_corpus(path: Path) -> None:
    spec = json.loads(path.read_text(encoding="utf-8"))
    desc = descriptor_pool.Default().FindMessageTypeByName(spec["message"])
    message = json_format.ParseDict(spec["json"], new(desc))
    got = collect(message)
    assert got == BY_CASE[f"example/{path.parent.name}/{path.stem}"]["violations"]
    assert bool(got) == (path.parent.name == "invalid")


def test_violations_of_and_validate_request_keep_their_shape() -> None:
    from google.protobuf import field_mask_pb2

    from bank.customer.v1 import customer_pb2

    request = customer_pb2.UpdateCustomerRequest(
        customer=customer_pb2.Customer(customer_id="c-1"),
        update_mask=field_mask_pb2.FieldMask(paths=["mobile"]),
    )
    found = validation.violations_of(request)
    # a rule with id customer.mobile.required is reported on that field, with reason REQUIRED
    assert [(v.field, v.description, v.reason) for v in found] == [
        ("customer.mobile", "mobile cannot be cleared", "REQUIRED")
    ]
    verify = validation.violations_of(customer_pb2.VerifyCustomerRequest(customer_id="c-1"))
    assert [(v.field, v.description, v.reason) for v in verify] == [
        ("outcome", "is required: one of OUTCOME_APPROVED, OUTCOME_REJECTED", "REQUIRED")
    ]
    create = validation.violations_of(
        customer_pb2.CreateCustomerRequest(customer=customer_pb2.Customer(full_name="Li"))
    )
    assert [(v.field, v.reason) for v in create] == [
        ("customer.birth_date", "REQUIRED"),
        ("customer.national_id", "REQUIRED"),
        ("customer.mobile", "REQUIRED"),
    ]
    with pytest.raises(InvalidArgument) as info:
        validation.validate_request(customer_pb2.GetCustomerRequest(customer_id="bad id"))
    assert info.value.reason == "INVALID_FIELDS"
    assert [v.field for v in info.value.violations] == ["customer_id"]
    validation.validate_request(customer_pb2.GetCustomerRequest(customer_id="cus_1"))


# ----------------------------------------------------------------------------------------------
# Random messages, generated from the descriptors: well-formed answers, never an error
# ----------------------------------------------------------------------------------------------


_ELEMENT = re.compile(r"""([A-Za-z_][A-Za-z0-9_]*)(\[(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\]]*)\])?(?:\.|$)""")


def _resolves(desc: descriptor.Descriptor, path: str) -> bool:
    """Every element of ``path`` (``a.b[2].c['k']``) names a field of the message it walks (or, last, a oneof)."""
    if not path:
        return True
    elements = list(_ELEMENT.finditer(path))
    if "".join(m.group(0) for m in elements) != path:
        return False
    current: descriptor.Descriptor | None = desc
    for i, element in enumerate(elements):
        name, subscript = element.group(1), element.group(2)
        if current is not None and i == len(elements) - 1 and name in current.oneofs_by_name:
            return True
        if current is None or name not in current.fields_by_name:
            return False
        current = current.fields_by_name[name].message_type
        if current is not None and current.GetOptions().map_entry and subscript:
            current = current.fields_by_name["value"].message_type
    return True


def assert_well_formed(message: Message) -> None:
    found = validation.collect(message)
    for path, rule_id, text in found:
        assert _resolves(message.DESCRIPTOR, path), path
        assert rule_id and text, (path, rule_id, text)
    described = validation.violations_of(message)  # what callers see: one per violation, refined
    assert len(described) == len(found)
    for violation in described:
        assert violation.field == message.DESCRIPTOR.name or _resolves(message.DESCRIPTOR, violation.field)
        assert violation.description and re.fullmatch(r"[A-Z][A-Z0-9_]+[A-Z0-9]", violation.reason), violation
    if found:
        with pytest.raises(InvalidArgument):
            validation.validate_request(message)
    else:
        validation.validate_request(message)


@pytest.mark.parametrize("desc", REQUESTS, ids=[d.full_name for d in REQUESTS])
@FUZZ
@given(data=st.data())
def test_random_requests_are_answered(desc: descriptor.Descriptor, data: st.DataObject) -> None:
    message = new(desc)
    fill(data, message)
    assert_well_formed(message)


@FUZZ
@given(data=st.data())
def test_random_kitchen_sinks_are_answered(data: st.DataObject) -> None:
    message = new(SINK["Sink"])
    fill(data, message)
    assert_well_formed(message)


# ----------------------------------------------------------------------------------------------
# Kitchen sink: rules our contracts do not use (yet)
# ----------------------------------------------------------------------------------------------


def test_kitchen_sink_empty_and_nested() -> None:
    sink = new(SINK["Sink"])
    found = validation.collect(sink)
    assert {rule for _, rule, _ in found} >= {"required", "message.oneof"}
    sink.texts.SetInParent()  # type: ignore[attr-defined]
    sink.ranges.SetInParent()  # type: ignore[attr-defined]
    found = validation.collect(sink)
    assert {rule for _, rule, _ in found} >= {"string.len", "string.email_empty", "int32.const"}
    sink.exotic.ratio = 1.0  # type: ignore[attr-defined]
    sink.exotic.label = "long"  # type: ignore[attr-defined]
    sink.cyclic.next.next.v = ""  # type: ignore[attr-defined]
    sink.by_key["k"].name = "BAD!"  # type: ignore[attr-defined]
    sink.children.add(name="")  # type: ignore[attr-defined]
    found = validation.collect(sink)
    paths = {path for path, _, _ in found}
    assert {"exotic.ratio", "exotic.label", "cyclic.next.next.v", "by_key['k'].name", "children[0].name"} <= paths
    assert found == [tuple(v) for v in BY_CASE["sink/nested"]["violations"]]


def test_first_use_from_many_threads_sees_complete_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(validation, "_VALIDATOR", protovalidate.Validator())
    sink = new(SINK["Sink"])
    sink.cyclic.next.next.v = ""  # type: ignore[attr-defined]
    sink.children.add(name="BAD")  # type: ignore[attr-defined]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: validation.collect(sink), range(32)))
    expected = results[-1]
    assert expected and all(result == expected for result in results)


def test_a_broken_rule_raises_instead_of_passing_the_request() -> None:
    """A CEL rule that does not compile is a contract bug: the request fails loudly (INTERNAL)."""
    pool = descriptor_pool.Default()
    name = "zhongtai_test/validation_broken.proto"
    try:
        pool.FindFileByName(name)
    except KeyError:
        f = descriptor_pb2.FileDescriptorProto(
            name=name, package="zhongtai.test.validation.v1", syntax="proto3", dependency=[SINK_FILE]
        )
        broken = f.message_type.add(name="Broken")
        field = broken.field.add(name="v", number=1, type=descriptor.FieldDescriptor.TYPE_STRING)
        field.label = descriptor.FieldDescriptor.LABEL_OPTIONAL
        from buf.validate import validate_pb2

        rule = field.options.Extensions[validate_pb2.field].cel.add()
        rule.id, rule.expression = "broken", "this.no_such_function()"
        pool.Add(f)
    message = new(pool.FindMessageTypeByName("zhongtai.test.validation.v1.Broken"))
    with pytest.raises(protovalidate.CompilationError):
        validation.violations_of(message)


# ----------------------------------------------------------------------------------------------
# The contract's validate.proto is the library's
# ----------------------------------------------------------------------------------------------


def test_generated_validate_proto_is_the_one_protovalidate_evaluates() -> None:
    from buf.validate import validate_pb2

    assert validate_proto_drift(validate_pb2.DESCRIPTOR.serialized_pb, library_validate_proto()) == []


def test_validate_proto_drift_names_what_differs() -> None:
    from buf.validate import validate_pb2

    changed = descriptor_pb2.FileDescriptorProto.FromString(validate_pb2.DESCRIPTOR.serialized_pb)
    rules = next(m for m in changed.message_type if m.name == "StringRules")
    next(f for f in rules.field if f.name == "min_len").options.Clear()  # drop the rule's CEL
    changed.options.java_package = "elsewhere"  # codegen options do not count
    drift = validate_proto_drift(changed.SerializeToString(), library_validate_proto())
    assert drift == ["message StringRules differs"]


def test_warm_up_compiles_every_request_type_of_the_services() -> None:
    from bank.customer.v1 import customer_pb2
    from services.kit.validation import warm_up

    service = customer_pb2.DESCRIPTOR.services_by_name["CustomerService"]
    inputs = {m.input_type.full_name for m in service.methods}
    assert warm_up([service.full_name]) == len(inputs) > 5

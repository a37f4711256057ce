"""The fast validation path yields exactly protovalidate's violations.

Equivalence is checked as the ordered list of (field path, rule id, message) against
``protovalidate.Validator().collect_violations`` for: every request message of our services
(empty), every golden example under tests/contract/examples, hypothesis-generated requests, and
a synthetic "kitchen sink" contract exercising the native rules our protos do not use yet plus
the fallback to protovalidate (a nested message with an unsupported rule).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import protovalidate
import pytest
from buf.validate import validate_pb2
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.kit import _fastvalidate, validation
from services.kit.errors import InvalidArgument

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((REPO / "tests" / "contract" / "examples").glob("*/*.json"))
PACKAGES = ("bank.customer.v1", "bank.product.v1", "bank.datahub.v1")
MODULES = [
    "bank.customer.v1.customer_pb2",
    "bank.customer.v1.events_pb2",
    "bank.product.v1.product_pb2",
    "bank.product.v1.events_pb2",
    "bank.datahub.v1.datahub_pb2",
]
FD = descriptor.FieldDescriptor

_reference = protovalidate.Validator()


def reference(message: Message) -> list[tuple[str, str, str]]:
    return [(validation._path(v), v.proto.rule_id, v.proto.message) for v in _reference.collect_violations(message)]


def assert_same(message: Message) -> list[tuple[str, str, str]]:
    expected = reference(message)
    got = _fastvalidate.collect(message)
    assert got == expected, f"{message.DESCRIPTOR.full_name} {message}"
    return got


def request_types() -> list[descriptor.Descriptor]:
    found: dict[str, descriptor.Descriptor] = {}
    for name in MODULES:
        module = importlib.import_module(name)
        for service in module.DESCRIPTOR.services_by_name.values():
            assert service.full_name.rsplit(".", 1)[0] in PACKAGES
            for method in service.methods:
                found[method.input_type.full_name] = method.input_type
    assert len(found) >= 20
    return [found[name] for name in sorted(found)]


REQUESTS = request_types()


def new(desc: descriptor.Descriptor) -> Message:
    return message_factory.GetMessageClass(desc)()


# ----------------------------------------------------------------------------------------------
# Our contracts
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("desc", REQUESTS, ids=[d.full_name for d in REQUESTS])
def test_request_types_are_native_and_agree_when_empty(desc: descriptor.Descriptor) -> None:
    assert_same(new(desc))
    plan = _fastvalidate.plan_for(desc)
    assert not plan.fallback, plan.reason
    nested = [p for d, p in _fastvalidate._PLANS.items() if d.full_name.startswith("bank.") and p.fallback]
    assert nested == [], [(p.reason) for p in nested]


@pytest.mark.parametrize("path", EXAMPLES, ids=[f"{p.parent.name}/{p.stem}" for p in EXAMPLES])
def test_golden_examples_agree(path: Path) -> None:
    spec = json.loads(path.read_text(encoding="utf-8"))
    desc = descriptor_pool.Default().FindMessageTypeByName(spec["message"])
    message = json_format.ParseDict(spec["json"], new(desc))
    got = assert_same(message)
    assert bool(got) == (path.parent.name == "invalid")


def test_violations_of_and_validate_request_keep_their_shape() -> None:
    from google.protobuf import field_mask_pb2

    from bank.customer.v1 import customer_pb2

    request = customer_pb2.UpdateCustomerRequest(
        customer=customer_pb2.Customer(customer_id="c-1"),
        update_mask=field_mask_pb2.FieldMask(paths=["mobile"]),
    )
    found = validation.violations_of(request)
    assert [(v.field, v.description) for v in found] == [("UpdateCustomerRequest", "mobile cannot be cleared")]
    with pytest.raises(InvalidArgument) as info:
        validation.validate_request(customer_pb2.GetCustomerRequest(customer_id="bad id"))
    assert info.value.reason == "INVALID_FIELDS"
    assert [v.field for v in info.value.violations] == ["customer_id"]
    validation.validate_request(customer_pb2.GetCustomerRequest(customer_id="cus_1"))


# ----------------------------------------------------------------------------------------------
# Random messages, generated from the descriptors
# ----------------------------------------------------------------------------------------------

INTERESTING = [
    "",
    "a",
    "ab",
    "abc",
    "x",
    "CNY",
    "cny",
    "CN",
    "CNYX",
    "13812345678",
    "12812345678",
    "1381234567",
    "11010519491231002X",
    "110105194912310021",
    "11010519491231002x",
    "cus_01HZX3",
    "_cus",
    "-cus",
    "cus 1",
    "req-0001",
    "req-001",
    "req.0001:x",
    "a@b.co",
    "a@b",
    "not-an-email",
    "张三",
    "12345678-1234-1234-1234-123456789abc",
    "12345678123412341234123456789abc",
    "full_name",
    "mobile",
    "secret",
    "abyz",
    "abmyz",
    "bad",
    "c",
    "cat",
    "catdog",
    "a" * 8,
    "a" * 64,
    "a" * 65,
    "a" * 100,
    "a" * 101,
    "a" * 128,
    "a" * 129,
    "x" * 254,
    "x" * 255,
]
ALPHABET = "aZ09_-.:@X yz张\u00e9"
STRINGS = st.one_of(
    st.sampled_from(INTERESTING),
    st.text(alphabet=ALPHABET, max_size=20),
    st.text(max_size=6),
    st.builds(lambda n, c: c * n, st.integers(0, 1100), st.sampled_from("aZ9_-张")),
)
BOUNDARIES = [0, 1, -1, 2, 3, 5, 7, 10, 12, 13, 31, 32, 100, 101, 150, 151, 600, 601, 1000, 1001, 1899, 1900]
BOUNDARIES += [100000, 100001, 999999999, 1000000000]


def _edges(lo: int, hi: int) -> list[int]:
    return [b for b in (*BOUNDARIES, *(-b for b in BOUNDARIES), lo, hi) if lo <= b <= hi]


def int_values(lo: int, hi: int) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(_edges(lo, hi)), st.integers(lo, hi))


SCALARS: dict[int, st.SearchStrategy[Any]] = {
    FD.TYPE_STRING: STRINGS,
    FD.TYPE_BYTES: st.binary(max_size=5),
    FD.TYPE_BOOL: st.booleans(),
    FD.TYPE_DOUBLE: st.floats(allow_nan=True),
    FD.TYPE_FLOAT: st.floats(allow_nan=True, width=32),
}
for _t in (FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32):
    SCALARS[_t] = int_values(-(2**31), 2**31 - 1)
for _t in (FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64):
    SCALARS[_t] = int_values(-(2**63), 2**63 - 1)
for _t in (FD.TYPE_UINT32, FD.TYPE_FIXED32):
    SCALARS[_t] = int_values(0, 2**32 - 1)
for _t in (FD.TYPE_UINT64, FD.TYPE_FIXED64):
    SCALARS[_t] = int_values(0, 2**64 - 1)

MASK_PATHS = ["full_name", "birth_date", "mobile", "email", "national_id", "full_name.x", "x", "secret", "secret.y"]


def scalar(data: st.DataObject, fd: descriptor.FieldDescriptor) -> Any:
    if fd.type == FD.TYPE_ENUM:
        numbers = sorted(fd.enum_type.values_by_number)
        return data.draw(st.sampled_from([*numbers, max(numbers) + 1, 7, 99, -1]))
    return data.draw(SCALARS[fd.type])


def fill(data: st.DataObject, message: Message, depth: int = 0) -> None:
    desc = message.DESCRIPTOR
    if desc.full_name == "google.protobuf.FieldMask":
        message.paths.extend(data.draw(st.lists(st.sampled_from(MASK_PATHS), max_size=3)))  # type: ignore[attr-defined]
        return
    if desc.full_name == "google.protobuf.Timestamp":
        message.seconds = data.draw(st.integers(0, 4_000_000_000))  # type: ignore[attr-defined]
        return
    for fd in desc.fields:
        if not data.draw(st.booleans()):
            continue
        is_map = fd.message_type is not None and fd.message_type.GetOptions().map_entry
        if is_map:
            key_fd = fd.message_type.fields_by_name["key"]
            value_fd = fd.message_type.fields_by_name["value"]
            target = getattr(message, fd.name)
            for _ in range(data.draw(st.integers(0, 2))):
                key = scalar(data, key_fd)
                if value_fd.message_type is not None:
                    if depth < 3:
                        fill(data, target[key], depth + 1)
                else:
                    target[key] = scalar(data, value_fd)
        elif fd.is_repeated:
            target = getattr(message, fd.name)
            for _ in range(data.draw(st.integers(0, 4))):
                if fd.message_type is not None:
                    if depth < 3:
                        fill(data, target.add(), depth + 1)
                else:
                    target.append(scalar(data, fd))
        elif fd.message_type is not None:
            if depth < 3:
                getattr(message, fd.name).SetInParent()
                fill(data, getattr(message, fd.name), depth + 1)
        else:
            setattr(message, fd.name, scalar(data, fd))


FUZZ = settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("desc", REQUESTS, ids=[d.full_name for d in REQUESTS])
@FUZZ
@given(data=st.data())
def test_random_requests_agree(desc: descriptor.Descriptor, data: st.DataObject) -> None:
    message = new(desc)
    fill(data, message)
    assert_same(message)


# ----------------------------------------------------------------------------------------------
# Kitchen sink: native rules our contracts do not use (yet), and the fallback
# ----------------------------------------------------------------------------------------------

SINK_PACKAGE = "zhongtai.test.fastvalidate.v1"


def _field(
    message: descriptor_pb2.DescriptorProto,
    name: str,
    ftype: int,
    *,
    type_name: str = "",
    repeated: bool = False,
    oneof: int | None = None,
    proto3_optional: bool = False,
) -> validate_pb2.FieldRules:
    fd = message.field.add(name=name, number=len(message.field) + 1, type=ftype)
    fd.label = FD.LABEL_REPEATED if repeated else FD.LABEL_OPTIONAL
    if type_name:
        fd.type_name = type_name
    if oneof is not None:
        fd.oneof_index = oneof
    if proto3_optional:
        fd.proto3_optional = True
        fd.oneof_index = len(message.oneof_decl)
        message.oneof_decl.add(name=f"_{name}")
    return fd.options.Extensions[validate_pb2.field]  # type: ignore[no-any-return]


def _sink_file() -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FileDescriptorProto(
        name="zhongtai_test/fastvalidate_sink.proto",
        package=SINK_PACKAGE,
        syntax="proto3",
        dependency=["buf/validate/validate.proto", "google/protobuf/field_mask.proto"],
    )
    color = f.enum_type.add(name="Color")
    for number, name in enumerate(["COLOR_UNSPECIFIED", "COLOR_RED", "COLOR_GREEN", "COLOR_BLUE"]):
        color.value.add(name=name, number=number)
    P = f".{SINK_PACKAGE}."

    child = f.message_type.add(name="Child")
    r = _field(child, "name", FD.TYPE_STRING)
    r.string.min_len, r.string.max_len, r.string.pattern = 1, 5, "^[a-z]+$"
    r = _field(child, "rank", FD.TYPE_INT32)
    r.int32.gte, r.int32.lt = 0, 3

    exotic = f.message_type.add(name="Exotic")  # double rules: not native -> protovalidate
    r = _field(exotic, "ratio", FD.TYPE_DOUBLE)
    r.double.gt = 1.5
    r = _field(exotic, "label", FD.TYPE_STRING)
    r.string.max_len = 3

    cyclic = f.message_type.add(name="Cyclic")
    r = _field(cyclic, "v", FD.TYPE_STRING)
    r.string.min_len = 1
    _field(cyclic, "next", FD.TYPE_MESSAGE, type_name=P + "Cyclic")

    texts = f.message_type.add(name="Texts")
    r = _field(texts, "s_const", FD.TYPE_STRING)
    r.ignore, r.string.const = validate_pb2.IGNORE_IF_ZERO_VALUE, "abc"
    r = _field(texts, "s_len", FD.TYPE_STRING)
    r.string.len = 3
    r = _field(texts, "s_bytes", FD.TYPE_STRING)
    r.string.min_bytes, r.string.max_bytes, r.string.len_bytes = 2, 6, 4
    r = _field(texts, "s_affix", FD.TYPE_STRING)
    r.ignore = validate_pb2.IGNORE_IF_ZERO_VALUE
    r.string.prefix, r.string.suffix, r.string.contains, r.string.not_contains = "ab", "yz", "m", "bad"
    r = _field(texts, "s_in", FD.TYPE_STRING)
    getattr(r.string, "in").extend(["a", "ab"])
    r.string.not_in.extend(["ab"])
    r = _field(texts, "email", FD.TYPE_STRING)
    r.string.email = True
    r = _field(texts, "uuid", FD.TYPE_STRING)
    r.ignore, r.string.uuid = validate_pb2.IGNORE_IF_ZERO_VALUE, True
    r = _field(texts, "blob", FD.TYPE_BYTES)
    r.bytes.min_len, r.bytes.max_len = 1, 3
    r = _field(texts, "blob4", FD.TYPE_BYTES)
    r.bytes.len = 4
    ranges = f.message_type.add(name="Ranges")
    r = _field(ranges, "i_gt_lt", FD.TYPE_INT32)
    r.int32.gt, r.int32.lt = 0, 10
    r = _field(ranges, "i_excl", FD.TYPE_INT64)
    r.int64.gt, r.int64.lt = 10, 5
    r = _field(ranges, "i_gte_lte_excl", FD.TYPE_SINT32)
    r.sint32.gte, r.sint32.lte = 10, 5
    r = _field(ranges, "i_gt_lte_excl", FD.TYPE_SINT64)
    r.sint64.gt, r.sint64.lte = 10, 5
    r = _field(ranges, "i_gte_lt_excl", FD.TYPE_SFIXED32)
    r.sfixed32.gte, r.sfixed32.lt = 10, 5
    r = _field(ranges, "i_lt", FD.TYPE_UINT32)
    r.uint32.lt = 5
    r = _field(ranges, "i_lte", FD.TYPE_UINT64)
    r.uint64.lte = 5
    r = _field(ranges, "i_gte_lt", FD.TYPE_FIXED32)
    r.fixed32.gte, r.fixed32.lt = 3, 8
    r = _field(ranges, "i_gt_lte", FD.TYPE_SFIXED64)
    r.sfixed64.gt, r.sfixed64.lte = -3, 3
    r = _field(ranges, "i_gt", FD.TYPE_FIXED64)
    r.fixed64.gt = 100
    r = _field(ranges, "i_gte", FD.TYPE_INT32)
    r.int32.gte = -5
    r = _field(ranges, "i_const", FD.TYPE_INT32)
    r.int32.const = 7
    r = _field(ranges, "i_in", FD.TYPE_INT32)
    getattr(r.int32, "in").extend([1, 2, 3])
    r.int32.not_in.extend([2])
    sink = f.message_type.add(name="Sink")
    sink.oneof_decl.add(name="choice")
    sink.oneof_decl[0].options.Extensions[validate_pb2.oneof].required = True
    sink_rules = sink.options.Extensions[validate_pb2.message]
    sink_rules.cel.add(
        id="sink.const_or_len", message="", expression="this.ranges.i_const == 7 || this.texts.s_len != ''"
    )
    sink_rules.cel_expression.append("has(this.child) || !(this.texts.email in this.tags)")
    one = sink_rules.oneof.add(required=True)
    one.fields.extend(["m1", "m2"])

    _field(sink, "texts", FD.TYPE_MESSAGE, type_name=P + "Texts")
    _field(sink, "ranges", FD.TYPE_MESSAGE, type_name=P + "Ranges")
    r = _field(sink, "opt", FD.TYPE_INT32, proto3_optional=True)
    r.int32.gt = 5
    r = _field(sink, "opt_required", FD.TYPE_STRING, proto3_optional=True)
    r.required, r.string.min_len = True, 2
    r = _field(sink, "color", FD.TYPE_ENUM, type_name=P + "Color")
    r.enum.defined_only, r.enum.const = True, 1
    r = _field(sink, "color_in", FD.TYPE_ENUM, type_name=P + "Color")
    r.required = True
    getattr(r.enum, "in").extend([1, 2, 5])
    r.enum.not_in.extend([2])
    r = _field(sink, "tags", FD.TYPE_STRING, repeated=True)
    r.repeated.min_items, r.repeated.max_items, r.repeated.unique = 1, 3, True
    r.repeated.items.ignore, r.repeated.items.string.min_len = validate_pb2.IGNORE_IF_ZERO_VALUE, 2
    r = _field(sink, "nums", FD.TYPE_INT64, repeated=True)
    r.repeated.unique, r.repeated.items.int64.gte = True, 0
    r = _field(sink, "colors", FD.TYPE_ENUM, type_name=P + "Color", repeated=True)
    r.repeated.items.enum.defined_only = True
    r.repeated.items.enum.not_in.extend([0])
    r = _field(sink, "skipped", FD.TYPE_STRING, repeated=True)
    r.required, r.repeated.items.ignore = True, validate_pb2.IGNORE_ALWAYS
    r = _field(sink, "a", FD.TYPE_STRING, oneof=0)
    r.string.min_len = 2
    _field(sink, "b", FD.TYPE_INT32, oneof=0)
    r = _field(sink, "m1", FD.TYPE_STRING)
    r.string.max_len = 2
    _field(sink, "m2", FD.TYPE_INT32)
    r = _field(sink, "child", FD.TYPE_MESSAGE, type_name=P + "Child")
    r.cel.add(
        id="child.short_c",
        message="name must start with c",
        expression="this.name.startsWith('c') && this.name.size() <= 5",
    )
    r = _field(sink, "must_child", FD.TYPE_MESSAGE, type_name=P + "Child")
    r.required = True
    _field(sink, "children", FD.TYPE_MESSAGE, type_name=P + "Child", repeated=True)
    entry = sink.nested_type.add(name="ByKeyEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=FD.TYPE_STRING, label=FD.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=FD.TYPE_MESSAGE, label=FD.LABEL_OPTIONAL, type_name=P + "Child")
    _field(sink, "by_key", FD.TYPE_MESSAGE, type_name=P + "Sink.ByKeyEntry", repeated=True)
    r = _field(sink, "mask", FD.TYPE_MESSAGE, type_name=".google.protobuf.FieldMask")
    r.field_mask.not_in.extend(["secret"])
    r = _field(sink, "mask_in", FD.TYPE_MESSAGE, type_name=".google.protobuf.FieldMask")
    getattr(r.field_mask, "in").extend(["full_name", "mobile"])
    r = _field(sink, "mask_const", FD.TYPE_MESSAGE, type_name=".google.protobuf.FieldMask")
    r.field_mask.const.paths.extend(["x"])
    r = _field(sink, "ignored", FD.TYPE_STRING)
    r.ignore, r.string.min_len = validate_pb2.IGNORE_ALWAYS, 5
    _field(sink, "exotic", FD.TYPE_MESSAGE, type_name=P + "Exotic")
    _field(sink, "cyclic", FD.TYPE_MESSAGE, type_name=P + "Cyclic")
    return f


def _sink_descriptors() -> dict[str, descriptor.Descriptor]:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName("zhongtai_test/fastvalidate_sink.proto")
    except KeyError:
        pool.Add(_sink_file())
    return {
        name: pool.FindMessageTypeByName(f"{SINK_PACKAGE}.{name}")
        for name in ("Sink", "Child", "Exotic", "Cyclic", "Texts", "Ranges")
    }


SINK = _sink_descriptors()


def test_kitchen_sink_is_native_except_the_exotic_message() -> None:
    assert not _fastvalidate.plan_for(SINK["Sink"]).fallback, _fastvalidate.plan_for(SINK["Sink"]).reason
    assert not _fastvalidate.plan_for(SINK["Cyclic"]).fallback
    exotic = _fastvalidate.plan_for(SINK["Exotic"])
    assert exotic.fallback and "double" in exotic.reason


def test_kitchen_sink_empty_and_nested_fallback_agree() -> None:
    sink = new(SINK["Sink"])
    found = assert_same(sink)
    assert {rule for _, rule, _ in found} >= {"required", "message.oneof"}
    sink.texts.SetInParent()  # type: ignore[attr-defined]
    sink.ranges.SetInParent()  # type: ignore[attr-defined]
    found = assert_same(sink)
    assert {rule for _, rule, _ in found} >= {"string.len", "string.email_empty", "int32.const"}
    sink.exotic.ratio = 1.0  # type: ignore[attr-defined]
    sink.exotic.label = "long"  # type: ignore[attr-defined]
    sink.cyclic.next.next.v = ""  # type: ignore[attr-defined]
    sink.by_key["k"].name = "BAD!"  # type: ignore[attr-defined]
    sink.children.add(name="")  # type: ignore[attr-defined]
    found = assert_same(sink)
    paths = {path for path, _, _ in found}
    assert {"exotic.ratio", "exotic.label", "cyclic.next.next.v", "by_key['k'].name", "children[0].name"} <= paths


@pytest.mark.parametrize("value", sorted(set(range(-12, 15)) | {100, 101, 2**31 - 1}))
def test_every_integer_rule_agrees_on_a_grid(value: int) -> None:
    ranges = new(SINK["Ranges"])
    for fd in SINK["Ranges"].fields:
        if fd.type in (FD.TYPE_UINT32, FD.TYPE_UINT64, FD.TYPE_FIXED32, FD.TYPE_FIXED64) and value < 0:
            continue
        setattr(ranges, fd.name, value)
    assert assert_same(ranges)


@pytest.mark.parametrize("text", INTERESTING)
def test_every_string_rule_agrees_on_interesting_strings(text: str) -> None:
    texts = new(SINK["Texts"])
    for fd in SINK["Texts"].fields:
        setattr(texts, fd.name, text if fd.type == FD.TYPE_STRING else text.encode()[:5])
    assert_same(texts)


@settings(FUZZ, max_examples=30)
@given(data=st.data())
def test_random_kitchen_sinks_agree(data: st.DataObject) -> None:
    message = new(SINK["Sink"])
    fill(data, message)
    assert_same(message)


def test_unknown_cel_falls_back() -> None:
    unsupported = [
        "this.size() > 3 ? true : false",
        "this.units + 1 > 0",
        "now > this",
        'this.currency_code == "CNY"',
        "this.units > 0u",
        "has(this.units)",
        "this.nanos > -1",
    ]
    money = descriptor_pool.Default().FindMessageTypeByName("google.type.Money")
    for expression in unsupported:
        with pytest.raises(_fastvalidate._Unsupported):
            _fastvalidate._cel_rule(expression, money)
    supported = "!('a' in this.currency_code.size() == 3)"
    with pytest.raises(_fastvalidate._Unsupported):
        _fastvalidate._cel_rule(supported, money)
    _holds, rule_id, text = _fastvalidate._cel_rule("this.units >= 0 && (this.nanos > 0 || this.units > 0)", money)
    assert rule_id == "this.units >= 0 && (this.nanos > 0 || this.units > 0)"
    assert text == '"this.units >= 0 && (this.nanos > 0 || this.units > 0)" returned false'


def test_first_use_from_many_threads_sees_complete_plans(monkeypatch: pytest.MonkeyPatch) -> None:
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(_fastvalidate, "_PLANS", {})
    sink = new(SINK["Sink"])
    sink.cyclic.next.next.v = ""  # type: ignore[attr-defined]
    sink.children.add(name="BAD")  # type: ignore[attr-defined]
    expected = reference(sink)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: _fastvalidate.collect(sink), range(32)))
    assert all(result == expected for result in results)

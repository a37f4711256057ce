"""Messages to validate, shared by the validation tests and the corpus recorder.

* ``REQUESTS``: the request type of every method of our services;
* ``fill``: a hypothesis strategy filling any message from its descriptor (interesting strings and
  integer boundaries of our rules);
* ``SINK``: a synthetic "kitchen sink" contract (zhongtai.test.validation.v1) exercising the
  buf.validate rules our protos do not use yet: every string/bytes/integer/enum/repeated/map/
  field-mask rule, oneofs, message CEL, nested and recursive messages, a double-typed message;
* the corpus (``validation_corpus.json``): messages of all of the above, serialized, with the
  violations (field path, rule id, message) recorded for them.

The corpus was recorded with protovalidate 1.2.0 (pure-Python CEL), which the previous engine
reproduced exactly, when the kit moved to protovalidate 2.x. Entries where 2.x answers differently
carry the 1.2 answer in ``"protovalidate_1_2"`` and the reason in ``"why"``. When a contract
changes on purpose, re-record the expected violations of the stored messages (then read the diff):

    .venv/bin/python -m tests.unit.kit.validation_cases --rerecord
"""

from __future__ import annotations

import argparse
import base64
import importlib
import json
from pathlib import Path
from typing import Any

from buf.validate import validate_pb2
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[3]
CORPUS = Path(__file__).resolve().parent / "validation_corpus.json"
EXAMPLES = sorted((REPO / "tests" / "contract" / "examples").glob("*/*.json"))
PACKAGES = ("bank.customer.v1", "bank.product.v1", "bank.datahub.v1")
MODULES = [
    "bank.customer.v1.customer_pb2",
    "bank.customer.v1.events_pb2",
    "bank.product.v1.product_pb2",
    "bank.product.v1.events_pb2",
    "bank.datahub.v1.datahub_pb2",
    "bank.datahub.v1.operations_pb2",
]
FD = descriptor.FieldDescriptor


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


SINK_PACKAGE = "zhongtai.test.validation.v1"


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
        name="zhongtai_test/validation_sink.proto",
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

    exotic = f.message_type.add(name="Exotic")  # double rules
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
        pool.FindFileByName("zhongtai_test/validation_sink.proto")
    except KeyError:
        pool.Add(_sink_file())
    return {
        name: pool.FindMessageTypeByName(f"{SINK_PACKAGE}.{name}")
        for name in ("Sink", "Child", "Exotic", "Cyclic", "Texts", "Ranges")
    }


SINK = _sink_descriptors()


# ----------------------------------------------------------------------------------------------
# The corpus
# ----------------------------------------------------------------------------------------------


def load_corpus() -> list[dict[str, Any]]:
    return json.loads(CORPUS.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def corpus_message(entry: dict[str, Any]) -> Message:
    desc = descriptor_pool.Default().FindMessageTypeByName(entry["message"])
    return message_factory.GetMessageClass(desc).FromString(base64.b64decode(entry["bytes"]))


def write_corpus(entries: list[dict[str, Any]]) -> None:
    lines = ",\n".join(json.dumps(entry, ensure_ascii=False, sort_keys=True) for entry in entries)
    CORPUS.write_text(f"[\n{lines}\n]\n", encoding="utf-8")


def rerecord() -> int:
    """Re-evaluate the stored messages with the kit's validation; returns how many entries changed."""
    from services.kit import validation

    entries = load_corpus()
    changed = 0
    for entry in entries:
        got = [list(found) for found in validation.collect(corpus_message(entry))]
        if got != entry["violations"]:
            entry["violations"] = got
            changed += 1
    write_corpus(entries)
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description="Maintain tests/unit/kit/validation_corpus.json")
    parser.add_argument("--rerecord", action="store_true", help="re-record the violations of the stored messages")
    args = parser.parse_args()
    if args.rerecord:
        print(f"{rerecord()} of {len(load_corpus())} entries changed")


if __name__ == "__main__":
    main()

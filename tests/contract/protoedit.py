"""Mutations of copied .proto files for the gate self-tests, chosen so that real evolution of the
contracts never collides with them: targets come from the descriptors at test time, new numbers
are the next free ones, new names carry the ``zz_selftest`` prefix no contract would use.

Text is located structurally (a message's block, a field's whole statement up to its ``;``,
an rpc's block), skipping string literals and comments, so options spanning lines and
patterns containing braces (``"^[0-9]{17}[0-9X]$"``) do not confuse it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumValueDescriptor, FieldDescriptor

UNLIKELY = "zz_selftest"


def _skip(text: str, i: int) -> int:
    """Index after a string literal or comment starting at ``i`` (or ``i`` if none starts there)."""
    if text[i] in "\"'":
        quote, j = text[i], i + 1
        while text[j] != quote:
            j += 2 if text[j] == "\\" else 1
        return j + 1
    if text.startswith("//", i):
        end = text.find("\n", i)
        return len(text) if end < 0 else end
    if text.startswith("/*", i):
        return text.index("*/", i) + 2
    return i


def _code(text: str, start: int) -> Iterator[int]:
    """Indices of ``text`` from ``start`` on that are code (string literals and comments skipped)."""
    i = start
    while i < len(text):
        j = _skip(text, i)
        if j != i:
            i = j
            continue
        yield i
        i += 1


def _scan(text: str, start: int, done: Callable[[str, int], bool]) -> int:
    """Index just after the first code character ``c`` for which ``done(c, depth)`` holds, where
    ``depth`` counts the braces and brackets open after it."""
    depth = 0
    for i in _code(text, start):
        depth += (text[i] in "{[") - (text[i] in "}]")
        if done(text[i], depth):
            return i + 1
    raise ValueError(f"unbalanced text after index {start}")


def _match_close(text: str, open_index: int) -> int:
    """Index just after the brace/bracket closing the one at ``open_index``."""
    return _scan(text, open_index, lambda c, depth: c in "}]" and depth == 0)


def _statement_end(text: str, start: int) -> int:
    """Index just after the ``;`` ending the statement at ``start`` (outside braces/brackets)."""
    return _scan(text, start, lambda c, depth: c == ";" and depth == 0)


def _line_start(text: str, index: int) -> int:
    return text.rfind("\n", 0, index) + 1


def block(text: str, kind: str, name: str, within: tuple[int, int] | None = None) -> tuple[int, int]:
    """(start of line, end) of ``<kind> <name> {...}`` (message, enum, service, rpc)."""
    lo, hi = within or (0, len(text))
    pattern = re.compile(rf"\b{kind}\s+{re.escape(name)}\b[^{{;]*\{{")
    for m in pattern.finditer(text, lo, hi):
        if not text[_line_start(text, m.start()) : m.start()].strip():  # the line's first token
            return _line_start(text, m.start()), _match_close(text, m.end() - 1)
    raise ValueError(f"{kind} {name} not found")


def message_block(text: str, message: Descriptor) -> tuple[int, int]:
    """The block of ``message`` (nested messages: walk from the outermost)."""
    chain = []
    desc: Descriptor | None = message
    while desc is not None:
        chain.append(desc.name)
        desc = desc.containing_type
    span = None
    for name in reversed(chain):
        span = block(text, "message", name, span)
    assert span is not None
    return span


def field_statement(text: str, field: FieldDescriptor) -> tuple[int, int]:
    """(start of line, end incl. newline) of the statement declaring ``field``."""
    lo, hi = message_block(text, field.containing_type)
    inner = text.index("{", lo) + 1
    for m in re.finditer(rf"\b{re.escape(field.name)}\s*=\s*{field.number}\b", text[inner:hi]):
        start = inner + m.start()
        depth_ok = all(not (s < start < e) for s, e in _nested_blocks(text, inner, hi))
        if depth_ok:
            end = _statement_end(text, start)
            return _line_start(text, start), end + (1 if text[end : end + 1] == "\n" else 0)
    raise ValueError(f"field {field.full_name} not found")


def _nested_blocks(text: str, lo: int, hi: int) -> list[tuple[int, int]]:
    out = []
    for m in re.finditer(r"\b(message|enum|oneof)\s+\w+\s*\{", text[lo:hi]):
        if m.group(1) == "oneof":
            continue  # oneof members are the message's own fields
        start = lo + m.end() - 1
        out.append((start, _match_close(text, start)))
    return out


def next_free_number(message: Descriptor) -> int:
    """The next field number after every used and reserved one (never collides with real fields)."""
    proto = descriptor_pb2.DescriptorProto()
    message.CopyToProto(proto)
    used = [f.number for f in message.fields]
    reserved = [r.end - 1 for r in proto.reserved_range]  # (end is exclusive)
    return max([0, *used, *reserved]) + 1


class ProtoFile:
    """A copied .proto file, edited in place."""

    def __init__(self, root: Path, descriptor_file_name: str) -> None:
        self.path = root / "proto" / descriptor_file_name
        self.text = self.path.read_text(encoding="utf-8")

    def save(self) -> None:
        self.path.write_text(self.text, encoding="utf-8")

    def replace_span(self, span: tuple[int, int], new: str) -> None:
        self.text = self.text[: span[0]] + new + self.text[span[1] :]

    def delete_field(self, field: FieldDescriptor, *, reserve: bool) -> None:
        note = f'  reserved {field.number};\n  reserved "{field.name}";\n' if reserve else ""
        self.replace_span(field_statement(self.text, field), note)

    def edit_field(self, field: FieldDescriptor, old: str, new: str) -> None:
        """Replace the first ``old`` (a regex) in the field's statement by ``new``."""
        span = field_statement(self.text, field)
        statement = self.text[span[0] : span[1]]
        edited, count = re.subn(old, new, statement, count=1)
        assert count == 1, f"{old!r} not in {statement!r}"
        self.replace_span(span, edited)

    def add_to_message(self, message: Descriptor, declaration: str) -> None:
        """Insert ``declaration`` (a statement) at the end of ``message``'s block."""
        _, end = message_block(self.text, message)
        close = end - 1
        self.text = self.text[:close] + f"  {declaration}\n" + self.text[close:]

    def append(self, text: str) -> None:
        self.text = self.text.rstrip("\n") + "\n\n" + text.strip("\n") + "\n"

    def delete_enum_value(self, value: EnumValueDescriptor) -> None:
        enum = value.type
        within = message_block(self.text, enum.containing_type) if enum.containing_type else None
        lo, hi = block(self.text, "enum", enum.name, within)
        m = re.search(rf"\n[ \t]*{value.name}\s*=\s*{value.number}\b[^;]*;", self.text[lo:hi])
        assert m is not None, f"{value.name} not found"
        self.replace_span((lo + m.start(), lo + m.end()), "")

    def delete_rpc(self, service: str, rpc: str) -> None:
        self.replace_span(block(self.text, "rpc", rpc, block(self.text, "service", service)), "")

    def add_rpc(self, service: str, declaration: str) -> None:
        _, end = block(self.text, "service", service)
        self.text = self.text[: end - 1] + declaration.strip("\n") + "\n" + self.text[end - 1 :]
